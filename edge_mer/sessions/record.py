"""Record the daemon's input streams into a new session directory (opt-in; nothing else imports this).

::

    with SessionRecorder("runs/2024-05-01", start_ns=time.monotonic_ns()) as rec:
        for modality, chunk, info in streams:
            rec.add(modality, chunk, info)

writes ``video.avi`` (MJPEG in AVI at the stream's fps), ``audio.wav``
(soundfile, float32 by default or PCM16, at the stream's rate) and ``eeg.csv``
(header: channel names then ``timestamp``; one row per sample) for the
modalities that deliver chunks, and ``session.json`` naming them (plus
``eeg_sampling_rate``, a ``recording`` object, and any labels or extra keys
given to the constructor). The recording start (session time 0) is
``start_ns`` on the chunks' clock or, when None, the time of the oldest sample
of the first chunk added.

A recording survives ``kill -9`` up to its last chunk: ``session.json`` is
written (atomically) at the start, when session time 0 is fixed and when each
file is created, with ``"recording": {"complete": false}`` (``close`` sets
true); every chunk reaches the operating system before ``add`` returns (one
unbuffered write per video frame or EEG chunk; libsndfile writes through, and
reads a WAV whose header was never finalised by its size; see
:class:`~edge_mer.sessions.avi.MjpegAviWriter` for the video).

How chunk times become file positions (the files have no timestamps except
the EEG CSV, so position *is* time when replayed):

* video: a frame with session time ``t`` belongs in slot ``j = round(t * fps)``.
  Slots skipped since the last frame are filled by repeating the previous frame
  (the first frame fills the slots before it), and a frame whose slot is already
  written is dropped. Replayed frame ``i`` at ``i / fps`` therefore shows the
  newest frame captured by then, within half a frame period.
* audio: samples are appended back to back. A chunk whose first sample is due
  more than 0.1 s (``AUDIO_SLACK_S``) after the end of what was written
  (dropped buffers) is preceded by that much silence; one more than 0.1 s early
  (clock drift, overlap) loses its leading samples. Jitter below 0.1 s is left
  alone, so continuous audio is written sample-exact.
* EEG: every sample is written with its own timestamp, ``t_chunk - (n-1-k)/rate``
  for sample ``k`` of ``n`` (the chunk's time is that of its newest sample);
  a chunk within 0.1 s of continuing the previous one continues on the sample
  clock instead, so arrival jitter never makes times go backwards.

Samples and frames before the recording start are dropped. Frames of another
size than the first are resized to it (with a warning); a frame's grey or BGRA
layout is converted to BGR. The directory must not exist: the recorder
creates it and never writes into an existing one.
"""
from __future__ import annotations

import csv
import io
import logging
import math
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO

import numpy as np

from edge_mer.errors import ConfigError, InputError, SensorError
from edge_mer.names import MODALITIES
from edge_mer.preprocess.audio import to_mono
from edge_mer.sessions.avi import MjpegAviWriter, write_all
from edge_mer.sessions.eeg_csv import TIMESTAMP_COLUMN
from edge_mer.sessions.format import Label, Session, load_session, write_session_json
from edge_mer.sources.base import Chunk, StreamInfo

log = logging.getLogger(__name__)

VIDEO_FILE, AUDIO_FILE, EEG_FILE = "video.avi", "audio.wav", "eeg.csv"
AUDIO_SLACK_S = 0.1
_AUDIO_SUBTYPES = ("FLOAT", "PCM_16")


def check_new_directory(directory: Path) -> None:
    """Raise a one-line ConfigError unless ``directory`` is new or an empty directory (never a symlink).

    A recording never writes beside other files, so it can never overwrite one.
    """
    try:
        taken = directory.is_symlink() or (directory.exists() and (not directory.is_dir()
                                                                   or any(directory.iterdir())))
    except OSError as exc:
        raise ConfigError(f"record directory {directory} cannot be looked at: {exc.strerror or exc}") from None
    if taken:
        raise ConfigError(f"record directory {directory} already exists: expected a new path or an empty directory "
                          "(the recorder never writes beside other files)")


class SessionRecorder:
    """Writes chunks of the three modalities into a new session directory; see the module doc.

    ``add`` may be called from several threads. ``close`` (or leaving the
    ``with`` block, also on an exception) finishes the files and marks
    ``session.json`` complete; afterwards :attr:`session` is the loaded result.
    """

    def __init__(self, directory: str | Path, *, start_ns: int | None = None, audio_subtype: str = "FLOAT",
                 labels: Iterable[Label | Mapping[str, Any]] = (), extra: Mapping[str, Any] | None = None) -> None:
        self.directory = Path(directory)
        if start_ns is not None and (not isinstance(start_ns, int) or isinstance(start_ns, bool)):
            raise ConfigError(f"start_ns={start_ns!r}: expected an integer (nanoseconds) or None")
        if audio_subtype not in _AUDIO_SUBTYPES:
            raise ConfigError(f"audio_subtype={audio_subtype!r}: expected one of {', '.join(_AUDIO_SUBTYPES)}")
        if "recording" in (extra or {}):
            raise ConfigError("extra key 'recording': the recorder writes it; expected another name")
        self._labels = tuple(lb if isinstance(lb, Label) else _label(lb) for lb in labels)
        self._extra = dict(extra or {})
        check_new_directory(self.directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except FileExistsError:  # a file appeared there since the check
            check_new_directory(self.directory)
            raise
        except OSError as exc:
            raise ConfigError(f"cannot create the recording directory {self.directory}: "
                              f"{exc.strerror or exc}") from None
        self.start_ns = start_ns
        self.audio_subtype = audio_subtype
        self.session: Session | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._infos: dict[str, StreamInfo] = {}
        self._video: MjpegAviWriter | None = None
        self._resize_warned = False
        self._audio: Any = None
        self._samples_written = 0
        self._eeg_file: BinaryIO | None = None
        self._eeg_rows = 0
        self._eeg_last_t: float | None = None
        self._start_unix: float | None = None
        self._write_json(complete=False)

    # -- public -------------------------------------------------------------------------------------------

    def __enter__(self) -> SessionRecorder:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def counts(self) -> dict[str, int]:
        """Frames, audio samples and EEG rows written so far, by modality."""
        frames = 0 if self._video is None else self._video.frames
        return {"face": frames, "speech": self._samples_written, "eeg": self._eeg_rows}

    def add(self, modality: str, chunk: Chunk, info: StreamInfo) -> None:
        """Append one chunk of ``modality`` (``"face"``, ``"speech"`` or ``"eeg"``) described by ``info``."""
        if modality not in MODALITIES:
            raise InputError(f"modality {modality!r}: expected face, speech or eeg")
        if info.modality != modality:
            raise InputError(f"chunk added as {modality!r} with a {info.modality!r} StreamInfo")
        if not math.isfinite(info.rate) or info.rate <= 0:
            raise InputError(f"{modality} stream rate {info.rate}: expected a number > 0")
        with self._lock:
            if self._closed:
                raise SensorError(f"session recorder for {self.directory} is closed")
            first = self._infos.setdefault(modality, info)
            if (first.rate, first.channel_names) != (info.rate, info.channel_names):
                raise InputError(f"{modality} stream changed from {first.rate:g} Hz {list(first.channel_names)} "
                                 f"to {info.rate:g} Hz {list(info.channel_names)} during the recording")
            before = self._json_state()
            if modality == "face":
                self._add_frame(chunk, info)
            elif modality == "speech":
                self._add_audio(chunk, info)
            else:
                self._add_eeg(chunk, info)
            if self._json_state() != before:  # a new file or the start time: a killed recording must name them
                self._write_json(complete=False)

    def close(self) -> None:
        """Finish the media files and write the complete ``session.json`` (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            failed = [name for name, handle in (("video", self._video), ("audio", self._audio),
                                                 ("eeg", self._eeg_file)) if not _closed_cleanly(name, handle)]
            try:
                # A file that could not be finished (a full disk) keeps the recording marked incomplete.
                self._write_json(complete=not failed)
            except OSError as exc:
                failed.append(f"session.json ({exc.strerror or exc})")
            if failed:
                raise SensorError(f"recording {self.directory} could not be finished: {', '.join(failed)}; "
                                  "what was written before stays replayable")
            self.session = load_session(self.directory)
            log.info("recorded session %s: %s", self.directory, self.counts)

    # -- session.json -----------------------------------------------------------------------------------------

    def _json_state(self) -> tuple[object, ...]:
        return self._video is not None, self._audio is not None, self._eeg_file is not None, self._start_unix

    def _write_json(self, *, complete: bool) -> None:
        fields: dict[str, Any] = {}
        if self._video is not None:
            fields["video"] = VIDEO_FILE
        if self._audio is not None:
            fields["audio"] = AUDIO_FILE
        if self._eeg_file is not None:
            rate = self._infos["eeg"].rate
            fields.update(eeg=EEG_FILE, eeg_sampling_rate=int(rate) if float(rate).is_integer() else rate)
        recording: dict[str, Any] = {"complete": complete}
        if self._start_unix is not None:
            recording["start_unix_s"] = self._start_unix
        write_session_json(self.directory, labels=self._labels, extra={**self._extra, "recording": recording},
                           **fields)

    # -- per modality -----------------------------------------------------------------------------------------

    def _session_s(self, t_ns: int) -> float:
        return (t_ns - self.start_ns) / 1e9  # type: ignore[operator]

    def _origin(self, chunk: Chunk, span_s: float) -> None:
        if self.start_ns is None:
            self.start_ns = chunk.t_ns - round(span_s * 1e9)
        if self._start_unix is None:
            # Chunk times are time.monotonic_ns() in the daemon; other clocks give no wall-clock start.
            unix = time.time() - (time.monotonic_ns() - self.start_ns) / 1e9
            self._start_unix = round(unix, 3) if 1e9 < unix < 1e11 else None

    def _add_frame(self, chunk: Chunk, info: StreamInfo) -> None:
        frame = _bgr(chunk.data)
        self._origin(chunk, 0.0)
        slot = round(self._session_s(chunk.t_ns) * info.rate)
        written = self.counts["face"]
        if slot < written:
            return  # its slot is taken (or it precedes the start): drop
        if self._video is None:
            height, width = frame.shape[:2]
            self._video = MjpegAviWriter(self.directory / VIDEO_FILE, (width, height), float(info.rate))
        size = self._video.size
        if (frame.shape[1], frame.shape[0]) != size:
            import cv2

            if not self._resize_warned:
                log.warning("video frames changed size to %dx%d; resizing to %dx%d for %s", frame.shape[1],
                            frame.shape[0], *size, VIDEO_FILE)
                self._resize_warned = True
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        first = written == 0
        if first:
            self._video.write(frame)  # the first frame also fills the slots before it
        for _ in range(slot - written):
            self._video.repeat()  # the previous frame fills the slots skipped since
        if not first:
            self._video.write(frame)

    def _add_audio(self, chunk: Chunk, info: StreamInfo) -> None:
        if np.asarray(chunk.data).size == 0:
            return
        samples = to_mono(chunk.data)
        rate = round(info.rate)
        if abs(info.rate - rate) > 1e-6:
            raise InputError(f"audio rate {info.rate} Hz: a WAV file needs a whole number of Hz")
        n = samples.shape[0]
        self._origin(chunk, (n - 1) / rate)
        first = round(self._session_s(chunk.t_ns) * rate) - (n - 1)  # index the chunk's first sample is due at
        if first < 0:  # samples before the recording start are dropped
            samples, first = samples[-first:], 0
        if self._audio is None:
            import soundfile as sf

            path = self.directory / AUDIO_FILE
            try:
                self._audio = sf.SoundFile(str(path), "w", samplerate=rate, channels=1, format="WAV",
                                           subtype=self.audio_subtype)
            except (RuntimeError, OSError) as exc:
                raise SensorError(f"cannot write {path}: {exc}") from None
            self._write_audio(np.zeros(first, dtype=np.float32))  # align the first chunk with the start
        gap = first - self._samples_written
        slack = round(AUDIO_SLACK_S * rate)
        if gap > slack:  # samples missing (dropped buffers): fill with silence
            self._write_audio(np.zeros(gap, dtype=np.float32))
        elif gap < -slack:  # samples due earlier than what is written (drift, overlap): drop the overlap
            samples = samples[min(-gap, samples.shape[0]):]
        self._write_audio(samples)

    def _write_audio(self, samples: np.ndarray) -> None:
        if samples.size:
            self._audio.write(samples)
            self._samples_written += samples.shape[0]

    def _add_eeg(self, chunk: Chunk, info: StreamInfo) -> None:
        data = np.asarray(chunk.data)
        if data.ndim == 1:
            data = data[np.newaxis]
        if data.ndim != 2 or data.dtype.kind not in "fiu":
            raise InputError(f"eeg chunk has shape {data.shape} dtype {data.dtype}: expected real [channels, n]")
        channels, n = data.shape
        if n == 0:
            return
        names = info.channel_names or tuple(f"ch{i + 1}" for i in range(channels))
        if len(names) != channels:
            raise InputError(f"eeg chunk has {channels} channels but the stream names {len(names)}: {list(names)}")
        if TIMESTAMP_COLUMN in names:
            raise InputError(f"eeg channel name {TIMESTAMP_COLUMN!r} clashes with the timestamp column")
        self._origin(chunk, (n - 1) / info.rate)
        newest = self._session_s(chunk.t_ns)
        times = newest - (n - 1 - np.arange(n)) / info.rate
        last = self._eeg_last_t
        if last is not None and abs(times[0] - (last + 1 / info.rate)) <= AUDIO_SLACK_S:
            # Arrival jitter: continue on the sample clock, as audio does, so times never go backwards.
            times = last + (1 + np.arange(n)) / info.rate
        keep = times >= 0
        if keep.any():
            self._eeg_last_t = float(times[keep][-1])
        if self._eeg_file is None:
            path = self.directory / EEG_FILE
            try:
                self._eeg_file = open(path, "xb", buffering=0)  # noqa: SIM115 - closed in close()
            except OSError as exc:
                raise SensorError(f"cannot write {path}: {exc.strerror or exc}") from None
            write_all(self._eeg_file, _csv_bytes([[*names, TIMESTAMP_COLUMN]]))
        values = data.astype(np.float64).T[keep].tolist()
        stamps = [round(t, 9) for t in times[keep].tolist()]
        # Whole rows in one unbuffered write: a kill never leaves half a row, nor rows in a buffer.
        write_all(self._eeg_file, _csv_bytes(row + [t] for row, t in zip(values, stamps)))
        self._eeg_rows += len(stamps)


def _csv_bytes(rows: Iterable[list[Any]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    return text.getvalue().encode("utf-8")


def _closed_cleanly(name: str, handle: Any) -> bool:
    """Close one of the recording's files; False (logged) when that fails, e.g. on a full disk."""
    if handle is None:
        return True
    try:
        handle.close()
    except (OSError, RuntimeError, ValueError) as exc:  # soundfile's LibsndfileError is a RuntimeError
        log.error("recording: closing the %s file failed: %s", name, exc)
        return False
    return True


def _label(item: Mapping[str, Any]) -> Label:
    try:
        return Label(item["start"], item["end"], item["label"],
                     {k: v for k, v in item.items() if k not in ("start", "end", "label")})
    except KeyError as exc:
        raise ConfigError(f"label {dict(item)!r} lacks {exc.args[0]!r}: expected start, end and label") from None


def _bgr(data: np.ndarray) -> np.ndarray:
    """A uint8 HxWx3 BGR frame from HxW, HxWx1, HxWx3 or HxWx4 (BGRA) uint8."""
    frame = np.asarray(data)
    if frame.dtype != np.uint8:
        raise InputError(f"video frame dtype {frame.dtype}: expected uint8")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        frame = np.repeat(frame.reshape(frame.shape[0], frame.shape[1], 1), 3, axis=2)
    elif frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[:, :, :3]
    elif not (frame.ndim == 3 and frame.shape[2] == 3):
        raise InputError(f"video frame shape {frame.shape}: expected HxW, HxWx3 (BGR) or HxWx4")
    return np.ascontiguousarray(frame)
