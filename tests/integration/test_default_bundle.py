from __future__ import annotations

from pathlib import Path

import pytest

from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.labels import to_canonical
from edge_mer_calibration.face import read_face_folder
from edge_mer_calibration.samples import batched_feeds

# Measured with the same pipeline by training/face.py and stated in ../shared/README.md.
CKPLUS_ACCURACY = 0.685


def test_default_bundle_loads_with_hashes_verified() -> None:
    bundle = load_bundle(default_bundle_path())
    face = bundle.encoder("face")
    assert face.modality == "face"
    assert bundle.model_ref("face").file.path.stat().st_size > 100_000


@pytest.mark.shared
def test_face_encoder_on_ckplus_matches_the_published_figure(shared_dir: Path) -> None:
    bundle = load_bundle(default_bundle_path())
    spec = bundle.encoder("face")
    samples = read_face_folder(shared_dir / "data" / "face" / "ckplus48", spec.preprocessing)
    correct = total = 0
    with create_backend(bundle.model_ref("face"), BackendOptions(name="onnxruntime")) as backend:
        for feeds, batch in batched_feeds(samples, spec.inputs[0].name, 128):
            probs = backend.infer(feeds)[spec.class_output.name]
            for sample, row in zip(batch, probs):
                canonical = to_canonical(row, spec.labels, spec.label_map)
                correct += max(canonical, key=canonical.get) == sample.label
                total += 1
    assert total == 927  # the 6 classes shared with FER2013; contempt is skipped
    assert abs(correct / total - CKPLUS_ACCURACY) <= 0.005, f"accuracy {correct / total:.4f}"
