"""The three speech corpora in ../shared, their speaker folds, and microphone-like augmentation.

Labels: the canonical seven plus EMO-DB's ``boredom`` under its own name.
RAVDESS's ``calm`` is mapped to ``neutral``: RAVDESS records it as a second
neutral delivery of the same sentences (its authors' "neutral/calm"
baseline), no other corpus has it, and a label that exists in one corpus
cannot be learnt across corpora. ``boredom`` stays (its valence/arousal
differ from neutral's), and leave-one-corpus-out figures on EMO-DB are given
both over the six labels the other corpora share and over all seven.

Augmentation simulates what a real microphone does to a studio clip, on the
16 kHz waveform before edge-mer's own preprocessing: gain (-12..+6 dB,
clipping at full scale), band-limiting to an 8 kHz sample rate and back (a
4 kHz bandwidth, like a cheap or telephone-grade capture), room
reverberation (a synthetic exponentially decaying impulse response, RT60
0.15-0.8 s) and additive noise (white, pink or brown, 5-30 dB SNR).
"""
from __future__ import annotations

import csv
import hashlib
import json
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from edge_mer.preprocess.audio import AudioParams, AudioPreprocessor
from edge_mer.preprocess.base import Invalid
from edge_mer.preprocess.resample import resample

EMODB_LETTERS = {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy", "T": "sad", "N": "neutral"}
ENGLISH_MAP = {"calm": "neutral"}
LABELS = ("angry", "boredom", "disgust", "fear", "happy", "sad", "surprise", "neutral")
CORPORA = ("emodb", "ravdess", "tess")
RATE = 16000
WINDOW_S, HOP_S = 2.0, 0.5
N_FOLDS = 4
AUGMENTED_PER_CLIP = 4
SEED = 1234
PARAMS = AudioParams(sample_rate=RATE, n_fft=512, win_length=400, hop_length=160, n_mels=64, fmin=20.0,
                     fmax=8000.0, log="db", top_db=80.0, cmvn="utterance", min_seconds=1.0, vad_threshold_db=-45.0)


@dataclass(frozen=True)
class Clip:
    corpus: str
    speaker: str
    label: int
    path: str
    audio: np.ndarray  # float32 mono at RATE, in [-1, 1]


def _read(path: Path) -> np.ndarray:
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=False)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    return resample(samples, rate, RATE).astype(np.float32) if rate != RATE else samples


def load_corpora(shared: Path) -> list[Clip]:
    """Every clip of EMO-DB, RAVDESS and TESS at 16 kHz, with canonical labels."""
    clips = []
    for path in sorted((shared / "data" / "speech" / "emodb").glob("*.wav")):
        label = LABELS.index(EMODB_LETTERS[path.name[5]])
        clips.append(Clip("emodb", f"emodb_{path.name[:2]}", label, path.name, _read(path)))
    english = shared / "data" / "speech" / "english"
    with (english / "index.csv").open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            label = LABELS.index(ENGLISH_MAP.get(row["label"], row["label"]))
            clips.append(Clip(row["corpus"], row["speaker"], label, row["path"], _read(english / row["path"])))
    return clips


def fold_of(clip: Clip, index_in_speaker: int) -> int:
    """The speaker-independent fold (0..3) whose test set holds this clip.

    EMO-DB: speakers 08-15 two per fold. RAVDESS: actors (1,2) fold 0,
    (3,4) fold 1, ... so each fold has three men and three women. TESS has
    two speakers: OAF's clips split between folds 0 and 1, YAF's between 2
    and 3, and a fold's training set leaves out the *whole* speaker
    (:func:`train_mask`), so every figure stays speaker-independent.
    """
    if clip.corpus == "emodb":
        return (int(clip.speaker[-2:]) - 8) // 2
    if clip.corpus == "ravdess":
        return ((int(clip.speaker[-2:]) - 1) // 2) % N_FOLDS
    return (0 if clip.speaker.endswith("OAF") else 2) + index_in_speaker % 2


def assign_folds(clips: list[Clip]) -> np.ndarray:
    seen: dict[str, int] = {}
    folds = []
    for clip in clips:
        folds.append(fold_of(clip, seen.get(clip.speaker, 0)))
        seen[clip.speaker] = seen.get(clip.speaker, 0) + 1
    return np.array(folds)


def train_mask(clips: list[Clip], folds: np.ndarray, fold: int) -> np.ndarray:
    """Clips a fold's model may train on: none of any speaker that has a clip in the fold's test set."""
    held = {c.speaker for c, f in zip(clips, folds) if f == fold}
    return np.array([c.speaker not in held for c in clips])


def _noise(rng: np.random.Generator, n: int) -> np.ndarray:
    white = rng.standard_normal(n)
    colour = rng.integers(3)
    if colour == 0:
        return white
    spectrum = np.fft.rfft(white)
    freqs = np.maximum(np.fft.rfftfreq(n), 1.0 / n)
    spectrum /= freqs ** (0.5 if colour == 1 else 1.0)  # pink (1/f power) or brown (1/f^2)
    return np.fft.irfft(spectrum, n)


def _room(rng: np.random.Generator) -> np.ndarray:
    rt60 = rng.uniform(0.15, 0.8)
    t = np.arange(int(rt60 * RATE)) / RATE
    tail = rng.standard_normal(t.size) * np.exp(-6.9 * t / rt60)  # -60 dB at rt60
    tail[: int(0.002 * RATE)] = 0.0
    ir = tail * rng.uniform(0.1, 0.5) / np.sqrt(np.sum(tail ** 2) + 1e-12)
    ir[0] = 1.0
    return ir


def augment(audio: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One microphone-like rendering of ``audio`` (see the module docstring)."""
    x = audio.astype(np.float64)
    if rng.random() < 0.5:
        ir = _room(rng)
        x = np.fft.irfft(np.fft.rfft(x, x.size + ir.size) * np.fft.rfft(ir, x.size + ir.size))[: x.size]
    if rng.random() < 0.4:
        x = resample(resample(x.astype(np.float32), RATE, 8000), 8000, RATE)[: audio.size].astype(np.float64)
    if rng.random() < 0.7:
        power = np.mean(x ** 2) + 1e-12
        noise = _noise(rng, x.size)
        snr_db = rng.uniform(5.0, 30.0)
        x = x + noise * np.sqrt(power / (np.mean(noise ** 2) + 1e-12) / 10 ** (snr_db / 10))
    peak = np.max(np.abs(x)) + 1e-9
    x = x / peak * np.max(np.abs(audio)) * 10 ** (rng.uniform(-12.0, 6.0) / 20)
    return np.clip(x, -1.0, 1.0).astype(np.float32)


def windows(audio: np.ndarray) -> list[np.ndarray]:
    """The 2 s windows at a 0.5 s hop the daemon would see (the whole clip when shorter)."""
    size, hop = int(WINDOW_S * RATE), int(HOP_S * RATE)
    if audio.size <= size:
        return [audio]
    return [audio[i:i + size] for i in range(0, audio.size - size + 1, hop)]


def features(pre: AudioPreprocessor, audio: np.ndarray) -> np.ndarray | None:
    """edge-mer's features of one window (int16 as a microphone delivers it), None when the gate says silence."""
    feats = pre.process((audio * 32767).astype(np.int16), RATE)
    return None if isinstance(feats, Invalid) else feats


def clip_windows(pre: AudioPreprocessor, audio: np.ndarray) -> list[np.ndarray]:
    """Features of every non-silent daemon window of a clip (at least one: the loudest window)."""
    out = [f for f in (features(pre, w) for w in windows(audio)) if f is not None]
    if not out:
        loudest = max(windows(audio), key=lambda w: float(np.mean(w.astype(np.float64) ** 2)))
        feats = pre.process((loudest / (np.max(np.abs(loudest)) + 1e-9) * 16000).astype(np.int16), RATE)
        if isinstance(feats, Invalid):
            raise RuntimeError(f"no window passes the loudness gate even normalised: {feats.reason}")
        out = [feats]
    return out


def training_crops(pre: AudioPreprocessor, audio: np.ndarray, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """``n`` augmented renderings of a clip, each a random 2 s window through the runtime's features."""
    size = int(WINDOW_S * RATE)
    out = []
    for _ in range(n * 3):  # a crop of silence is redrawn
        start = int(rng.integers(0, max(audio.size - size, 0) + 1))
        feats = features(pre, augment(audio[start:start + size], rng))
        if feats is not None:
            out.append(feats)
        if len(out) == n:
            break
    return out


def params_frames(params: AudioParams) -> int:
    """Frames in one 2 s window for these parameters."""
    return 1 + int(WINDOW_S * params.sample_rate) // params.hop_length


class Features:
    """Per clip: the clean daemon windows (scoring) and the augmented crops (training)."""

    def __init__(self, clean: list[list[np.ndarray]], augmented: list[list[np.ndarray]], labels: np.ndarray) -> None:
        self.clean, self.augmented, self.labels = clean, augmented, labels

    @classmethod
    def compute(cls, clips: list[Clip], seed: int = SEED) -> Features:
        pre = AudioPreprocessor(PARAMS)
        rng = np.random.default_rng(seed)
        return cls([clip_windows(pre, c.audio) for c in clips],
                   [training_crops(pre, c.audio, rng, AUGMENTED_PER_CLIP) for c in clips],
                   np.array([c.label for c in clips]))


def cached_features(clips: list[Clip], cache: Path) -> Features:
    """The features of ``clips``, from ``cache`` when it was written for the same clips and parameters.

    The cache holds plain lists and arrays (no class), so any script can read it.
    """
    key = hashlib.sha256(json.dumps([[c.path, c.label] for c in clips] + [repr(PARAMS), SEED,
                                                                           AUGMENTED_PER_CLIP]).encode()).hexdigest()
    if cache.is_file():
        with cache.open("rb") as handle:
            stored_key, stored = pickle.load(handle)  # our own cache file, written below
        if stored_key == key:
            return Features(*stored)
    data = Features.compute(clips)
    with cache.open("wb") as handle:
        pickle.dump((key, (data.clean, data.augmented, data.labels)), handle)
    return data
