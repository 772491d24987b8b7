"""`edge-mer run --replay --fast` on a labelled session built from ../shared, every modality held out."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_mer.bundle import default_bundle_path
from edge_mer.bundle.labels import CANONICAL_LABELS
from edge_mer_calibration.sessions import build_session, heldout_bundle, score_decisions

ROOT = Path(__file__).resolve().parents[2]
FOLDS = ROOT / "training" / "results"

pytestmark = pytest.mark.shared


def _run(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_mer.cli.main", "run", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("replay")
    session = build_session(shared_dir, out / "session", speaker="08", subject="sub1")
    bundle = heldout_bundle(default_bundle_path(), out / "bundle", {
        "speech": FOLDS / "speech_folds" / "fold_0.onnx",  # the fold that holds out speakers 08 and 09
        "eeg": FOLDS / "eeg_folds" / "eeg" / "sub1.onnx"})
    return session, bundle


def test_fast_replay_prints_one_valid_decision_per_tick_and_beats_chance(labelled, tmp_path: Path) -> None:
    session, bundle = labelled
    result = _run("--replay", str(session), "--fast", "--bundle", str(bundle), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    decisions = [json.loads(line) for line in result.stdout.splitlines()]
    # 24 s at 2 Hz on the session clock; the last tick is the last one at or before the newest sample
    assert [d["t"] for d in decisions] == [0.5 * (i + 1) for i in range(47)]
    for d in decisions:
        assert set(d) == {"t", "label", "probs", "valence", "arousal", "modalities", "latency_ms", "faces"}
        for face in d["faces"]:
            assert {"id", "box", "label", "probs", "valence", "arousal", "valid", "reason"} <= set(face)
        assert set(d["modalities"]) == {"face", "speech", "eeg"}
        assert d["label"] in d["probs"] and set(d["probs"]) <= set(CANONICAL_LABELS) | {"boredom"}
        assert abs(sum(d["probs"].values()) - 1.0) < 1e-4
        assert -1.0 <= d["valence"] <= 1.0 and -1.0 <= d["arousal"] <= 1.0
        for m in d["modalities"].values():
            assert set(m) == {"valid", "reason", "reason_code", "label", "probs", "latency_ms"}
            assert (m["reason"] is None) == m["valid"]
    labels = json.loads((session / "session.json").read_text())["labels"]
    score = score_decisions(decisions, labels)
    assert score["decisions"] == 24
    assert score["modalities"]["face"]["valid_share"] == 1.0
    assert score["modalities"]["face"]["accuracy"] > 0.5
    assert score["modalities"]["speech"]["accuracy"] > 1 / 3
    assert score["fused_accuracy"] > 0.6  # three labels in the session: chance is 1/3


def test_fast_replay_is_deterministic(labelled, tmp_path: Path) -> None:
    session, bundle = labelled
    runs = [_run("--replay", str(session), "--fast", "--bundle", str(bundle), "--rate-hz", "1", cwd=tmp_path)
            for _ in range(2)]
    strip = [[{k: v for k, v in json.loads(line).items() if k != "latency_ms"} | {"modalities": None}
              for line in r.stdout.splitlines()] for r in runs]
    labels = [[json.loads(line)["label"] for line in r.stdout.splitlines()] for r in runs]
    assert strip[0] == strip[1] and labels[0] == labels[1]


def test_disabled_modality_is_left_out(labelled, tmp_path: Path) -> None:
    session, bundle = labelled
    result = _run("--replay", str(session), "--fast", "--bundle", str(bundle), "--no-eeg", "--rate-hz", "0.5")
    assert result.returncode == 0, result.stderr
    first = json.loads(result.stdout.splitlines()[0])
    assert set(first["modalities"]) == {"face", "speech"}
