"""CameraSource on real video files and a real HTTP stream (OpenCV's FFmpeg backend), no camera needed."""
from __future__ import annotations

import functools
import http.server
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_mer.config import from_dict
from edge_mer.errors import ConfigError, SensorError
from edge_mer.sources.camera import CameraConfig, CameraSource, device_kind

FPS, SECONDS, W, H = 30.0, 2.0, 320, 240
N_FRAMES = int(FPS * SECONDS)
LEVEL_STEP = 4  # the top-left block of frame i has grey level i * LEVEL_STEP (survives MJPEG)


def _write_video(path: Path, n: int = N_FRAMES, fps: float = FPS) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    assert writer.isOpened()
    for i in range(n):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[:40, :40] = (i * LEVEL_STEP) % 256
        cv2.putText(frame, str(i), (110, 150), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 3)
        writer.write(frame)
    writer.release()
    return path


def _counter(frame: np.ndarray) -> int:
    return int(round(float(frame[:40, :40].mean()) / LEVEL_STEP))


@pytest.fixture(scope="module")
def video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_video(tmp_path_factory.mktemp("camera") / "counter.avi")


def test_unpaced_file_yields_every_frame_in_order_fast(video: Path) -> None:
    start = time.monotonic()
    with CameraSource(CameraConfig(device=str(video)), pace=False) as cam:
        info = cam.info
        chunks = list(cam)
    elapsed = time.monotonic() - start
    assert info.modality == "face" and info.rate == pytest.approx(FPS)
    assert len(chunks) == N_FRAMES and elapsed < 1.0
    assert [c.meta["frame_index"] for c in chunks] == list(range(N_FRAMES))
    assert [_counter(c.data) for c in chunks] == list(range(N_FRAMES))
    assert all(c.data.shape == (H, W, 3) and c.data.dtype == np.uint8 for c in chunks)
    assert all(c.meta["dropped"] == 0 for c in chunks)
    # Unpaced replay is stamped with the file's clock.
    assert [c.t_ns for c in chunks] == [int(round(c.meta["device_ts_ms"] * 1e6)) for c in chunks]
    assert chunks[1].t_ns - chunks[0].t_ns == pytest.approx(1e9 / FPS, rel=1e-3)


def test_paced_file_plays_in_real_time_and_ends(video: Path) -> None:
    start_ns = time.monotonic_ns()
    with CameraSource(CameraConfig(device=str(video))) as cam:
        chunks = list(cam)  # iteration ends by itself at the end of the file
    elapsed = (time.monotonic_ns() - start_ns) / 1e9
    assert SECONDS - 0.2 < elapsed < SECONDS + 0.6
    indices = [c.meta["frame_index"] for c in chunks]
    assert indices == sorted(set(indices)) and indices[-1] == N_FRAMES - 1
    assert len(chunks) >= N_FRAMES * 0.9  # a fast consumer misses (almost) nothing
    stamps = [c.t_ns for c in chunks]
    assert all(b > a for a, b in zip(stamps, stamps[1:])) and start_ns <= stamps[0]
    assert (stamps[-1] - stamps[0]) / 1e9 == pytest.approx((indices[-1] - indices[0]) / FPS, abs=0.1)


def test_slow_consumer_gets_the_newest_frame_never_a_backlog(video: Path) -> None:
    seen = []
    with CameraSource(CameraConfig(device=str(video))) as cam:
        for chunk in cam:
            age_s = (time.monotonic_ns() - chunk.t_ns) / 1e9
            seen.append((chunk.meta["frame_index"], chunk.meta["dropped"], age_s))
            if len(seen) == 4:
                break
            time.sleep(0.2)  # six frame periods
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
    assert all(5 <= g <= 8 for g in gaps), gaps
    assert seen[-1][1] >= 12  # frames overwritten while the consumer slept
    assert all(age < 1.5 / FPS + 0.02 for _, _, age in seen[1:]), seen


def test_close_from_another_thread_stops_iteration_promptly(video: Path) -> None:
    cam = CameraSource(CameraConfig(device=str(video)))
    with cam:
        got = []
        timer = threading.Timer(0.3, cam.close)
        timer.start()
        start = time.monotonic()
        for chunk in cam:
            got.append(chunk)
        stopped = time.monotonic() - start
        timer.join()
    assert 0.25 < stopped < 0.8 and 0 < len(got) < N_FRAMES
    closing = time.monotonic()
    cam.close()  # idempotent
    assert time.monotonic() - closing < 0.1
    assert not any(t.is_alive() for t in threading.enumerate() if t.name.startswith("camera-"))


@pytest.mark.parametrize("device", ["/nonexistent/clip.mp4", "7"])
def test_missing_device_is_a_sensor_error_naming_it(device: str) -> None:
    with pytest.raises(SensorError, match=f"camera '{device}'"):
        CameraSource(CameraConfig(device=device)).open()


def test_gstreamer_without_backend_says_so() -> None:
    if cv2.videoio_registry.hasBackend(cv2.CAP_GSTREAMER):
        pytest.skip("this OpenCV has GStreamer")
    with pytest.raises(SensorError, match="no GStreamer backend"):
        CameraSource(CameraConfig(device="videotestsrc ! appsink", api="gstreamer")).open()


def test_iterating_an_unopened_source_is_a_sensor_error(video: Path) -> None:
    with pytest.raises(SensorError, match="not open"):
        next(iter(CameraSource(CameraConfig(device=str(video)))))


def test_device_kinds() -> None:
    assert device_kind("0") == "index"
    assert device_kind("rtsp://cam/stream") == "url"
    assert device_kind("nvarguscamerasrc ! appsink", "gstreamer") == "pipeline"
    assert device_kind("/dev/null") == "node"
    assert device_kind("clip.mp4") == "file"


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def http_video(video: Path) -> Iterator[tuple[str, http.server.ThreadingHTTPServer]]:
    """The test video served over HTTP: a live stream to OpenCV that ends after N_FRAMES."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(video.parent)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{video.name}", server
    server.shutdown()
    server.server_close()


def test_live_stream_that_ends_is_reconnected(http_video: tuple[str, http.server.ThreadingHTTPServer]) -> None:
    url, _ = http_video
    config = CameraConfig(device=url, api="ffmpeg", reconnect_min_s=0.05, reconnect_max_s=0.1)
    with CameraSource(config) as cam:
        for chunk in cam:
            if chunk.meta["reconnects"] >= 2:
                break
    assert chunk.meta["frame_index"] >= 2 * N_FRAMES - 1  # the stream was read through at least twice


def test_live_stream_gives_up_after_max_failures(http_video: tuple[str, http.server.ThreadingHTTPServer]) -> None:
    url, server = http_video
    config = CameraConfig(device=url, api="ffmpeg", reconnect_min_s=0.05, reconnect_max_s=0.1, max_failures=2)
    frames = 0
    with CameraSource(config) as cam:
        server.shutdown()  # nothing to reconnect to once this stream ends
        server.server_close()
        with pytest.raises(SensorError, match="no frames after 2 reconnect attempts"):
            for _ in cam:
                frames += 1
    assert frames > 0


def test_stalled_stream_is_reconnected_after_read_timeout(video: Path) -> None:
    release = threading.Event()
    payload = video.read_bytes()

    class Stalling(http.server.BaseHTTPRequestHandler):
        """Sends the first half of the video, then goes silent with the connection open."""

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "video/x-msvideo")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            release.wait(10)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = CameraConfig(device=f"http://127.0.0.1:{server.server_address[1]}/v.avi", api="ffmpeg",
                          read_timeout_s=0.3, reconnect_min_s=0.05, reconnect_max_s=0.1)
    try:
        with CameraSource(config) as cam:
            start = time.monotonic()
            for chunk in cam:
                if chunk.meta["reconnects"] >= 1:
                    break
            took = time.monotonic() - start
    finally:
        release.set()
        server.shutdown()
        server.server_close()
    assert took < 2.0


@pytest.mark.parametrize("device", ["99999999999999999999", "10000", "0" * 5000])
def test_a_camera_index_out_of_range_is_a_one_line_config_error(device: str) -> None:
    with pytest.raises(ConfigError, match=r"a camera index must be in 0\.\.9999") as info:
        CameraConfig(device=device)
    assert "\n" not in str(info.value) and len(str(info.value)) < 200
    with pytest.raises(ConfigError, match="camera index"):
        from_dict(CameraConfig, {"device": device}, "face.camera")
    assert CameraConfig(device="9999").device == "9999"
    assert device_kind("\u00b2") == "file"  # a digit to str.isdigit(), not to int()


def test_an_opencv_exception_while_opening_is_a_one_line_sensor_error() -> None:
    config = CameraConfig(device="0")
    object.__setattr__(config, "device", "99999999999999999999")  # past the config check: cv2 raises cv2.error
    with pytest.raises(SensorError, match="OpenCV failed to open it") as info:
        CameraSource(config).open()
    assert "\n" not in str(info.value)


def test_a_stream_that_opens_but_never_delivers_a_frame_fails_open(tmp_path: Path) -> None:
    """An AVI header and no frames, over HTTP: OpenCV opens it, no frame ever comes; open() says so at once."""
    from edge_mer.sessions.avi import MjpegAviWriter

    writer = MjpegAviWriter(tmp_path / "empty.avi", (W, H), FPS)
    writer.close()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    config = CameraConfig(device=f"http://127.0.0.1:{server.server_address[1]}/empty.avi", api="ffmpeg",
                          read_timeout_s=0.5, reconnect_min_s=0.05, reconnect_max_s=0.1)
    started = time.monotonic()
    try:
        with pytest.raises(SensorError, match="cannot open it|delivered no frame") as info:
            CameraSource(config).open()
    finally:
        server.shutdown()
        server.server_close()
    assert "\n" not in str(info.value) and time.monotonic() - started < 5.0
    assert not any(t.name.startswith("camera-") and t.is_alive() for t in threading.enumerate())
