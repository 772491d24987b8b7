"""What /healthz says: each source's state, model errors, and whether the daemon is ``ok``.

The daemon is ``degraded`` when a source is not running (failed, ended,
stopped), when a running source has sent nothing for longer than its
modality's ``stale_s`` (it shows as ``stalled``, with how long), or when a
modality's model (or the fusion) has failed :data:`ERROR_STREAK` ticks in a
row. Health is served without a token, so its texts carry no file paths or
URLs: :func:`scrub` replaces them with ``<path>``.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from edge_mer.names import HealthStatus, SourceStatus
from edge_mer.pipeline.scheduler import ErrorCount

#: A source that has never delivered is given this long after the run starts (cameras warm up, EEG fills).
STARTUP_GRACE_S = 5.0
# Anything with a slash in it (absolute or relative paths, URLs with their credentials) up to a delimiter.
_PATHLIKE = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*:/)?[^\s'\"()\[\]{},;]*/[^\s'\"()\[\]{},;]*")


def scrub(text: str | None) -> str | None:
    """``text`` with every path or URL replaced by ``<path>`` (health is readable without a token)."""
    return None if text is None else _PATHLIKE.sub("<path>", text)


@dataclass
class SourceState:
    """One source as the daemon sees it: its state, its last error, and what it has delivered."""

    state: SourceStatus = "running"
    error: str | None = None
    chunks: int = 0
    last_chunk_ns: int | None = None

    def to_json(self, now_ns: int, stale_s: float | None = None, since_ns: int | None = None) -> dict[str, Any]:
        """The /healthz entry; a running source silent for more than ``stale_s`` shows as ``stalled``."""
        age = None if self.last_chunk_ns is None else round((now_ns - self.last_chunk_ns) / 1e9, 3)
        state, error = self.state, self.error
        if state == "running" and stale_s is not None:
            if self.last_chunk_ns is not None:
                silent, limit = (now_ns - self.last_chunk_ns) / 1e9, stale_s
            else:
                silent = (now_ns - since_ns) / 1e9 if since_ns is not None else 0.0
                limit = stale_s + STARTUP_GRACE_S
            if silent > limit:
                state, error = "stalled", f"no data for {silent:.1f} s (stale after {stale_s:g} s)"
        return {"state": state, "error": scrub(error), "chunks": self.chunks, "last_chunk_age_s": age}


def health_status(states: Mapping[str, SourceState], stale_s: Mapping[str, float], errors: Mapping[str, ErrorCount],
                  now_ns: int, started_ns: int, decisions: int,
                  outputs: Mapping[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The /healthz object: per-source entries, model errors, the decision count, uptime, and the
    figures of outputs that report any (``outputs.mqtt``: its queue); they do not change ``status``."""
    sources = {m: s.to_json(now_ns, stale_s.get(m), started_ns) for m, s in states.items()}
    ok = all(s["state"] == "running" for s in sources.values()) and not any(e.repeated for e in errors.values())
    status: HealthStatus = "ok" if ok else "degraded"
    out: dict[str, Any] = {"status": status, "sources": sources, "decisions": decisions,
                           "uptime_s": round((now_ns - started_ns) / 1e9, 3)}
    failing = {k: {**e.to_json(), "last": scrub(e.last)} for k, e in errors.items() if e.total}
    if failing:
        out["model_errors"] = failing
    if outputs:
        out["outputs"] = dict(outputs)
    return out
