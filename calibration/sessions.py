"""Labelled sessions and held-out bundles built from the datasets in ../shared, for replay evaluation.

A session (format edge-mer-session/1) concatenates segments of one label each:
CK+48 faces animated into video, EMO-DB clips of one speaker as audio, and
GU EEG of one subject, so ``edge-mer run --replay DIR --fast`` can be scored
against the session's labels. :func:`heldout_bundle` swaps encoder files for
leave-one-out fold models, so the speaker and subject in the session were
never seen in training.
"""
from __future__ import annotations

import csv
import json
import logging
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_mer.preprocess.opencv import cv2
import numpy as np
import onnx
import soundfile

from edge_mer.bundle.loader import MANIFEST, load_bundle
from edge_mer.bundle.writer import file_entry, write_manifest
from edge_mer.errors import InputError
from edge_mer.results import Decision
from edge_mer_calibration.eeg import GU_CHANNELS, GU_RATE
from edge_mer_calibration.embeddings import OUTPUT, SURGERY, add_embedding, has_embedding

log = logging.getLogger(__name__)

CKPLUS_FOLDERS = {"happy": "happy", "sad": "sadness", "fear": "fear", "angry": "anger", "surprise": "surprise",
                  "disgust": "disgust"}
EMODB_LETTERS = {"happy": "F", "sad": "T", "fear": "A", "angry": "W", "disgust": "E", "neutral": "N",
                 "boredom": "L"}
GU_LETTERS = {"happy": "H", "sad": "S", "fear": "F"}
FPS = 15
FRAME_SIZE = (320, 240)


@dataclass(frozen=True)
class SessionRates:
    """Video fps and frame size; audio and EEG rates (None: the dataset's own, 22,050 Hz and 128 Hz)."""

    fps: int = FPS
    frame_size: tuple[int, int] = FRAME_SIZE
    audio_rate: int | None = None
    eeg_rate: int | None = None


def _video(path: Path, ckplus: Path, labels: Sequence[str], seconds: float, fps: int,
           size: tuple[int, int], offset: int = 0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    side = size[1] * 2 // 3  # the face fills two thirds of the height, centred
    x0, y0 = (size[0] - side) // 2, (size[1] - side) // 2
    seen: dict[str, int] = {}
    try:
        for label in labels:
            images = sorted((ckplus / CKPLUS_FOLDERS[label]).glob("*.png"))
            start = offset * 7 + seen.get(label, 0)  # another session, or a repeated label: other faces
            seen[label] = seen.get(label, 0) + int(seconds)
            for i in range(int(seconds * fps)):
                face = cv2.imread(str(images[(start + i // fps) % len(images)]), cv2.IMREAD_GRAYSCALE)
                frame = np.full((size[1], size[0], 3), 96, np.uint8)
                big = cv2.cvtColor(cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC), cv2.COLOR_GRAY2BGR)
                frame[y0:y0 + side, x0:x0 + side] = big
                writer.write(frame)
    finally:
        writer.release()


def _resampled(data: np.ndarray, rate: int, target: int | None) -> tuple[np.ndarray, int]:
    if target is None or target == rate:
        return data, rate
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(data, target // g, int(rate) // g, axis=0), target


def speech_clips(speech: Path, speaker: str, label: str) -> list[Path]:
    """The clips of ``label`` by ``speaker``: an EMO-DB speaker (``08``) or an English one (``ravdess_05``, ``tess_YAF``)."""
    if speaker.isdigit():
        if label not in EMODB_LETTERS:
            return []
        return sorted(p for p in (speech / "emodb").glob(f"{speaker}*.wav") if p.name[5] == EMODB_LETTERS[label])
    with (speech / "english" / "index.csv").open(newline="", encoding="utf-8") as handle:
        return [speech / "english" / row["path"] for row in csv.DictReader(handle)
                if row["speaker"] == speaker and row["label"] == label]


def _audio(path: Path, speech: Path, speaker: str, labels: Sequence[str], seconds: float,
           target_rate: int | None) -> None:
    pieces, rate, seen = [], None, {}
    for label in labels:
        clips = speech_clips(speech, speaker, label)
        if not clips:
            raise InputError(f"speaker {speaker} has no {label} clip")
        need, got, i = None, 0, seen.get(label, 0)
        while need is None or got < need:
            data, rate = soundfile.read(str(clips[i % len(clips)]), dtype="float32")
            need = int(seconds * rate)
            take = data[: need - got]
            pieces.append(take)
            got += len(take)
            i += 1
        seen[label] = i
    data, rate = _resampled(np.concatenate(pieces), rate, target_rate)
    soundfile.write(str(path), np.clip(data, -1.0, 1.0), rate, subtype="PCM_16")


def _eeg(path: Path, gu: Path, subject: str, labels: Sequence[str], seconds: float, target_rate: int | None) -> int:
    from scipy.io import loadmat

    n = int(seconds * GU_RATE)
    rows = []
    for k, label in enumerate(labels):
        # GU has only happy, sad and fear: another label's segment gets trial 2 of one of them in turn
        # (the person felt something the EEG head cannot name), so the EEG stays aligned with the labels.
        name = f"{subject}t1{GU_LETTERS[label]}" if label in GU_LETTERS else f"{subject}t2{'HSF'[k % 3]}"
        matrix = loadmat(str(gu / f"{name}.mat"))["normalizedMatrix"]
        if matrix.shape[0] < n:
            raise InputError(f"{subject} {label}: {matrix.shape[0]} samples, segment needs {n}")
        rows.append(matrix[:n])
    data, rate = _resampled(np.concatenate(rows), GU_RATE, target_rate)
    times = np.arange(len(data)) / rate
    header = "timestamp," + ",".join(GU_CHANNELS)
    np.savetxt(path, np.column_stack([times, data]), delimiter=",", header=header, comments="", fmt="%.6f")
    return rate


def build_session(shared: Path, out: Path, labels: Sequence[str] = ("happy", "sad", "fear"),
                  seconds: float = 8.0, speaker: str = "08", subject: str = "sub1",
                  rates: SessionRates = SessionRates(), face_offset: int = 0) -> Path:
    """Write a labelled session of ``len(labels)`` segments of ``seconds`` each into ``out``.

    ``speaker`` is an EMO-DB speaker (``08``) or an English one from
    ``speech/english/index.csv`` (``ravdess_05``, ``tess_YAF``). A label GU
    has no EEG for gets another emotion's recording (see ``_eeg``).
    ``rates`` sets the video's fps and size and resamples audio and EEG (the
    benchmark session: 30 fps 640x480, 16 kHz, 250 Hz like a Cyton board);
    ``face_offset`` starts each label's CK+48 faces further on, so sessions differ.
    """
    out.mkdir(parents=True, exist_ok=True)
    data = shared / "data"
    _video(out / "video.mp4", data / "face" / "ckplus48", labels, seconds, rates.fps, rates.frame_size, face_offset)
    _audio(out / "audio.wav", data / "speech", speaker, labels, seconds, rates.audio_rate)
    eeg_rate = _eeg(out / "eeg.csv", data / "eeg" / "gu", subject, labels, seconds, rates.eeg_rate)
    session = {"format": "edge-mer-session/1", "video": "video.mp4", "audio": "audio.wav", "eeg": "eeg.csv",
               "eeg_sampling_rate": eeg_rate,
               "labels": [{"start": i * seconds, "end": (i + 1) * seconds, "label": lb} for i, lb in enumerate(labels)],
               "origin": f"CK+48 faces; speaker {speaker}; GU EEG {subject} trial 1"}
    (out / "session.json").write_text(json.dumps(session, indent=2) + "\n")
    return out


def heldout_bundle(source: Path, out: Path, models: Mapping[str, Path]) -> Path:
    """A copy of bundle ``source`` whose encoders' fp32 files are replaced by ``models`` (name -> ONNX), rehashed.

    A model without the ``embedding`` output its encoder declares gets it (:mod:`edge_mer_calibration.embeddings`).
    """
    bundle = load_bundle(source)
    shutil.copytree(bundle.root, out)
    (out / MANIFEST).unlink()
    encoders = dict(bundle.manifest.encoders)
    for name, model in models.items():
        spec = bundle.encoder(name)
        rel = spec.models["fp32"].path
        proto = onnx.load(str(model))
        if any(o.kind == "embedding" and o.name == OUTPUT for o in spec.outputs) and not has_embedding(proto):
            # The fold models share the shipped architecture, so they get the shipped encoder's embedding.
            add_embedding(proto, name if name in SURGERY else spec.modality)
        onnx.save(proto, str(out / rel))
        encoders[name] = replace(spec, models={"fp32": file_entry(out, rel)}, precisions={})  # fp32 only
    write_manifest(out, replace(bundle.manifest, encoders=encoders))
    return out


def score_decisions(decisions: Iterable[Decision | Mapping[str, Any]], labels: Sequence[Mapping],
                    skip_s: float = 4.0) -> dict:
    """Top-1 accuracy of the fused label and of each valid modality against the session labels.

    ``decisions`` are :class:`~edge_mer.results.Decision` objects or their JSON
    objects (lines of ``edge-mer run``'s output). Decisions in the first
    ``skip_s`` seconds of a segment are left out, since their windows still
    hold the previous segment. Returns counts, accuracies and each modality's valid share.
    """
    fused_hits, n, per = 0, 0, {}
    for item in decisions:
        d = item if isinstance(item, Decision) else Decision.from_json(item)
        segment = next((s for s in labels if s["start"] + skip_s <= d.t < s["end"]), None)
        if segment is None:
            continue
        n += 1
        fused_hits += d.label == segment["label"]
        for result in d.modalities:
            stats = per.setdefault(result.modality, {"valid": 0, "hits": 0})
            if result.valid:
                stats["valid"] += 1
                stats["hits"] += result.label == segment["label"]
    modalities = {m: {"accuracy": s["hits"] / s["valid"] if s["valid"] else None, "valid_share": s["valid"] / n,
                      "valid": s["valid"]} for m, s in per.items()}
    return {"decisions": n, "fused_accuracy": fused_hits / n if n else None, "modalities": modalities}
