"""Recorded sessions: the ``edge-mer-session/1`` directory format, replay sources and a recorder.

* :mod:`.format`: :class:`Session`, :class:`Label`, :func:`load_session`,
  :func:`write_session_json` (no media libraries imported).
* :mod:`.replay`: :func:`replay_sources` and the per-modality replay sources
  (OpenCV and soundfile are imported when a source opens).
* :mod:`.record`: :class:`SessionRecorder` (opt-in; used only when recording is asked for).

:data:`DEMO_SESSION` is the small demo session shipped with the package.
"""
from __future__ import annotations

from pathlib import Path

from edge_mer.sessions.format import FORMAT, SESSION_JSON, Label, Session, load_session, write_session_json
from edge_mer.sessions.record import SessionRecorder
from edge_mer.sessions.replay import AudioReplaySource, EegReplaySource, VideoReplaySource, replay_sources

#: The demo session in the package: ~8 s of video, speech and synthetic-board EEG (see its SOURCES.md).
DEMO_SESSION = Path(__file__).resolve().parents[1] / "assets" / "demo_session"

__all__ = [
    "DEMO_SESSION", "FORMAT", "SESSION_JSON", "AudioReplaySource", "EegReplaySource", "Label", "Session",
    "SessionRecorder", "VideoReplaySource", "load_session", "replay_sources", "write_session_json",
]
