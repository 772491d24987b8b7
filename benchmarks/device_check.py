"""Device check: every model at every precision on TensorRT against ONNX Runtime FP32, then ``edge-mer bench``.

Run by ``benchmarks/device_check.sh`` on a machine with a CUDA GPU and TensorRT. Every model of the bundle
(encoders, detector, fusion head) at every shipped precision, with a default run's profile ranges
(:func:`~edge_mer.pipeline.feeds.bundle_refs`), is built (in a fresh cache unless ``--cache-dir``) and fed
``--samples`` inputs made as the runtime makes them: the session's face crops and 1-4 s speech windows through
the runtime preprocessing, random EEG windows through the EEG features (the demo's EEG is a synthetic test
signal), letterboxed frames for the detector, probability vectors and a 0/1 mask for the head. Outputs are
compared with ONNX Runtime (CPU) running the FP32 model on the same inputs (top-1 agreement of class outputs,
max abs difference of every output) and, as a baseline, with ONNX Runtime running the same file; then
``edge-mer bench`` runs on the backend with small counts. One summary line goes to stdout, details to stderr
and ``--json OUT``. Exit 1 when a model fails to build or run, an output is not finite, the bench fails, time
runs out, or agreement is under its threshold and more than ``--agreement-slack`` under ONNX Runtime's own run
of the file (int8 near class boundaries is no better there); else 0. Without TensorRT or a GPU: one line
``device check: skipped: <reason>``, exit 0. ``--backend onnxruntime`` checks ONNX Runtime against itself.
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import math
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from edge_mer_calibration.detector import detector_feeds, read_frames
from edge_mer_calibration.face import read_face_video
from edge_mer_calibration.speech import session_audio

from edge_mer.backends.base import ModelRef
from edge_mer.backends.options import BackendOptions, OrtOptions, TrtOptions
from edge_mer.backends.registry import backend_class, create_backend
from edge_mer.bench.encoders import example_features
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.loader import Bundle, head_model_name
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.errors import EdgeMerError
from edge_mer.names import PRECISIONS
from edge_mer.pipeline.config import RunConfig
from edge_mer.pipeline.feeds import bundle_refs
from edge_mer.preprocess.audio import AudioPreprocessor
from edge_mer.preprocess.base import Invalid
from edge_mer.sessions.format import demo_session_path, load_session

Feeds = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]
REFERENCE = BackendOptions(name="onnxruntime", onnxruntime=OrtOptions(providers=("CPUExecutionProvider",)))
TITLES = {"tensorrt": "TensorRT", "onnxruntime": "ONNX Runtime"}
SPEECH_SECONDS = (0.0, 2.0, 3.0, 4.0)  # 0: the encoder's shortest window


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Outputs against a reference's over the same samples."""

    rows: int  # class-output rows compared for top-1 (0: no class output)
    agreement: float | None  # share of rows whose argmax matches; None without a class output
    max_abs_diff: dict[str, float]  # per output name; NaN when an output is not finite


def compare_outputs(reference: Sequence[Mapping[str, np.ndarray]], outputs: Sequence[Mapping[str, np.ndarray]],
                    class_outputs: Sequence[str] = ()) -> Comparison:
    """Top-1 agreement of ``class_outputs`` (argmax of the last axis, per row) and max abs diff of every output.

    ``reference`` and ``outputs`` hold one output dict per sample, in the same order. Differing sample
    counts, output names or shapes are a one-line :class:`ValueError`.
    """
    if len(reference) != len(outputs) or not reference:
        raise ValueError(f"compared {len(outputs)} samples with {len(reference)} reference samples; "
                         "expected the same number, at least 1")
    names = sorted(reference[0])
    diffs = {name: 0.0 for name in names}
    agree = rows = 0
    for ref, got in zip(reference, outputs):
        if sorted(got) != names:
            raise ValueError(f"outputs {sorted(got)} differ from the reference's {names}")
        for name in names:
            a, b = np.asarray(ref[name], np.float64), np.asarray(got[name], np.float64)
            if a.shape != b.shape:
                raise ValueError(f"output {name!r} has shape {list(b.shape)}, the reference {list(a.shape)}")
            diff = float(np.max(np.abs(a - b))) if a.size else 0.0
            if math.isnan(diff) or diff > diffs[name]:  # NaN sticks: a non-finite output must show
                diffs[name] = diff
            if name in class_outputs and a.size:
                top_a, top_b = a.reshape(-1, a.shape[-1]).argmax(-1), b.reshape(-1, b.shape[-1]).argmax(-1)
                agree, rows = agree + int(np.sum(top_a == top_b)), rows + top_a.size
    return Comparison(rows, agree / rows if rows else None, diffs)


def _face_windows(spec: EncoderSpec, n: int, session: Path, bundle: Bundle) -> list[np.ndarray]:
    if (video := load_session(session).path("video")) is None:
        return []
    samples = read_face_video(video, spec.preprocessing, every_n=2, label="device-check", bundle=bundle.root)
    return [s.array for s in itertools.islice(samples, n)]


def _speech_windows(spec: EncoderSpec, n: int, session: Path) -> list[np.ndarray]:
    """Windows of the session's audio of SPEECH_SECONDS in turn, each from another place."""
    audio, rate = session_audio(session)
    pre, out = AudioPreprocessor(spec.preprocessing), []
    for i in range(n):
        size = int((SPEECH_SECONDS[i % len(SPEECH_SECONDS)] or spec.preprocessing.min_seconds) * rate)
        start = int(i * max(0, audio.shape[0] - size) / max(1, n - 1))  # spread over the audio
        features = pre.process(audio[start:start + size], rate)
        if not isinstance(features, Invalid):  # too short
            out.append(features)
    return out


def _encoder_inputs(bundle: Bundle, name: str, n: int, rng: np.random.Generator,
                    session: Path) -> tuple[list[Feeds], tuple[str, ...], int]:
    """Face crops and speech windows of ``session``, topped up with :func:`example_features`; EEG only from
    the latter: the demo's EEG is BrainFlow's synthetic test signal, on which int8 and fp32 disagree anywhere."""
    spec = bundle.encoder(name)
    real: list[np.ndarray] = []
    if spec.modality == "face":
        real = _face_windows(spec, n, session, bundle)[:n]
    elif spec.modality == "speech":
        real = _speech_windows(spec, n, session)[:n]
    windows = real + [example_features(spec, rng) for _ in range(n - len(real))]
    classes = (spec.class_output.name,) if spec.class_output is not None else ()
    return [{spec.inputs[0].name: w.astype(np.float32)[None]} for w in windows], classes, len(real)


def _detector_inputs(bundle: Bundle, name: str, n: int, session: Path) -> tuple[list[Feeds], tuple[str, ...], int]:
    spec, video, tensor = bundle.detector(name), load_session(session).path("video"), bundle.detector(name).inputs[0]
    if video is None:
        raise ValueError(f"session {session} has no video for the detector's frames")
    feeds = detector_feeds(read_frames(video, every_n=3, limit=n), tensor.name, spec.decoding, tensor.layout or "NHWC")
    return feeds, (), len(feeds)


def _head_inputs(bundle: Bundle, name: str, n: int,
                 rng: np.random.Generator) -> tuple[list[Feeds], tuple[str, ...], int]:
    """Per probability input a distribution, per embedding input a unit-scale vector (zeros where its
    encoder is masked out), and the 0/1 mask in its label order, for the shipped head ``name``."""
    head = bundle.manifest.fusion.named_heads()[name]
    mask = next(t for t in head.inputs if t.name == "mask")
    feeds = []
    for _ in range(n):
        valid = rng.random(len(mask.labels)) < 0.7
        valid[rng.integers(len(valid))] = True  # at least one encoder has a result
        on = dict(zip(mask.labels, valid))
        sample = {"mask": valid.astype(mask.dtype)[None]}
        for t in (t for t in head.inputs if t.name != "mask"):
            width = int(t.shape[-1])
            row = rng.dirichlet(np.full(width, 0.5)) if t.kind == "probs" else rng.normal(0.0, 1.0, width)
            sample[t.name] = (row if on[t.name.partition(".")[0]] else np.zeros(width)).astype(t.dtype)[None]
        feeds.append(sample)
    return feeds, tuple(t.name for t in head.outputs if t.kind in ("probs", "logits")), 0


def model_inputs(bundle: Bundle, model: str, n: int, seed: int,
                 session: Path) -> tuple[list[Feeds], tuple[str, ...], int]:
    """Feeds (batch 1; ``n``, or the detector's frames of ``session`` if fewer) for ``model`` as named in
    ``bundle_refs``, its class outputs, and how many feeds came from ``session`` rather than random data."""
    rng = np.random.default_rng(seed)
    if model in bundle.manifest.encoders:
        return _encoder_inputs(bundle, model, n, rng, session)
    if model.startswith("detector.") and model.removeprefix("detector.") in bundle.manifest.detectors:
        return _detector_inputs(bundle, model.removeprefix("detector."), n, session)
    # A shipped head, by its model name in bundle_refs (``fusion_head``, ``fusion_head.<name>``).
    head = next((h for h in bundle.manifest.fusion.named_heads() if head_model_name(bundle.manifest, h) == model), None)
    if head is not None:
        return _head_inputs(bundle, head, n, rng)
    raise ValueError(f"model {model!r} is no encoder, detector or fusion head of bundle {bundle.manifest.name}")


def run_model(ref: ModelRef, options: BackendOptions, feeds: Sequence[Feeds]) -> tuple[list[Outputs], dict[str, Any]]:
    """Load ``ref`` on ``options``' backend and run every feed; returns the outputs and load facts."""
    started = time.perf_counter()
    with create_backend(ref, options) as backend:
        load_s = time.perf_counter() - started
        dtypes = {s.name: np.dtype(s.dtype) for s in backend.input_specs}
        outputs = [backend.infer({k: v.astype(dtypes.get(k, v.dtype), copy=False) for k, v in f.items()})
                   for f in feeds]
        info = {"backend": backend.name, "load_s": round(load_s, 3),
                "from_cache": bool(getattr(backend, "engine_from_cache", False))}
    return outputs, info


@dataclasses.dataclass(frozen=True)
class Inputs:
    """One model's feeds, class outputs, feeds taken from the session, and ORT FP32's outputs for them."""

    feeds: list[Feeds]
    classes: tuple[str, ...]
    from_session: int
    reference: list[Outputs]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"  # a share as a percentage


def check_one(ref: ModelRef, options: BackendOptions, inputs: Inputs, args: argparse.Namespace) -> dict[str, Any]:
    """Build/load one engine, run it, compare with ORT FP32 and with ORT at the same precision (the baseline)."""
    label = f"{ref.name}/{ref.precision}"
    row: dict[str, Any] = {"model": ref.name, "precision": ref.precision, "samples": len(inputs.feeds),
                           "session_inputs": inputs.from_session,
                           "dim_ranges": {k: list(v) for k, v in ref.dim_ranges.items()}}
    try:
        baseline = inputs.reference if ref.precision == "fp32" else run_model(ref, REFERENCE, inputs.feeds)[0]
        outputs, info = run_model(ref, options, inputs.feeds)
        cmp, ort, same = (compare_outputs(a, b, inputs.classes) for a, b in
                          ((inputs.reference, outputs), (inputs.reference, baseline), (baseline, outputs)))
    except Exception as exc:  # noqa: BLE001 - TensorRT and pycuda raise their own types; report, go on
        row["error"] = (f"{type(exc).__name__}: {exc}".splitlines() or ["?"])[0]
        print(f"{label}: FAILED: {row['error']}", file=sys.stderr)
        return row
    row.update(info, agreement=cmp.agreement, rows=cmp.rows, max_abs_diff=cmp.max_abs_diff,
               class_outputs=list(inputs.classes), ort_agreement=ort.agreement, agreement_same=same.agreement,
               max_abs_diff_same=same.max_abs_diff, slack=args.agreement_slack,
               min_agreement=args.min_agreement_int8 if ref.precision == "int8" else args.min_agreement)
    top1 = (f"top-1 vs ORT fp32 {_pct(cmp.agreement)} of {cmp.rows} (ORT's own {_pct(ort.agreement)}; vs ORT "
            f"{ref.precision} {_pct(same.agreement)}), " if cmp.rows else "")
    print(f"{label}: {top1}max abs diff " + ", ".join(f"{k} {v:.3g}" for k, v in cmp.max_abs_diff.items())
          + f"; {'from cache' if info['from_cache'] else 'loaded'} in {info['load_s']:.1f} s", file=sys.stderr)
    return row


def check_models(bundle: Bundle, options: BackendOptions, args: argparse.Namespace,
                 deadline: float) -> list[dict[str, Any]]:
    """One result row per model and precision of ``bundle`` (``error`` set where it failed)."""
    rows: list[dict[str, Any]] = []
    made: dict[str, Inputs] = {}
    for ref in bundle_refs(bundle, RunConfig()):
        if time.monotonic() > deadline:
            rows.append({"model": ref.name, "precision": ref.precision, "error": "out of time (--budget-s)"})
            continue
        if ref.name not in made:
            try:
                feeds, classes, real = model_inputs(bundle, ref.name, args.samples, args.seed, args.session)
                reference, _ = run_model(dataclasses.replace(ref, precision="fp32"), REFERENCE, feeds)
            except (EdgeMerError, ValueError, OSError) as exc:
                rows.append({"model": ref.name, "precision": ref.precision, "error": f"inputs or reference: {exc}"})
                continue
            made[ref.name] = Inputs(feeds, classes, real, reference)
        rows.append(check_one(ref, options, made[ref.name], args))
    return rows


def bench_command(args: argparse.Namespace, out: Path, config: Path | None) -> list[str]:
    """``edge-mer bench`` on the checked backend with small counts, writing its JSON to ``out``."""
    entry = Path(sys.executable).with_name("edge-mer")
    cmd = [str(entry)] if entry.is_file() else [sys.executable, "-m", "edge_mer.cli.main"]
    cmd += ["--log-level", "WARNING", "bench", "--backend", args.backend, "--iterations", str(args.bench_iterations),
            "--warmup", "5", "--batch", "4", "--duration", str(args.bench_duration), "--json", str(out)]
    cmd += ["--bundle", str(args.bundle)] if args.bundle is not None else []
    return cmd + (["--config", str(config)] if config is not None else [])


def run_bench(args: argparse.Namespace, cache_dir: Path | None, timeout_s: float) -> dict[str, Any]:
    """Run the bench (its tables to stderr, engines in ``cache_dir``); its JSON, or ``{"error": ...}``."""
    with tempfile.TemporaryDirectory(prefix="edge-mer-device-check-") as tmp:
        out, config = Path(tmp) / "bench.json", None
        if cache_dir is not None:
            config = Path(tmp) / "bench.toml"
            config.write_text(f"[backend.tensorrt]\ncache_dir = {json.dumps(str(cache_dir))}\n", encoding="utf-8")
        try:
            done = subprocess.run(bench_command(args, out, config), capture_output=True, text=True,
                                  timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired:
            return {"error": f"timed out after {timeout_s:.0f} s"}
        sys.stderr.write(done.stdout + done.stderr)
        if done.returncode != 0 or not out.is_file():
            return {"error": (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]}
        return json.loads(out.read_text(encoding="utf-8"))


def bench_summary(bench: Mapping[str, Any]) -> str:
    """Batch-1 encoder p50s per precision, the decision p50 and the face path's frame rate, in a few words."""
    parts = [f"{name} " + "/".join(f"{per[p]['p50_ms']:.2f}" if "p50_ms" in per.get(p, {}) else "-"
                                   for p in PRECISIONS) for name, per in bench.get("encoders", {}).items()]
    text = f"encoder p50 ms ({'/'.join(PRECISIONS)}) {', '.join(parts)}" if parts else "no encoders"
    if bench.get("pipeline"):
        text += f"; decision p50 {bench['pipeline']['decision_latency_ms']['p50']:.2f} ms"
    if bench.get("face_path"):
        text += f"; face path {bench['face_path']['fps']:.0f} fps"
    return text


def _worst(rows: Sequence[Mapping[str, Any]], classes: bool) -> tuple[float, str] | None:
    """The largest max abs diff (NaN first) over class outputs, or over the other outputs."""
    worst: tuple[float, str] | None = None
    for row in rows:
        for out, diff in row.get("max_abs_diff", {}).items():
            if (out in row["class_outputs"]) == classes and (worst is None or not diff <= worst[0]):
                worst = (diff, f"{row['model']}/{row['precision']} {out}")
    return worst


def agreement_low(row: Mapping[str, Any]) -> bool:
    """Top-1 agreement with ORT FP32 under the threshold and more than ``slack`` under ORT's own run of the file."""
    got = row.get("agreement")
    return got is not None and got < row["min_agreement"] and got < (row["ort_agreement"] or 0) - row["slack"]


def problems(rows: Sequence[Mapping[str, Any]], bench: Mapping[str, Any] | None) -> list[str]:
    """Why the check fails: models that failed, agreement too low, non-finite outputs, the bench."""
    found = []
    for row in rows:
        label = f"{row['model']}/{row['precision']}"
        if "error" in row:
            found.append(f"{label}: {row['error']}")
        elif agreement_low(row):
            found.append(f"{label} top-1 {_pct(row['agreement'])} < {_pct(row['min_agreement'])} "
                         f"(ORT's own {_pct(row['ort_agreement'])})")
        elif any(not math.isfinite(v) for v in row["max_abs_diff"].values()):
            found.append(f"{label}: outputs not finite")
    return found + ([f"bench: {bench['error']}"] if bench is not None and "error" in bench else [])


def summary_line(rows: Sequence[Mapping[str, Any]], bench: Mapping[str, Any] | None, backend: str,
                 elapsed_s: float) -> str:
    """The one line printed to stdout."""
    ok = [r for r in rows if "error" not in r]
    cached = sum(1 for r in ok if r.get("from_cache"))
    text = f"device check: {len(ok)} of {len(rows)} {'engines' if backend == 'tensorrt' else backend + ' sessions'}" \
           f" built{f' ({cached} from cache)' if cached else ''}"
    agreeing = [r for r in ok if r["agreement"] is not None]
    if agreeing:
        low = min(agreeing, key=lambda r: r["agreement"])
        text += (f", top-1 agreement min {_pct(low['agreement'])} ({low['model']}/{low['precision']}; "
                 f"ORT {low['precision']} {_pct(low['ort_agreement'])})")
    for classes, what in ((True, "max abs diff max"), (False, "other outputs")):
        worst = _worst(ok, classes)
        text += f", {what} {worst[0]:.3g} ({worst[1]})" if worst is not None else ""
    if bench is None or "error" not in bench:
        text += "; bench skipped" if bench is None else f"; bench {backend} ok: {bench_summary(bench)}"
    found = problems(rows, bench)
    return text + f"; {elapsed_s:.0f} s" + (f"; FAILED ({len(found)}): " + "; ".join(found) if found else "")


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command-line options (see ``--help``)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--bundle", type=Path, default=None, help="bundle directory (default: the packaged one)")
    p.add_argument("--json", type=Path, default=None, help="write every figure as JSON to this file")
    p.add_argument("--samples", type=int, default=32, help="inputs per model (default 32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--session", type=Path, default=None, help="session the inputs come from (default: the demo)")
    p.add_argument("--min-agreement", type=float, default=0.98, help="top-1 agreement needed at fp32, fp16")
    p.add_argument("--min-agreement-int8", type=float, default=0.9, help="top-1 agreement needed at int8")
    p.add_argument("--agreement-slack", type=float, default=0.05, help="pass within this of ORT's own agreement")
    p.add_argument("--cache-dir", type=Path, help="TensorRT engine cache (default: a fresh one, so all are built)")
    p.add_argument("--budget-s", type=float, default=570.0, help="start no work after this many seconds")
    p.add_argument("--bench-iterations", type=int, default=50, help="edge-mer bench --iterations (default 50)")
    p.add_argument("--bench-duration", type=float, default=10.0, help="edge-mer bench --duration (default 10)")
    p.add_argument("--no-bench", action="store_true", help="skip edge-mer bench")
    p.add_argument("--backend", choices=sorted(TITLES), default="tensorrt",
                   help="backend checked (onnxruntime: against itself, a self-test that needs no GPU)")
    args = p.parse_args(argv)
    if not 1 <= args.samples <= 10000:
        p.error(f"--samples must be in 1..10000, got {args.samples}")
    return args


def _check(args: argparse.Namespace, cache_dir: Path | None) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    deadline = time.monotonic() + args.budget_s
    bundle = load_bundle(args.bundle or default_bundle_path())
    args.session = args.session or demo_session_path()
    options = BackendOptions(name=args.backend, onnxruntime=REFERENCE.onnxruntime,
                             tensorrt=TrtOptions(cache_dir=cache_dir))
    rows = check_models(bundle, options, args, deadline)
    left = deadline - time.monotonic()
    if args.no_bench:
        return rows, None
    return rows, run_bench(args, cache_dir, left) if left > 30 else {"error": "no time left for it (--budget-s)"}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the check and print the summary line; 0 when everything passed or the check cannot run here."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    started = time.monotonic()
    for name in dict.fromkeys((args.backend, "onnxruntime")):
        reason = backend_class(name).availability()
        if reason is not None:
            print(f"device check: skipped: {TITLES[name]} is not usable here: {reason}")
            return 0
    try:
        with tempfile.TemporaryDirectory(prefix="edge-mer-engines-") as tmp:
            rows, bench = _check(args, args.cache_dir or (Path(tmp) if args.backend == "tensorrt" else None))
    except (EdgeMerError, OSError) as exc:
        print(f"device check: failed: {exc}")
        return 1
    if args.json is not None:
        args.json.write_text(json.dumps({"backend": args.backend, "models": rows, "bench": bench}, indent=2,
                                        default=str), encoding="utf-8")
    print(summary_line(rows, bench, args.backend, time.monotonic() - started))
    return 1 if problems(rows, bench) else 0


if __name__ == "__main__":
    sys.exit(main())
