"""Camera source: OpenCV capture on a thread that always keeps only the newest frame.

``CameraConfig.device`` is a camera index (``"0"``), a device node
(``/dev/video0``), a video file, a URL (``rtsp://...``, ``http://...``) or, with
``api = "gstreamer"``, a GStreamer pipeline. A Jetson CSI camera (Argus)
reads through a pipeline ending in an appsink that drops stale buffers, e.g.::

    nvarguscamerasrc sensor-id=0 ! video/x-raw(memory:NVMM),width=1280,height=720,framerate=30/1
    ! nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR
    ! appsink drop=1 max-buffers=1

(one line in the config; OpenCV must be built with GStreamer, as JetPack's
``python3-opencv`` is and the PyPI ``opencv-python`` wheels are not).

A reader thread owns the ``cv2.VideoCapture``; each frame overwrites a
one-slot handoff, so a slow consumer gets the newest frame and a count of the
ones it missed, never a backlog. A supervisor thread watches the reader: when
frames stop (a failed read, or none within ``read_timeout_s``) it abandons
that capture and reconnects with exponential backoff. A stuck ``read()``
cannot be interrupted from Python, so an abandoned reader releases its capture
whenever its read returns. A video file is played like a camera (paced at its
frame rate) and ends the iteration at its end; with ``pace=False`` it yields
every frame as fast as the consumer takes them, stamped with the file's clock.
Undecodable frames of a file are skipped
(:class:`~edge_mer.sources.video_file.FileFrames`, which the session replay
uses too). :meth:`CameraSource.open` fails (``SensorError``) unless the device
opens and delivers a first frame; later failures reconnect.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from edge_mer.preprocess.opencv import cv2
import numpy as np

from edge_mer.config import require
from edge_mer.errors import SensorError
from edge_mer.sources.backoff import Backoff, ReconnectPolicy
from edge_mer.sources.base import Chunk, Source, StreamInfo
from edge_mer.sources.video_file import FileFrames, cv_error_line, read_capture

log = logging.getLogger(__name__)

DeviceKind = Literal["index", "node", "file", "url", "pipeline"]

_API_FLAGS = {"auto": "CAP_ANY", "gstreamer": "CAP_GSTREAMER", "ffmpeg": "CAP_FFMPEG", "v4l2": "CAP_V4L2"}
OPEN_TIMEOUT_S = 10.0  # URLs and pipelines: longest wait for a stream to open (FFmpeg/GStreamer honour it)
FIRST_FRAME_GRACE_S = 3.0  # extra time for the first frame after (re)connecting: sensors warm up
CLOSE_WAIT_S = 0.45  # close() waits this long for the threads, inside the 0.5 s contract
DEFAULT_FPS = 30.0  # reported when neither the device nor the config knows its rate
MAX_CAMERA_INDEX = 9999


@dataclass(frozen=True)
class CameraConfig:
    """OpenCV capture: ``device`` is an index ("0"), a file, an RTSP URL or a GStreamer pipeline.

    ``api`` picks the OpenCV backend (``gstreamer`` for Jetson CSI pipelines).
    Width/height/fps of 0 keep the device's defaults. When frames stop, the
    capture reconnects with exponential backoff from ``reconnect_min_s`` to
    ``reconnect_max_s``; ``max_failures`` consecutive failed reconnects (0 =
    never give up) end the source.
    """

    device: str = "0"
    api: Literal["auto", "gstreamer", "ffmpeg", "v4l2"] = "auto"
    width: int = 0
    height: int = 0
    fps: float = 0.0
    read_timeout_s: float = 2.0
    reconnect_min_s: float = 0.5
    reconnect_max_s: float = 10.0
    max_failures: int = 0

    def __post_init__(self) -> None:
        require(self.device != "", "device must name a camera index, file, URL or pipeline")
        if _is_index(self.device):
            require(len(self.device) <= 4, f"device={_shown(self.device)}: a camera index must be in "
                                           f"0..{MAX_CAMERA_INDEX}")
        require(self.width >= 0 and self.height >= 0 and self.fps >= 0, "width, height and fps must be >= 0")
        require(0 < self.reconnect_min_s <= self.reconnect_max_s,
                f"need 0 < reconnect_min_s <= reconnect_max_s, got {self.reconnect_min_s} and {self.reconnect_max_s}")
        require(self.read_timeout_s > 0, f"read_timeout_s must be > 0, got {self.read_timeout_s}")
        require(self.max_failures >= 0, f"max_failures must be >= 0, got {self.max_failures}")


def _is_index(device: str) -> bool:
    return device.isascii() and device.isdigit()  # "²".isdigit() holds, but int() refuses it


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 40 else repr(value[:37]) + "..."


def device_kind(device: str, api: str = "auto") -> DeviceKind:
    """Classify ``CameraConfig.device``: camera index, device node, video file, URL or GStreamer pipeline."""
    if _is_index(device):
        return "index"
    if api == "gstreamer" or " ! " in device:
        return "pipeline"
    if "://" in device:
        return "url"
    path = Path(device)
    if path.exists() and not path.is_file():
        return "node"  # /dev/video0 and the like: a live camera addressed by path
    return "file"


@dataclass
class _Frame:
    image: np.ndarray
    t_ns: int
    index: int
    pos_ms: float


class CameraSource(Source):
    """Frames of one camera (or video file) as BGR ``Chunk`` objects; see the module docstring.

    ``meta``: ``frame_index`` (frames captured since open), ``device_ts_ms``
    (``CAP_PROP_POS_MSEC``), ``dropped`` (total frames overwritten before the
    consumer took them) and ``reconnects``. ``t_ns`` is ``time.monotonic_ns()``
    at capture, or for a file with ``pace=False`` its position in nanoseconds.
    """

    kind = "camera"

    def __init__(self, config: CameraConfig, *, pace: bool = True) -> None:
        super().__init__()
        self.config = config
        self.pace = pace
        self._kind = device_kind(config.device, config.api)
        self._name = f"camera {config.device!r}"
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._slot: _Frame | None = None
        self._done = False  # no more frames will come (end of file, closed, or gave up)
        self._error: SensorError | None = None
        self._generation = 0  # bumped to abandon a reader whose capture stalled
        self._reader_ended = False
        self._last_frame_s = 0.0
        self._frames = 0
        self._dropped = 0
        self._reconnects = 0
        self._fps = DEFAULT_FPS
        self._supervisor: threading.Thread | None = None
        self._readers: list[threading.Thread] = []

    @property
    def is_file(self) -> bool:
        """Whether the device is a video file (exhausted at its end, never reconnected)."""
        return self._kind == "file"

    def open(self) -> None:
        """Open the capture (SensorError naming the device if it fails) and start the capture threads."""
        if self._supervisor is not None:
            return
        if self._kind == "file" and not Path(self.config.device).is_file():
            raise SensorError(f"{self._name}: no such video file (expected a camera index, a video file, "
                              "a URL or a GStreamer pipeline with api='gstreamer')")
        cap = self._open_capture()
        try:
            self._fps = self._frame_rate(cap)
            size = f"{int(cap.get(cv2.CAP_PROP_FRAME_WIDTH))}x{int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))}"
            backend = cap.getBackendName()
        except cv2.error as exc:
            cap.release()
            raise SensorError(f"{self._name}: OpenCV failed to describe it ({cv_error_line(exc)})") from None
        self._info = StreamInfo(modality="face", rate=self._fps,
                                description=f"{self._name} via {backend}, {size} @ {self._fps:g} fps")
        self._supervisor = threading.Thread(target=self._supervise, args=(cap,), name="camera-supervisor",
                                            daemon=True)
        self._supervisor.start()
        wait_s = FIRST_FRAME_GRACE_S + self.config.read_timeout_s
        if not self._first_frame(wait_s):
            self.close()
            error = self._error
            raise SensorError(str(error) if error is not None else
                              f"{self._name}: opened, but it delivered no frame (waited up to {wait_s:g} s; "
                              "expected a working camera or a video with decodable frames)")
        log.info("opened %s", self._info.description)

    def _first_frame(self, wait_s: float) -> bool:
        """Wait until the first connection delivers a frame (True), ends without one or ``wait_s`` passes."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while self._frames == 0 and not self._reader_ended and not self._done:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
            return self._frames > 0

    def close(self) -> None:
        """Stop the threads (within ~0.5 s) and release the capture; idempotent."""
        self._stop.set()
        with self._cond:
            self._done = True
            self._cond.notify_all()
        deadline = time.monotonic() + CLOSE_WAIT_S
        for thread in [self._supervisor, *self._readers]:
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
                if thread.is_alive():
                    # A backend blocked inside read(); the reader releases the capture when it returns.
                    log.warning("%s: %s still blocked in the capture backend after close()", self._name, thread.name)

    def __iter__(self) -> Iterator[Chunk]:
        _ = self.info  # SensorError unless open
        while True:
            with self._cond:
                while self._slot is None and not self._done and not self._stop.is_set():
                    self._cond.wait(0.25)
                if self._stop.is_set():
                    return
                frame, self._slot = self._slot, None
                self._cond.notify_all()  # an unpaced file reader waits for the slot to empty
                dropped, reconnects = self._dropped, self._reconnects
            if frame is None:
                if self._error is not None:
                    raise self._error
                return
            yield Chunk(t_ns=frame.t_ns, data=frame.image,
                        meta={"frame_index": frame.index, "device_ts_ms": frame.pos_ms, "dropped": dropped,
                              "reconnects": reconnects})

    # -- opening -----------------------------------------------------------------------------------------------

    def _open_capture(self) -> cv2.VideoCapture:
        """A ready capture with the configured size and rate, or SensorError naming the device."""
        cfg = self.config
        api = getattr(cv2, _API_FLAGS[cfg.api])
        if cfg.api == "gstreamer" and not cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
            raise SensorError(f"{self._name}: this OpenCV has no GStreamer backend (PyPI opencv-python wheels lack "
                              "it; on a Jetson use JetPack's python3-opencv)")
        params: list[int] = []
        if self._kind in ("url", "pipeline"):
            params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, int(OPEN_TIMEOUT_S * 1000),
                      cv2.CAP_PROP_READ_TIMEOUT_MSEC, int(cfg.read_timeout_s * 1000)]
        target: Any = int(cfg.device) if self._kind == "index" else cfg.device
        cap = None
        try:
            cap = cv2.VideoCapture(target, api, params) if params else cv2.VideoCapture(target, api)
            opened = cap.isOpened()
            if opened and self._kind != "file":
                self._apply_settings(cap)
        except cv2.error as exc:
            if cap is not None:
                cap.release()
            raise SensorError(f"{self._name}: OpenCV failed to open it ({cv_error_line(exc)})") from None
        if not opened:
            cap.release()
            raise SensorError(f"{self._name}: cannot open it as a {self._kind} with OpenCV api={cfg.api!r} "
                              "(expected a connected camera, a readable video, a reachable URL or a valid pipeline)")
        return cap

    def _apply_settings(self, cap: cv2.VideoCapture) -> None:
        cfg = self.config
        for prop, value, what in ((cv2.CAP_PROP_FRAME_WIDTH, cfg.width, "width"),
                                  (cv2.CAP_PROP_FRAME_HEIGHT, cfg.height, "height"),
                                  (cv2.CAP_PROP_FPS, cfg.fps, "fps")):
            if value and not cap.set(prop, float(value)):
                log.warning("%s: the backend refused %s=%g; keeping %g", self._name, what, value, cap.get(prop))

    def _frame_rate(self, cap: cv2.VideoCapture) -> float:
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        if 0 < fps < 1000:
            return fps
        # Some backends (GStreamer appsinks, MJPEG streams) do not report a rate.
        return float(self.config.fps) if self.config.fps > 0 else DEFAULT_FPS

    def _try_reconnect(self) -> cv2.VideoCapture | None:
        try:
            return self._open_capture()
        except SensorError as exc:
            log.warning("%s", exc)
            return None

    # -- threads -----------------------------------------------------------------------------------------------

    def _supervise(self, cap: cv2.VideoCapture | None) -> None:
        """Run one reader per connection; reconnect with backoff when frames stop (live devices only)."""
        cfg = self.config
        # A reconnect counts as failed until its capture delivers a frame, not when it merely opens.
        backoff = Backoff(ReconnectPolicy(cfg.reconnect_min_s, cfg.reconnect_max_s, cfg.max_failures),
                          self._stop, self._name, log)
        while not self._stop.is_set():
            if cap is not None:
                got_frame, outcome = self._run_connection(cap)
                cap = None
                if got_frame:
                    backoff.reset()
                if self._stop.is_set() or self.is_file:
                    break
                log.warning("%s: %s", self._name, outcome)
            if backoff.exhausted:
                self._finish(SensorError(f"{self._name}: no frames after {backoff.failures} reconnect attempts "
                                         f"(max_failures={cfg.max_failures})"))
                return
            if not backoff.wait():
                break
            cap = self._try_reconnect()
            if cap is not None:
                self._reconnects += 1
        self._finish(None)

    def _finish(self, error: SensorError | None) -> None:
        with self._cond:
            self._error = error or self._error  # keep a file reader's error
            self._done = True
            self._cond.notify_all()

    def _run_connection(self, cap: cv2.VideoCapture) -> tuple[bool, str]:
        """Read ``cap`` on a fresh reader thread until it ends, stalls or the source closes."""
        with self._cond:
            self._generation += 1
            generation = self._generation
            self._reader_ended = False
            frames_before = self._frames
            started = time.monotonic()
            self._last_frame_s = started + FIRST_FRAME_GRACE_S
        reader = threading.Thread(target=self._read, args=(cap, generation), name=f"camera-reader-{generation}",
                                  daemon=True)
        self._readers = [t for t in self._readers if t.is_alive()] + [reader]
        reader.start()
        timeout = None if self.is_file else self.config.read_timeout_s
        with self._cond:
            while not self._reader_ended and not self._stop.is_set():
                if timeout is not None and time.monotonic() - self._last_frame_s > timeout:
                    self._generation += 1  # abandon the stuck reader: it releases its capture when read() returns
                    return self._frames > frames_before, f"no frame within read_timeout_s={timeout:g} s"
                self._cond.wait(0.05 if timeout is None else min(0.05, timeout))
            return self._frames > frames_before, "read failed (device gone or stream ended)"

    def _read(self, cap: cv2.VideoCapture, generation: int) -> None:
        """Reader thread: read frames into the one-slot handoff until told to stop; always releases ``cap``."""
        pace = self.is_file and self.pace
        period = 1.0 / self._fps
        due = time.monotonic()
        frames = FileFrames(cap, self._name) if self.is_file else None
        last = -1
        try:
            while not self._stop.is_set() and generation == self._generation:
                if frames is not None:
                    got = frames.next()
                    if got is None:
                        break
                    index, image = got
                else:
                    ok, image = read_capture(cap, self._name)
                    if not ok:
                        break
                    index = last + 1
                pos_ms = float(cap.get(cv2.CAP_PROP_POS_MSEC))
                if pace:  # skipped frames keep their time: the next good one is due after them
                    due = self._pace(due + period * (index - last - 1), period)
                    if self._stop.is_set():
                        break
                last = index
                if not self._publish(image, pos_ms, generation):  # type: ignore[arg-type]
                    break
        except (SensorError, cv2.error) as exc:
            error = exc if isinstance(exc, SensorError) else SensorError(f"{self._name}: {cv_error_line(exc)}")
            log.warning("%s", error)
            if self.is_file:
                self._error = error  # a file is not reconnected: the iteration ends with this error
        finally:
            cap.release()
            with self._cond:
                if generation == self._generation:
                    self._reader_ended = True
                    if self.is_file:
                        self._done = True
                    self._cond.notify_all()

    def _pace(self, due: float, period: float) -> float:
        """Wait until a paced file's frame is due; returns when the next one is."""
        now = time.monotonic()
        if due - now > 0:
            self._stop.wait(due - now)
        elif now - due > 1.0:
            due = now  # fell far behind (a stalled process): restart the clock instead of bursting
        return due + period

    def _publish(self, image: np.ndarray, pos_ms: float, generation: int) -> bool:
        """Hand one frame over; False when the reader should stop (stale generation or closed)."""
        unpaced_file = self.is_file and not self.pace
        with self._cond:
            while unpaced_file and self._slot is not None and not self._stop.is_set():
                self._cond.wait(0.1)  # every frame of an unpaced file reaches the consumer
            if self._stop.is_set() or generation != self._generation:
                return False
            index = self._frames
            if unpaced_file:
                t_ns = int(round(pos_ms * 1e6)) if pos_ms >= 0 else int(index * 1e9 / self._fps)
            else:
                t_ns = time.monotonic_ns()
            if self._slot is not None:
                self._dropped += 1
            self._slot = _Frame(image, t_ns, index, pos_ms)
            self._frames += 1
            self._last_frame_s = time.monotonic()
            self._cond.notify_all()
        return True
