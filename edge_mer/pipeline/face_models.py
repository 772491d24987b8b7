"""Face detectors that run a network: their model from the bundle (or a user's file) on the run's backend.

The preprocessing layer never imports backends, so a detector that needs a
network (``FaceDetector.needs_network``, e.g. BlazeFace) gets it here as a
:class:`~edge_mer.preprocess.detection.DetectorModel`: the bundle's
``detectors.<kind>`` entry (sha256-checked when the bundle loaded) at the
resolved precision, or ``face.detector.model_path`` hashed as it is read,
loaded on the same backend and options as the encoders.
"""
from __future__ import annotations

import dataclasses
import hashlib
import logging

from edge_mer.backends.base import Backend, ModelFile, ModelRef
from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend, resolve_backend_name
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.feeds import detector_ranges
from edge_mer.bundle.precision import resolve_precision
from edge_mer.errors import ConfigError
from edge_mer.preprocess.blazeface import BlazeFaceDecoding
from edge_mer.preprocess.detection import DetectorModel, FaceDetector, check_model_file
from edge_mer.preprocess.face_blazeface import FULL_RANGE, BlazeFaceFullDetector
from edge_mer.preprocess.face_detect import DETECTORS, FaceDetectorOptions, create_detector
from edge_mer.preprocess.face_params import MAX_FACES

log = logging.getLogger(__name__)


def _file_ref(options: FaceDetectorOptions) -> ModelRef:
    """The user's detector file, hashed as read (engine caches key on the hash)."""
    cls = DETECTORS[options.kind]
    path = check_model_file(options.model_path, f"{options.kind} model_path", cls.model_hint or "an .onnx file")
    if path.suffix.lower() != ".onnx":
        raise ConfigError(f"{options.kind} model_path {path} does not end in .onnx; expected an ONNX model")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return ModelRef(name=f"detector.{options.kind}", precision="fp32", files={"fp32": ModelFile(path.resolve(), digest)})


def _model(options: FaceDetectorOptions, bundle: Bundle | None, precision: str,
           backend_name: str) -> tuple[ModelRef, BlazeFaceDecoding, str]:
    """What to load for ``options.kind``: the model, its decoding, and a description for logs."""
    spec = bundle.manifest.detectors.get(options.kind) if bundle is not None else None
    if options.model_path is not None:
        if DETECTORS[options.kind] is BlazeFaceFullDetector:
            decoding = FULL_RANGE
        else:
            decoding = spec.decoding if spec is not None else BlazeFaceDecoding()
        return _file_ref(options), decoding, f"{options.kind} from {options.model_path}"
    if bundle is None or spec is None:
        where = f"bundle {bundle.manifest.name}" if bundle is not None else "no bundle"
        raise ConfigError(f"the {options.kind} detector needs its model: {where} has no detectors.{options.kind} "
                          "entry; set face.detector.model_path or use a bundle that ships it")
    resolved = resolve_precision(options.kind, spec, precision, backend_name)
    ref = dataclasses.replace(bundle.detector_ref(options.kind, resolved), dim_ranges=detector_ranges(spec))
    return ref, spec.decoding, f"{options.kind} ({resolved})"


def build_detector(options: FaceDetectorOptions, bundle: Bundle | None = None,
                   backend: BackendOptions | None = None) -> FaceDetector:
    """The detector ``options`` names, its network (if any) loaded on ``backend`` at ``options.precision``;
    ``close()`` releases it."""
    cls = DETECTORS[options.kind]
    if not cls.needs_network:
        return create_detector(options)
    backend = backend or BackendOptions()
    backend_name = resolve_backend_name(backend.name)
    ref, decoding, what = _model(options, bundle, options.precision, backend_name)
    loaded: Backend = create_backend(ref, dataclasses.replace(backend, name=backend_name)).load()
    try:
        spec = loaded.input_specs[0]
        if len(spec.shape) != 4 or 3 not in (spec.shape[1], spec.shape[3]):
            raise ConfigError(f"{what}: input {spec.describe()} is not an RGB image batch; "
                              "expected [N, 3, H, W] or [N, H, W, 3]")
        batch = spec.shape[0]
        network = DetectorModel(infer=loaded.infer, input_name=spec.name, decoding=decoding,
                                max_batch=batch if isinstance(batch, int) else MAX_FACES,
                                layout="NCHW" if spec.shape[1] == 3 else "NHWC", close=loaded.close,
                                description=f"{what} on {loaded.name}")
        detector = create_detector(options, network)
    except BaseException:
        loaded.close()
        raise
    log.info("face detector: %s", network.description)
    return detector
