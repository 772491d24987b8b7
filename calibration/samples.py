"""Labelled, preprocessed samples and their batching into feed dicts.

Readers yield :class:`Sample` objects whose arrays come from the runtime's
own preprocessing; :func:`batched_feeds` turns them into the plain feed
dicts that calibrators and evaluators consume.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_mer.errors import ConfigError, InputError
from edge_mer.sessions.format import Session, load_session


@dataclass(frozen=True)
class Sample:
    """One model-ready input (no batch axis), its label, where it came from, and its group.

    ``group`` is the speaker or subject, so evaluations can hold whole people out.
    """

    array: np.ndarray
    label: str | None
    source: str
    group: str | None = None


def batched_feeds(samples: Iterable[Sample], input_name: str, batch_size: int = 32
                  ) -> Iterator[tuple[dict[str, np.ndarray], list[Sample]]]:
    """Stack samples of equal shape into ``({input_name: batch}, samples)`` pairs."""
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    pending: list[Sample] = []
    for sample in samples:
        if pending and sample.array.shape != pending[0].array.shape:
            yield {input_name: np.stack([s.array for s in pending])}, pending
            pending = []
        pending.append(sample)
        if len(pending) == batch_size:
            yield {input_name: np.stack([s.array for s in pending])}, pending
            pending = []
    if pending:
        yield {input_name: np.stack([s.array for s in pending])}, pending


def session_with(root: str | Path, key: str) -> Session:
    """The session in ``root``, which must name a ``key`` file ("video", "audio" or "eeg"); InputError otherwise."""
    try:
        session = load_session(root)
    except ConfigError as exc:
        raise InputError(f"session {root}: {exc}") from None
    if getattr(session, key) is None:
        raise InputError(f"session {root} has no {key} file (session.json has no {key!r})")
    return session
