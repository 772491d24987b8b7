"""In-process `export()` of a bundle shipping three fusion heads: each exported, gated and recorded on its own.

The bundle (attention_models.multi_head_bundle) has the stacked tiny head as
its default, an attention head over face probabilities and the speech
embedding, and a multilabel ``compound`` head; one evaluation and one
calibration ``.npz`` hold the union of their inputs. Real ONNX Runtime
throughout.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attention_models import SET_LABELS, SPEECH_EMBEDDING, multi_head_bundle, multi_head_rows
from edge_mer.bundle import load_bundle
from edge_mer.errors import InputError
from edge_mer_export.config import ExportConfig
from edge_mer_export.errors import ExportError
from edge_mer_export.head import MULTILABEL_TRUTH_NOTE
from edge_mer_export.onnx_checks import run_model
from edge_mer_export.pipeline import ExportResult, export
from edge_mer_export.qdq_lint import check_qdq
from export_models import write_head_npz

SECTIONS = {"stacked": "fusion_head", "attention": "fusion_head.attention", "compound": "fusion_head.compound"}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("multi")
    return {"root": root, "bundle": multi_head_bundle(root / "bundle"),
            "eval": write_head_npz(root / "eval.npz", multi_head_rows(300, seed=1)),
            "calib": write_head_npz(root / "calib.npz", multi_head_rows(200, seed=2))}


@pytest.fixture(scope="module")
def exported(files: dict[str, Path]) -> ExportResult:
    return export(ExportConfig(source=files["bundle"], out=files["root"] / "out", head_eval=files["eval"],
                               head_calib=files["calib"], latency_iterations=3))


def test_every_shipped_head_is_exported_and_keeps_its_place(exported: ExportResult) -> None:
    assert exported.any_passed
    bundle = load_bundle(exported.bundle)  # hashes and ONNX signatures of every head file verified
    fusion = bundle.manifest.fusion
    assert fusion.head_name == "stacked" and list(fusion.heads) == ["attention", "compound"]
    for name, head in fusion.named_heads().items():
        assert set(head.precisions) == {"fp32", "fp16", "int8"}, name
        assert set(head.models) == {"fp32", "fp16", "int8"}, (name, head.precisions["int8"].reason)
        for precision in ("fp16", "int8"):
            report = head.precisions[precision]
            assert report.passed and report.metrics["n_eval"] == 300 and report.cpu_latency_ms > 0, (name, precision)
        check_qdq(bundle.path(head.models["int8"]))
    assert {Path(h.models["int8"].path).name for h in fusion.named_heads().values()} == {
        "head.int8.onnx", "attention.int8.onnx", "compound.int8.onnx"}


def test_the_multilabel_head_is_gated_on_map_and_reports_per_label_f1(exported: ExportResult) -> None:
    compound = load_bundle(exported.bundle).manifest.fusion.heads["compound"]
    for precision in ("fp16", "int8"):
        m = compound.precisions[precision].metrics
        assert 0.8 < m["ml_map_fp32"] <= 1.0 and m["ml_map_drop"] <= 0.02 and m["ml_n"] == 300
        assert all(0.5 < m[f"ml_f1_{label}"] <= 1.0 for label in SET_LABELS), m
        assert m["ml_agreement"] > 0.95 and "agreement" in m and "accuracy_drop_pt" in m
    attention = load_bundle(exported.bundle).manifest.fusion.heads["attention"]
    assert not any(k.startswith("ml_") for k in attention.precisions["int8"].metrics)


def test_the_report_has_one_section_per_head(exported: ExportResult) -> None:
    report = json.loads(exported.report_json.read_text())
    assert report["fusion_heads"] == list(SECTIONS.values()) and report["thresholds"]["max_map_drop"] == 0.02
    for key in SECTIONS.values():
        section = report[key]
        assert section["modality"] == "fusion" and section["datasets"]["eval"]["n"] == 300
        assert [section["precisions"][p]["status"] for p in ("fp32", "fp16", "int8")] == ["reference", "pass", "pass"]
    fp32 = report["fusion_head.compound"]["precisions"]["fp32"]["metrics"]
    int8 = report["fusion_head.compound"]["precisions"]["int8"]["metrics"]
    assert fp32["ml_map"] == pytest.approx(int8["ml_map_fp32"]) and "ml_ap_positive" in int8
    markdown = exported.report_md.read_text()
    assert "## Multilabel outputs (mAP, per-label F1)" in markdown
    assert "| fusion_head.compound | int8 |" in markdown and "## fusion_head.attention (fusion)" in markdown
    # The multilabel head's class truth is one label of each set: the report says its accuracy is relative only.
    assert report["fusion_head.compound"]["notes"] == [MULTILABEL_TRUTH_NOTE] and report["fusion_head"]["notes"] == []
    assert f"- note: {MULTILABEL_TRUTH_NOTE}" in markdown


def test_the_int8_attention_head_fuses_like_fp32_on_the_evaluation_rows(exported: ExportResult,
                                                                        files: dict[str, Path]) -> None:
    bundle = load_bundle(exported.bundle)
    head = bundle.manifest.fusion.heads["attention"]
    rows = multi_head_rows(300, seed=1)
    feed = {k: rows[k] for k in ("face", SPEECH_EMBEDDING, "mask")}
    fp32 = run_model(bundle.path(head.models["fp32"]), feed)["probs"]
    int8 = run_model(bundle.path(head.models["int8"]), feed)["probs"]
    assert float(np.mean(fp32.argmax(1) == int8.argmax(1))) >= 0.97


def test_head_data_missing_what_a_head_needs_is_refused_before_any_work(files: dict[str, Path]) -> None:
    rows = multi_head_rows(50, seed=3)
    del rows["label_sets"]
    no_sets = write_head_npz(files["root"] / "no_sets.npz", rows)
    with pytest.raises(InputError, match="lacks array 'label_sets'.*for output 'sets'"):
        export(ExportConfig(source=files["bundle"], out=files["root"] / "out-no-sets", head_eval=no_sets,
                            precisions=("fp16",)))
    rows = multi_head_rows(50, seed=3)
    rows["weights"] = np.ones((50, 1), np.float32)
    unknown = write_head_npz(files["root"] / "unknown.npz", rows)
    with pytest.raises(InputError, match="unexpected array 'weights.npy'"):
        export(ExportConfig(source=files["bundle"], out=files["root"] / "out-unknown", head_eval=unknown,
                            precisions=("fp16",)))
    assert not (files["root"] / "out-no-sets").exists() and not (files["root"] / "out-unknown").exists()


def test_heads_declaring_one_input_differently_are_refused(files: dict[str, Path], tmp_path: Path) -> None:
    import dataclasses

    from edge_mer.bundle.schema import TensorInfo
    from edge_mer.bundle.writer import write_manifest

    bundle = load_bundle(multi_head_bundle(tmp_path / "bundle"))
    fusion = bundle.manifest.fusion
    attention = fusion.heads["attention"]
    face = TensorInfo("face", ("N", 7), kind="probs", labels=tuple(reversed(attention.inputs[0].labels)))
    heads = {**fusion.heads, "attention": dataclasses.replace(attention, inputs=(face, *attention.inputs[1:]))}
    write_manifest(bundle.root, dataclasses.replace(bundle.manifest, fusion=dataclasses.replace(fusion, heads=heads)))
    with pytest.raises(ExportError, match="fusion heads 'stacked' and 'attention' declare input 'face' differently"):
        export(ExportConfig(source=bundle.root, out=tmp_path / "out", head_eval=files["eval"], precisions=("fp16",)))
