"""``edge-mer adapt`` end to end: session + labels + base bundle -> cross-validated fits -> overlay + report."""
from __future__ import annotations

import dataclasses
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_mer import __version__
from edge_mer.adapt.collect import collect_modality, modality_encoders, run_config
from edge_mer.adapt.evaluate import EncoderResult, adapt_head, adapt_temperature
from edge_mer.adapt.head_onnx import OUTPUT, head_model
from edge_mer.adapt.labels import known_labels, session_labels
from edge_mer.adapt.options import AdaptOptions
from edge_mer.adapt.overlay_out import base_reference, check_out, write_overlay
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.loader import Bundle
from edge_mer.bundle.overlay import OVERLAY_FORMAT
from edge_mer.bundle.schema import Calibration, EncoderSpec, FileEntry, Metric, Provenance, TensorInfo
from edge_mer.config import to_dict
from edge_mer.errors import ConfigError, SensorError
from edge_mer.names import Modality
from edge_mer.sessions.format import Label, Session, load_session

log = logging.getLogger(__name__)

REPORT_FORMAT = "edge-mer-adapt-report/1"


@dataclass(frozen=True)
class Adaptation:
    """What ``edge-mer adapt`` made: the loaded overlay, each encoder's result, what was skipped and why."""

    bundle: Bundle
    results: dict[str, EncoderResult]
    skipped: dict[str, str]
    report: dict[str, Any]


def _split(options: AdaptOptions) -> str:
    return (f"{options.folds}-fold cross-validation over contiguous label blocks, training windows overlapping "
            "a held-out window purged")


def _calibration(result: EncoderResult, session: Session, options: AdaptOptions) -> Calibration:
    return Calibration(temperature=float(result.temperature or 1.0), dataset=f"session {session.root.name}",
                       split=f"fitted on all labelled windows; ECE and accuracy by {_split(options)}",
                       n=result.before.n, ece_before=min(result.before.ece, 1.0), ece_after=min(result.after.ece, 1.0),
                       mean_confidence=result.after.mean_confidence, accuracy=result.after.accuracy,
                       notes="per-user temperature, edge-mer adapt")


def _head_entry(result: EncoderResult, session: Session, options: AdaptOptions) -> tuple[EncoderSpec, str, bytes]:
    """The per-user head's encoder entry, its overlay path and its ONNX bytes."""
    spec, head = result.windows.spec, result.head
    embedding = next((o for o in spec.outputs if o.kind == "embedding"), None)
    data = head_model(head, spec.inputs[0], embedding=embedding)
    digest = hashlib.sha256(data).hexdigest()
    path = f"user/{result.windows.encoder}-{digest[:12]}.onnx"
    dataset, split = f"session {session.root.name}", _split(options)
    metrics = (Metric("accuracy", round(result.after.accuracy, 4), dataset, split, result.after.n,
                      f"before (shipped encoder): {result.before.accuracy:.4f}"),
               Metric("ece", round(result.after.ece, 4), dataset, split, result.after.n))
    entry = dataclasses.replace(
        spec, models={"fp32": FileEntry(path, digest)},
        outputs=(TensorInfo(OUTPUT, ("N", len(head.classes)), kind="probs", labels=head.classes),
                 *([dataclasses.replace(embedding, description="the user's standardised features")]
                   if embedding is not None else [])),
        label_map={c: c for c in head.classes}, metrics=metrics, precisions={}, calibration=None,
        provenance=Provenance(source="edge-mer adapt: multinomial logistic regression on standardised features "
                                     f"(l2 {options.head_l2:g})",
                              training_data=f"{dataset}: {result.before.n} labelled windows",
                              licence="the user's own data"),
        description=f"per-user EEG head over {', '.join(head.classes)} on the features of {result.windows.encoder}")
    return entry, path, data


def overlay_manifest(base: Bundle, results: dict[str, EncoderResult], session: Session, options: AdaptOptions
                     ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The overlay's manifest mapping and its files (relative path -> bytes)."""
    encoders, calibrations, files = {}, {}, {}
    for name, result in results.items():
        if result.method == "linear_head":
            entry, path, data = _head_entry(result, session, options)
            encoders[name] = to_dict(entry)
            files[path] = data
        else:
            calibrations[name] = to_dict(_calibration(result, session, options))
    manifest = {"format": OVERLAY_FORMAT, "name": f"{base.manifest.name}+user", "version": base.manifest.version,
                "base": base_reference(base, options.out), "encoders": encoders, "calibrations": calibrations,
                "description": f"per-user adaptation of {base.manifest.name} {base.manifest.version} by edge-mer "
                               f"adapt from session {session.root.name}"}
    return manifest, files


def _adapt_one(session: Session, modality: Modality, name: str | None, base: Bundle, segments: tuple[Label, ...],
               options: AdaptOptions) -> EncoderResult:
    config = run_config({modality: name} if name else {})
    windows = collect_modality(session, modality, base, config, segments, options.step_s)
    if modality == "eeg":
        return adapt_head(windows, segments, options.folds, options.head_l2, known_labels(base))
    return adapt_temperature(windows, segments, options.folds)


def _report(base: Bundle, session: Session, options: AdaptOptions, *, origin: str, segments: tuple[Label, ...],
            results: dict[str, EncoderResult], skipped: dict[str, str]) -> dict[str, Any]:
    """``adapt_report.json``: where the labels came from, the folds, and each encoder's before/after."""
    return {"format": REPORT_FORMAT, "edge_mer": __version__, "session": str(session.root.resolve()), "labels": origin,
            "segments": [[s.start, s.end, s.label] for s in segments], "base": base_reference(base, options.out),
            "folds": options.folds, "step_s": options.step_s,
            "meaning": "before: the base bundle as shipped; after: adapted. Both scored on the same labelled "
                       f"windows, each tested once by {_split(options)}.",
            "encoders": {n: r.to_json() for n, r in results.items()}, "skipped": skipped}


def adapt(options: AdaptOptions) -> Adaptation:
    """Fit, cross-validate and write the overlay ``options`` describe; one-line EdgeMerErrors otherwise."""
    base = load_bundle(options.bundle or default_bundle_path())
    base_reference(base, options.out)  # refuse an overlay base and ...
    check_out(options.out)  # ... an --out that is not ours, before minutes of replay
    session = load_session(options.session)
    segments, origin = session_labels(session, options.labels, base)
    results, skipped = {}, {}
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # as the daemon: small matrices, busy cores
        for modality, name in modality_encoders(base, session, options.encoders).items():
            try:
                result = _adapt_one(session, modality, name, base, segments, options)
            except (ConfigError, SensorError) as exc:
                if options.encoders:
                    raise
                log.warning("%s not adapted: %s", modality, exc)
                skipped[modality] = str(exc)
                continue
            results[result.windows.encoder] = result
    if not results:
        raise ConfigError("nothing to adapt: " + ("; ".join(f"{m}: {e}" for m, e in skipped.items())
                                                   or f"session {session.root} has no streams"))
    manifest, files = overlay_manifest(base, results, session, options)
    report = _report(base, session, options, origin=origin, segments=segments, results=results, skipped=skipped)
    bundle = write_overlay(Path(options.out), manifest, files, report)
    return Adaptation(bundle, results, skipped, report)
