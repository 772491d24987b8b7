"""`edge-mer adapt` on a labelled session built from ../shared, then `edge-mer run --bundle OVERLAY` on it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge_mer.bundle import default_bundle_path
from edge_mer.bundle.loader import MANIFEST, sha256_file
from edge_mer_calibration.sessions import build_session

pytestmark = pytest.mark.shared

SECONDS = 15.0  # the longest segment one GU trial gives
LABELS = ("happy", "sad", "fear")


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> tuple[Path, Path, str]:
    root = tmp_path_factory.mktemp("adapt")
    session = build_session(shared_dir, root / "session", labels=LABELS, seconds=SECONDS)
    out = root / "user"
    result = _cli("adapt", "--session", str(session), "--out", str(out), "--folds", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return session, out, result.stdout


def test_adapt_prints_before_and_after_and_writes_an_overlay(adapted) -> None:
    _, out, stdout = adapted
    assert stdout.splitlines()[0].split()[:3] == ["encoder", "method", "n"]
    assert {line.split()[0] for line in stdout.splitlines()[1:4]} == {"face", "speech", "eeg"}
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == "edge-mer-bundle-overlay/1"
    assert manifest["base"]["bundle"] == "default"
    assert manifest["base"]["manifest_sha256"] == sha256_file(default_bundle_path() / MANIFEST)
    assert set(manifest["encoders"]) == {"eeg"} and set(manifest["calibrations"]) == {"face", "speech"}
    head = manifest["encoders"]["eeg"]["models"]["fp32"]
    assert head["path"].startswith("user/eeg-") and sha256_file(out / head["path"]) == head["sha256"]
    assert sorted(p.name for p in out.iterdir()) == ["adapt_report.json", "manifest.json", "user"]
    info = _cli("info", "--bundle", str(out))
    assert info.returncode == 0, info.stderr
    assert "overlay of edge-mer-default 0.1.0" in info.stdout and "encoders eeg" in info.stdout


def test_the_eeg_heads_after_accuracy_is_scored_on_held_out_blocks(adapted) -> None:
    _, out, _ = adapted
    report = json.loads((out / "adapt_report.json").read_text())
    eeg = report["encoders"]["eeg"]
    assert eeg["method"] == "linear_head" and sorted(eeg["classes"]) == sorted(LABELS)
    folds = eeg["folds"]
    assert len(folds) == 2
    # Every labelled window is tested exactly once, by the fold that did not train on it ...
    assert sum(f["n_test"] for f in folds) == eeg["n"] == eeg["after"]["n"] == eeg["before"]["n"]
    assert eeg["after"]["accuracy"] == pytest.approx(sum(f["correct_after"] for f in folds) / eeg["n"], abs=1e-4)
    assert eeg["before"]["accuracy"] == pytest.approx(sum(f["correct_before"] for f in folds) / eeg["n"], abs=1e-4)
    for fold in folds:
        # ... and windows sharing samples with a tested one were purged from its training set.
        assert fold["n_train"] > 0 and fold["purged"] > 0
        assert fold["n_train"] + fold["n_test"] + fold["purged"] == eeg["n"]
    # The held-out blocks of the folds are contiguous halves that tile each labelled segment.
    for start, end, label in report["segments"]:
        halves = sorted((b[0], b[1]) for f in folds for b in f["held_out"] if b[2] == label)
        assert halves == [(start, (start + end) / 2), ((start + end) / 2, end)]
    # Trained on every window, the final head scores them far better than it scored unseen ones.
    assert eeg["resubstitution_accuracy"] >= eeg["after"]["accuracy"]
    for name in ("face", "speech"):
        assert report["encoders"][name]["method"] == "temperature"
        assert 0.05 <= report["encoders"][name]["temperature"] <= 100


def test_run_uses_the_overlay(adapted, tmp_path: Path) -> None:
    session, out, _ = adapted
    decisions = {}
    for name, bundle in (("user", out), ("shipped", default_bundle_path())):
        jsonl = tmp_path / f"{name}.jsonl"
        result = _cli("run", "--replay", str(session), "--fast", "--bundle", str(bundle), "--jsonl", str(jsonl))
        assert result.returncode == 0, result.stderr[-3000:]
        decisions[name] = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(decisions["user"]) == len(decisions["shipped"]) == int(3 * SECONDS * 2) - 1
    eeg = [d["modalities"]["eeg"] for d in decisions["user"] if d["modalities"]["eeg"]["valid"]]
    assert len(eeg) > 70 and all(set(m["probs"]) == set(LABELS) for m in eeg)
    shipped = [d["modalities"]["eeg"]["probs"] for d in decisions["shipped"] if d["modalities"]["eeg"]["valid"]]
    assert [m["probs"] for m in eeg] != shipped  # the per-user head, not the shipped encoder


def test_a_labels_file_and_replacing_an_earlier_overlay(adapted, tmp_path: Path) -> None:
    session, out, _ = adapted
    recorded = tmp_path / "recorded"  # as edge-mer run --record leaves it: no labels in session.json
    shutil.copytree(session, recorded)
    data = json.loads((recorded / "session.json").read_text())
    del data["labels"]
    (recorded / "session.json").write_text(json.dumps(data))
    labels = tmp_path / "labels.csv"
    labels.write_text("start_s,end_s,label\n" + "".join(f"{i * SECONDS},{(i + 1) * SECONDS},{lb}\n"
                                                        for i, lb in enumerate(LABELS)))
    target = tmp_path / "user"
    shutil.copytree(out, target)
    result = _cli("adapt", "--session", str(recorded), "--labels", str(labels), "--out", str(target),
                  "--folds", "2", "--encoder", "eeg")
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = json.loads((target / MANIFEST).read_text())
    assert set(manifest["encoders"]) == {"eeg"} and manifest["calibrations"] == {}
    report = json.loads((target / "adapt_report.json").read_text())
    assert report["labels"] == str(labels) and set(report["encoders"]) == {"eeg"}
    # The same windows and labels give the same head (the same file) as session.json's labels did.
    first = json.loads((out / MANIFEST).read_text())["encoders"]["eeg"]
    assert manifest["encoders"]["eeg"]["models"] == first["models"]
    assert report["encoders"]["eeg"]["after"] == json.loads((out / "adapt_report.json").read_text())[
        "encoders"]["eeg"]["after"]
