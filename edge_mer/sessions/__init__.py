"""Recorded sessions: the ``edge-mer-session/1`` directory format, replay sources and a recorder.

* :mod:`.format`: :class:`Session`, :class:`Label`, :func:`load_session`,
  :func:`write_session_json` (no media libraries imported).
* :mod:`.eeg_csv`: :func:`~.eeg_csv.read_eeg_header`, the EEG CSV's channel names.
* :mod:`.replay`: :func:`replay_sources` and the per-modality replay sources
  (OpenCV and soundfile are imported when a source opens).
* :mod:`.record`: :class:`SessionRecorder` (opt-in; used only when recording is asked for),
  writing its video with :mod:`.avi`'s MJPEG-in-AVI writer.

:func:`demo_session_path` is the small demo session shipped with the package.
"""
from __future__ import annotations

from edge_mer.sessions.format import (FORMAT, SESSION_JSON, Label, Session, demo_session_path, load_session,
                                      write_session_json)
from edge_mer.sessions.record import SessionRecorder
from edge_mer.sessions.replay import AudioReplaySource, EegReplaySource, VideoReplaySource, replay_sources

__all__ = [
    "FORMAT", "SESSION_JSON", "AudioReplaySource", "EegReplaySource", "Label", "Session",
    "SessionRecorder", "VideoReplaySource", "demo_session_path", "load_session", "replay_sources", "write_session_json",
]
