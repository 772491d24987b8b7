"""Static INT8 post-training quantization to explicit Q/DQ, configured for TensorRT.

Explicit quantization (QuantizeLinear/DequantizeLinear in the ONNX) is the
INT8 path both TensorRT 10 and 11 accept, and the same file runs on ONNX
Runtime.  ONNX Runtime's ``quantize_static`` writes it with:

* ``QuantFormat.QDQ``, activations and weights ``QInt8``, both symmetric
  (zero point 0; TensorRT INT8 is symmetric), weights per output channel;
* Q/DQ only on the *inputs* of :data:`QUANTIZED_OP_TYPES`, following
  TensorRT's placement recommendations: quantize every input of weighted
  layers (Conv, ConvTranspose, Gemm, MatMul) and pooling (MaxPool,
  AveragePool, GlobalAveragePool, which Q/DQ commutes with or fuses into),
  and the residual (skip) input of an element-wise Add; never the outputs of
  weighted layers (the next layer's input Q/DQ covers them, Relu stays
  explicit for TensorRT to fuse).  ONNX Runtime quantizes both Add inputs,
  so :func:`fuse_residual_adds` removes the pair on the input a weighted
  layer produces, letting TensorRT fuse the Add into that layer.  An Add
  with a constant operand is a bias, not a residual, and is not quantized
  (:mod:`~edge_mer_export.qdq_placement` has these graph rules);
* everything else stays float, notably Softmax (probability output),
  Sigmoid, the speech model's mean/std pooling (ReduceMean, Sub, Mul, Div,
  Sqrt) and the EEG heads' input standardisation (Sub, Div): these are not
  among TensorRT's INT8 fusions, and ORT's defaults would give Softmax and
  Sigmoid fixed-range output Q/DQ.  :mod:`~edge_mer_export.qdq_lint` refuses
  DequantizeLinear into them (``NO_QDQ_OPS``) and Q/DQ on probabilities
  other than attention weights read by a MatMul;
* attention blocks (fusion heads: MatMul, Softmax, LayerNormalization,
  Transpose/Reshape, Add, Mul, Gemm) follow the same rule, made explicit:
  every MatMul gets Q/DQ on *both* inputs, also when both are activations
  (``MatMulConstBOnly=False``; ORT's QDQ quantizer does so by default in
  static mode, the option pins it): the token projections, Q·K^T (the
  query pre-scaled, the keys through their Transpose), attn·V and the
  output projection, as TensorRT needs both operands of a batched MatMul in
  INT8 to run it in INT8 (its fused attention quantizes the Softmax output
  for the second MatMul the same way).  Softmax and LayerNormalization are
  not quantized op types, so they run in float (TensorRT 10/11 strongly
  typed networks run them in their float input type): no DequantizeLinear
  feeds them, and the Q/DQ after them is only the input quantization of
  the MatMul/Gemm that reads them.  The sums they normalise stay float too
  (:func:`~edge_mer_export.qdq_placement.normalised_adds`: the additive
  mask bias on the scores, the residual Add before a LayerNormalization,
  also the last one, whose [CLS] token a Gather selects for the final norm),
  as does every Add on the path of ``float_inputs`` alone (the head's
  ``mask``, :func:`~edge_mer_export.qdq_placement.float_path_adds`).
  Transpose, Reshape and Mul are not quantized op types: Q/DQ sits after
  them, on the MatMul input.  :mod:`~edge_mer_export.qdq_lint` checks all
  of this (attention MatMuls with an unquantized input, Q/DQ around
  Softmax/LayerNormalization, quantized inputs of a normalised Add).
  ``QDQOpTypePerChannelSupportThreshold`` is not an option of the ONNX
  Runtime this targets (1.31/1.32); per-channel MatMul weights use
  ``QDQOpTypePerChannelSupportToAxis``;
* biases stay float (``QuantizeBias=False``: TensorRT has no int32
  DequantizeLinear and fuses the float bias itself), weights stay float
  behind a Q -> DQ pair (``AddQDQPairToWeight``: TensorRT quantizes them at
  build time with that scale), and every consumer gets its own pair
  (``DedicatedQDQPair``), as NVIDIA ModelOpt's ONNX Runtime-based recipe does.

Calibration never falls back to random data: a reader that yields nothing
raises :class:`ExportError` ("no calibration data").  Tensor ranges are
computed with ``create_calibrator(...).collect_data(...).compute_data()``,
one feed per ``collect_data`` call (ORT's histogram collectors stack one
call's outputs into one array, which fails for a short last batch or speech
windows of different length), saved with ``save_tensors_data`` and handed to
``quantize_static(calibration_cache_path=...)``, so a fresh run and a cached
run quantize from the same file and write byte-identical models.

The cache (see :func:`cache_key`) lives in ``cache_dir`` under
``<model stem>.<method>.<key>.json``; the key hashes the model bytes, every
calibration feed (names, dtypes, shapes, bytes, in order), the method, the
ONNX Runtime version and the calibrated op types.  Computing the key reads
the data once (``reader_factory()``); a hit skips the calibration pass and
logs it, a miss reads the data a second time through a fresh reader and
refuses a reader whose second pass differs from its first.

``quantizer="modelopt"`` (or ``"auto"`` when the ``modelopt`` package is
importable) hands the same feeds to NVIDIA ModelOpt's
``modelopt.onnx.quantization.quantize`` instead.  That path is NOT tested
here (ModelOpt is not installed in this project's environments), has no
range cache, supports ``entropy`` and ``minmax`` only, needs feeds of one
shape, and its output still passes through :func:`check_qdq`.
"""
from __future__ import annotations

import hashlib
import importlib.util
import inspect
import logging
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import onnx
from onnx import helper

# First: it turns ONNX Runtime's telemetry off, which has to happen before onnxruntime is imported.
from edge_mer.backends.onnxrt import onnxruntime_module
import onnxruntime as ort
from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                      create_calibrator, quantize_static)

from edge_mer_calibration.ort_reader import feeds_digest
from edge_mer_export.config import DEFAULT_METHOD, Method
from edge_mer_export.errors import ExportError
from edge_mer_export.onnx_checks import first_line, graph_inputs, ort_errors
from edge_mer_export.qdq_lint import check_qdq
from edge_mer_export.qdq_placement import float_consumer_pairs, float_nodes, fuse_residual_adds, named

log = logging.getLogger(__name__)

Quantizer = Literal["auto", "ort", "modelopt"]
ReaderFactory = Callable[[], CalibrationDataReader]

#: ONNX Runtime's calibrator for each :data:`~edge_mer_export.config.Method`.
METHODS: dict[Method, CalibrationMethod] = {"entropy": CalibrationMethod.Entropy,
                                            "minmax": CalibrationMethod.MinMax,
                                            "percentile": CalibrationMethod.Percentile}

#: Op types whose inputs get Q/DQ (see the module docstring for why these and no others).
QUANTIZED_OP_TYPES: tuple[str, ...] = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "MaxPool", "AveragePool",
                                       "GlobalAveragePool")

#: quantize_static extra_options for TensorRT explicit INT8 (see the module docstring).
TRT_OPTIONS: dict[str, Any] = {
    "ActivationSymmetric": True,
    "WeightSymmetric": True,
    "QuantizeBias": False,
    "AddQDQPairToWeight": True,
    "DedicatedQDQPair": True,
    "ForceQuantizeNoInputCheck": True,      # pooling inputs get Q/DQ although producers' outputs are float
    "OpTypesToExcludeOutputQuantization": list(QUANTIZED_OP_TYPES),
    "QDQKeepRemovableActivations": True,    # keep Relu/Clip in the graph for TensorRT to fuse
    "QDQDisableWeightAdjustForInt32Bias": True,  # biases stay float, so no weight scale needs raising for them
    "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1},  # MatMul weight [K, N]: one scale per output column
    "MatMulConstBOnly": False,              # attention MatMuls (both operands activations) get Q/DQ on both
}

#: create_calibrator extra_options: ranges symmetric around 0, as TensorRT's INT8 is.
CALIBRATOR_OPTIONS: dict[str, Any] = {"symmetric": True}

#: Bumped whenever what the cache key covers changes.
CACHE_FORMAT = "edge-mer-int8-ranges/1"


class _OneFeed(CalibrationDataReader):
    """A reader over one feed, so each ``collect_data`` call sees arrays of one shape."""

    def __init__(self, feed: dict[str, np.ndarray]) -> None:
        self._feed: dict[str, np.ndarray] | None = feed

    def get_next(self) -> dict[str, np.ndarray] | None:
        feed, self._feed = self._feed, None
        return feed


class _FeedCheck:
    """Validates calibration feeds against the model's inputs, in order."""

    def __init__(self, model: onnx.ModelProto, src: Path) -> None:
        self._src = src
        self._dtypes = {vi.name: helper.tensor_dtype_to_np_dtype(vi.type.tensor_type.elem_type)
                        for vi in graph_inputs(model)}
        self.count = 0

    def add(self, feed: Any) -> dict[str, np.ndarray]:
        """The feed as contiguous arrays, after checking names, dtypes and finiteness."""
        where = f"{self._src}: calibration feed {self.count}"
        if not isinstance(feed, Mapping) or set(feed) != set(self._dtypes):
            got = sorted(feed) if isinstance(feed, Mapping) else type(feed).__name__
            raise ExportError(f"{where} has inputs {got}, expected {sorted(self._dtypes)}")
        arrays = {}
        for name in sorted(feed):
            arr = np.ascontiguousarray(feed[name])
            if arr.dtype != self._dtypes[name]:
                raise ExportError(f"{where} input {name!r} is {arr.dtype}, expected {self._dtypes[name]}")
            if np.issubdtype(arr.dtype, np.floating) and not np.isfinite(arr).all():
                raise ExportError(f"{where} input {name!r} has NaN or infinite values; expected finite data")
            arrays[name] = arr
        self.count += 1
        return arrays


def _feeds(reader: CalibrationDataReader) -> Iterator[Any]:
    """Feeds until the reader's ``get_next`` returns None (or an empty dict, as ONNX Runtime stops too)."""
    while True:
        feed = reader.get_next()
        if feed is None or (isinstance(feed, Mapping) and not feed):
            return
        yield feed


def _digest(model: onnx.ModelProto, src: Path, reader_factory: ReaderFactory, keep: bool = False
            ) -> tuple[str, int, list[dict[str, np.ndarray]]]:
    """(digest, feed count, the feeds if ``keep``) of one pass over a fresh reader; refuses an empty one."""
    check = _FeedCheck(model, src)
    feeds = [check.add(feed) for feed in _feeds(reader_factory())]
    if check.count == 0:
        raise ExportError(f"{src}: no calibration data: the reader yielded no feeds; edge-mer never quantizes "
                          "with ranges from random data")
    return feeds_digest(feeds), check.count, feeds if keep else []


def cache_key(model_bytes: bytes, data_digest: str, method: str) -> str:
    """sha256 over the format, the model bytes, the data digest, method, ONNX Runtime version and op types."""
    h = hashlib.sha256()
    parts = (CACHE_FORMAT, hashlib.sha256(model_bytes).hexdigest(), data_digest, method, ort.__version__,
             ",".join(QUANTIZED_OP_TYPES), repr(sorted(CALIBRATOR_OPTIONS.items())))
    for part in parts:
        h.update(part.encode() + b"\0")
    return h.hexdigest()


def _calibrate(model: onnx.ModelProto, src: Path, reader_factory: ReaderFactory, method: str,
               expected: str, cache: Path) -> None:
    """Collect tensor ranges over a fresh reader, one feed per call, and save them to ``cache``."""
    from onnxruntime.quantization.calibrate import save_tensors_data

    start = time.perf_counter()
    check, seen = _FeedCheck(model, src), []
    with tempfile.TemporaryDirectory(prefix="edge-mer-calib-") as tmp:
        try:
            calibrator = create_calibrator(src, list(QUANTIZED_OP_TYPES),
                                           augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                           calibrate_method=METHODS[method], extra_options=dict(CALIBRATOR_OPTIONS))
            for feed in _feeds(reader_factory()):
                arrays = check.add(feed)
                seen.append(arrays)
                calibrator.collect_data(_OneFeed(arrays))
            if feeds_digest(seen) != expected:
                raise ExportError(f"{src}: the calibration reader gave different data on its second pass; "
                                  "reader_factory must return a reader over the same feeds every time")
            ranges = calibrator.compute_data()
        except (*ort_errors(), ValueError, KeyError) as exc:
            raise ExportError(f"{src}: calibration ({method}) failed: {first_line(exc)}") from None
    save_tensors_data(ranges, cache)
    log.info("calibrated %s (%s) on %d feeds in %.1f s; ranges cached in %s", src.name, method, check.count,
             time.perf_counter() - start, cache)


def _quantize_ort(model: onnx.ModelProto, src: Path, dst: Path, method: str, cache: Path, per_channel: bool,
                  keep_float: Sequence[str] = (), float_inputs: Sequence[str] = ()) -> None:
    renamed = named(model)
    by_rule = float_nodes(renamed, float_inputs)
    excluded = [*by_rule, *keep_float]
    try:
        quantize_static(renamed, str(dst), calibration_data_reader=None, calibration_cache_path=str(cache),
                        quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANTIZED_OP_TYPES),
                        per_channel=per_channel, reduce_range=False, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                        calibrate_method=METHODS[method], extra_options=dict(TRT_OPTIONS))
    except (*ort_errors(), ValueError, KeyError, RuntimeError) as exc:
        raise ExportError(f"{src}: INT8 quantization failed: {first_line(exc)}") from None
    quantized = onnx.load(str(dst))
    fused = fuse_residual_adds(quantized)
    # The Adds left float by rule read float tensors, also where a quantized reader shares the tensor's Q/DQ.
    floated = float_consumer_pairs(quantized, QUANTIZED_OP_TYPES, float_nodes=by_rule)
    if fused or floated:
        onnx.save(quantized, str(dst))
        log.debug("%s: Add inputs from weighted layers left unquantized for TensorRT fusion: %s; float inputs "
                  "restored for %s", src.name, fused, floated)


def _require_range_cache() -> None:
    # save_tensors_data and quantize_static(calibration_cache_path=...) are recent ONNX Runtime additions.
    if "calibration_cache_path" not in inspect.signature(quantize_static).parameters:
        raise ExportError(f"onnxruntime {ort.__version__} has no quantize_static(calibration_cache_path=...); "
                          "INT8 export needs a release that has it (1.31 does)")


def _resolve(quantizer: str) -> str:
    if quantizer not in ("auto", "ort", "modelopt"):
        raise ExportError(f"quantizer {quantizer!r}: expected one of auto, ort, modelopt")
    available = importlib.util.find_spec("modelopt") is not None
    if quantizer == "modelopt" and not available:
        raise ExportError("quantizer 'modelopt' needs NVIDIA ModelOpt (pip package nvidia-modelopt), "
                          "which is not installed")
    return "modelopt" if quantizer == "modelopt" or (quantizer == "auto" and available) else "ort"


def _quantize_modelopt(src: Path, dst: Path, feeds: list[dict[str, np.ndarray]], method: str,
                       keep_float: Sequence[str] = ()) -> None:
    """UNTESTED here: ModelOpt's ONNX INT8 PTQ on the same feeds stacked along the batch axis."""
    if method == "percentile":
        raise ExportError("quantizer 'modelopt' calibrates with entropy or minmax, not percentile")
    shapes = {name: {f[name].shape[1:] for f in feeds} for name in feeds[0]}
    if any(len(s) > 1 for s in shapes.values()):
        raise ExportError(f"{src}: modelopt needs calibration feeds of one shape to stack, got {shapes}")
    from modelopt.onnx.quantization import quantize  # optional dependency, never installed by edge-mer

    stacked = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    quantize(str(src), quantize_mode="int8", calibration_data=stacked,
             calibration_method={"entropy": "entropy", "minmax": "max"}[method], calibration_eps=["cpu"],
             high_precision_dtype="fp32", output_path=str(dst), nodes_to_exclude=list(keep_float) or None)


def make_int8(src: Path, dst: Path, reader_factory: ReaderFactory, *, method: Method = DEFAULT_METHOD,
              cache_dir: Path | None = None, per_channel: bool = True, quantizer: Quantizer = "ort",
              keep_float: Sequence[str] = (), float_inputs: Sequence[str] = ()) -> Path:
    """Write the INT8 Q/DQ version of ``src`` to ``dst``, calibrated on ``reader_factory()``'s feeds.

    ``reader_factory`` returns a fresh ``CalibrationDataReader`` each call
    (feed dicts keyed by the model's input names).  ``method`` defaults to
    :data:`~edge_mer_export.config.DEFAULT_METHOD`, as ``edge-mer export``
    does.  ``cache_dir`` keeps the calibration ranges between runs (``None``:
    no cache).  ``keep_float`` names nodes (as
    :func:`~edge_mer_export.qdq_placement.named` names them) left in float,
    e.g. :func:`~edge_mer_export.qdq_placement.stem_convs`; ``float_inputs`` names graph inputs whose own
    path stays float (a fusion head's ``mask``, see the module docstring).  ``src`` should come from :func:`~edge_mer_export.onnx_checks.prepare_model`.  The output
    passes :func:`~edge_mer_export.qdq_lint.check_qdq`.
    """
    onnxruntime_module()  # telemetry events off before the quantizer creates its sessions
    src, dst = Path(src), Path(dst)
    if method not in METHODS:
        raise ExportError(f"calibration method {method!r}: expected one of {', '.join(METHODS)}")
    backend = _resolve(quantizer)
    if backend == "ort":
        _require_range_cache()
    if not src.is_file():
        raise ExportError(f"ONNX model {src} does not exist")
    model_bytes = src.read_bytes()
    model = onnx.load_from_string(model_bytes)
    digest, count, feeds = _digest(model, src, reader_factory, keep=backend == "modelopt")
    with tempfile.TemporaryDirectory(prefix="edge-mer-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"  # moved to dst only after the Q/DQ lint passes
        if backend == "modelopt":
            _quantize_modelopt(src, out, feeds, method, keep_float)
        else:
            folder = Path(cache_dir) if cache_dir is not None else Path(tmp)
            cache = folder / f"{src.stem}.{method}.{cache_key(model_bytes, digest, method)[:32]}.json"
            if cache.is_file():
                log.info("calibration cache hit for %s (%s, %d feeds): %s; skipping the calibration pass",
                         src.name, method, count, cache)
            else:
                _calibrate(model, src, reader_factory, method, digest, cache)
            _quantize_ort(model, src, out, method, cache, per_channel, keep_float, float_inputs)
        check_qdq(out, label=f"INT8 model of {src}")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(out), str(dst))
    log.info("int8 %s -> %s (%s, %s, %d calibration feeds)", src.name, dst, backend, method, count)
    return dst
