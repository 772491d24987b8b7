"""Fusion-head data: held-out encoder outputs paired by label across people and corpora.

No public dataset here has the face, voice and EEG of one person, so one row
pairs, for a drawn label, one output per modality of a model that never saw
that person (``training/heldout.py`` stores them), calibrated as the runtime
calibrates it. A modality whose data has no such label gives a row of a
random label: it must say something, and it cannot know. Rows are the head's
feed dicts (one ``[n, K]`` array per encoder input, zeros where absent, and
``mask``), as ``edge-mer export --head-calib/--head-eval`` reads them.

Pools built with ``embeddings=True`` also carry each row's encoder embedding
(the ``embedding`` arrays of ``heldout_outputs.npz``); a drawn row then gives
both, and the feeds gain ``<encoder>.embedding`` ``[n, D]`` arrays (zeros
where absent), named as the heads' embedding inputs. Drawing is unchanged, so
the same seed gives the same rows with or without them.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_mer.bundle.schema import Manifest
from edge_mer.errors import InputError
from edge_mer.numeric import temperature_scale

ENCODERS = ("face", "speech", "eeg", "eeg_cyton")
SLOTS = ("face", "speech", "eeg")  # eeg_cyton fills the eeg slot on a Cyton board
DROPOUT = 0.3
#: The encoder output (kind ``embedding``) whose rows a pool can carry; heads read it as ``<encoder>.embedding``.
EMBEDDING = "embedding"


def embedding_key(encoder: str) -> str:
    """The feed (and head input) name of ``encoder``'s embedding."""
    return f"{encoder}.{EMBEDDING}"


class Pools:
    """Calibrated held-out outputs of one split, indexed by encoder and label (and, optionally, their embeddings).

    ``embeddings=True`` keeps each row's ``embedding`` (every encoder's outputs must have one); the default
    leaves them out, as before they existed.
    """

    def __init__(self, manifest: Manifest, outputs: dict, split: str, embeddings: bool = False) -> None:
        self.rows: dict[str, np.ndarray] = {}
        self.embeddings: dict[str, np.ndarray] = {}
        self.by_label: dict[str, dict[str, np.ndarray]] = {}
        for name in ENCODERS:
            spec, data = manifest.encoders[name], outputs[name]
            keep = data["splits"] == split
            probs = data["probs"][keep].astype(np.float64)
            if spec.calibration is not None:
                probs = temperature_scale(probs, spec.calibration.temperature)
            self.rows[name] = probs
            if embeddings:
                if EMBEDDING not in data:
                    raise InputError(f"held-out outputs of {name} have no {EMBEDDING!r} rows, expected them with "
                                     "embeddings=True (training/heldout.py writes them)")
                self.embeddings[name] = data[EMBEDDING][keep].astype(np.float32)
            labels = data["labels"][keep]
            self.by_label[name] = {label: np.flatnonzero(labels == label) for label in spec.labels}

    def draw_index(self, name: str, label: str, rng: np.random.Generator) -> int:
        """The row of ``name`` drawn for ``label`` (any row when this modality's data has no such label)."""
        members = self.by_label[name].get(label)
        if members is None or members.size == 0:  # this modality's data has no such label: it cannot know
            members = np.arange(len(self.rows[name]))
        return int(members[rng.integers(members.size)])

    def draw(self, name: str, label: str, rng: np.random.Generator) -> np.ndarray:
        """The calibrated probabilities of a row drawn as :meth:`draw_index` draws it."""
        return self.rows[name][self.draw_index(name, label, rng)]


def pairings(pools: Pools, labels: tuple[str, ...], n: int, rng: np.random.Generator,
             present: tuple[str, ...] | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``n`` examples: per encoder [n, K] probabilities (zeros where absent), ``mask`` [n, 4], label indices.

    With a pool that carries embeddings, also ``<encoder>.embedding`` [n, D] of the same drawn rows.
    """
    y = rng.integers(len(labels), size=n)
    feeds = {name: np.zeros((n, pools.rows[name].shape[1]), dtype=np.float32) for name in ENCODERS}
    feeds |= {embedding_key(name): np.zeros((n, rows.shape[1]), dtype=np.float32)
              for name, rows in pools.embeddings.items()}
    mask = np.zeros((n, len(ENCODERS)), dtype=np.float32)
    for i in range(n):
        if present is None:
            keep = rng.random(len(SLOTS)) >= DROPOUT
            if not keep.any():
                keep[rng.integers(len(SLOTS))] = True
            chosen = [s for s, k in zip(SLOTS, keep) if k]
            chosen = [("eeg_cyton" if rng.random() < 0.5 else "eeg") if s == "eeg" else s for s in chosen]
        else:
            chosen = list(present)
        for name in chosen:
            row = pools.draw_index(name, labels[y[i]], rng)
            feeds[name][i] = pools.rows[name][row]
            if name in pools.embeddings:
                feeds[embedding_key(name)][i] = pools.embeddings[name][row]
            mask[i, ENCODERS.index(name)] = 1.0
    feeds["mask"] = mask
    return feeds, y


def load_outputs(path: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """Stored held-out outputs (``training/heldout.py``) as ``{encoder: {probs, labels, groups, splits[, embedding,
    corpus]}}``.

    Read without pickles: every array is numeric or unicode.
    """
    with np.load(path, allow_pickle=False) as stored:
        out: dict[str, dict[str, np.ndarray]] = {}
        for key in stored.files:
            encoder, _, name = key.partition("/")
            out.setdefault(encoder, {})[name] = stored[key]
    return out
