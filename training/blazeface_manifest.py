"""Put the converted BlazeFace detector into the default bundle's manifest (after ``training/blazeface.py``).

    python training/blazeface_manifest.py [--bundle edge_mer/assets/default_bundle]

Reads the provenance the recipe wrote (``training/results/blazeface.json``),
and lists the ONNX file with its sha256, input spec, and MediaPipe's anchor
and decoding options for the short-range model.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from edge_mer.bundle.schema import DetectorSpec, Provenance, TensorInfo
from edge_mer.bundle.writer import file_entry
from edge_mer.preprocess.blazeface import BlazeFaceDecoding

from bundle_manifest import update_detector

log = logging.getLogger("training.blazeface_manifest")

MODEL = "face/blazeface_short_range.onnx"
RESULTS = Path(__file__).parent / "results" / "blazeface.json"


def detector_spec(bundle: Path, results: dict) -> DetectorSpec:
    """The manifest entry of the short-range model in ``bundle`` (MediaPipe's options are the defaults)."""
    wheel = results.get("wheel", {})
    tflite = results.get("tflite", {})
    check = results.get("verification", {})
    source = (f"MediaPipe BlazeFace short range, {tflite.get('path', 'face_detection_short_range.tflite')} "
              f"(sha256 {tflite.get('sha256', '?')}) from the PyPI wheel {wheel.get('file', 'mediapipe 0.10.18')} "
              f"(sha256 {wheel.get('sha256', '?')}), converted with tflite2onnx "
              f"{results.get('tflite2onnx', '0.4.1')} by training/blazeface.py")
    return DetectorSpec(
        models={"fp32": file_entry(bundle, MODEL)},
        inputs=(TensorInfo("input", ("N", 3, 128, 128), "float32", "NCHW",
                           description="RGB frame letterboxed to 128x128 (zero border), pixel / 127.5 - 1"),),
        outputs=(TensorInfo("regressors", ("N", 896, 16), "float32",
                            description="per anchor: box centre x, y, width, height, then 6 keypoints (x, y)"),
                 TensorInfo("classificators", ("N", 896, 1), "float32", description="per anchor: face score logit")),
        decoding=BlazeFaceDecoding(),
        provenance=Provenance(source=source, training_data="Google's own (see the MediaPipe BlazeFace model card)",
                              licence="Apache-2.0 (see face/LICENSE.blazeface)",
                              notes=f"ONNX Runtime vs the TFLite interpreter on {check.get('n_images', '?')} real "
                                    f"frames: max abs difference {check.get('max_abs_diff_decoded', '?')} "
                                    f"(logits clipped to +-100 as MediaPipe does), sigmoid scores "
                                    f"{check.get('max_score_diff', '?')}"),
        description="BlazeFace short range: faces within about 2 m, boxes and 6 keypoints.")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bundle", type=Path, default=Path("edge_mer/assets/default_bundle"))
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    results = json.loads(args.results.read_text(encoding="utf-8")) if args.results.is_file() else {}
    path = update_detector(args.bundle, "blazeface", detector_spec(args.bundle, results))
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
