"""FaceRunner's on-arrival processing and per-window averaging, and EegRunner's hop, on the default bundle.

The runners are built as ``edge_mer.pipeline.assembly.build_runner`` builds them: the packaged bundle's fp32
encoders on ONNX Runtime and the default face detector. Frames are the packaged demo session's video; EEG is
microvolt-scale noise on BrainFlow's synthetic-board channel names. Chunks go in the way the daemon's
``accept`` puts them in: into the runner's buffer, then through ``on_chunk``.
"""
from __future__ import annotations

import logging

import numpy as np
import pytest

from edge_mer.backends.base import Backend
from edge_mer.backends.options import BackendOptions
from edge_mer.backends.registry import create_backend
from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.labels import to_canonical
from edge_mer.bundle.loader import Bundle
from edge_mer.numeric import temperature_scale
from edge_mer.pipeline.runners import EegRunner, FaceRunner, ModalityRunner, choose_eeg_encoder
from edge_mer.preprocess.face import FacePreprocessor
from edge_mer.preprocess.face_detect import FaceDetectorOptions, create_detector
from edge_mer.sources.base import Chunk

MS = 1_000_000  # ns
FRAME_NS = round(1e9 / 15)  # the demo video's 15 fps
#: BrainFlow's SYNTHETIC_BOARD EEG channel names (BoardShim.get_eeg_names), 250 Hz.
SYNTHETIC_NAMES = ("Fz", "C3", "Cz", "C4", "Pz", "PO7", "Oz", "PO8", "F5", "F7", "F3", "F1", "F2", "F4", "F6", "F8")
EEG_RATE = 250

#: These tests exercise the Haar cascade (no model file, deterministic); BlazeFace has its own tests.
HAAR = FaceDetectorOptions(kind="haar")


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle(default_bundle_path())


def _backend(bundle: Bundle, name: str) -> Backend:
    return create_backend(bundle.model_ref(name, "fp32"), BackendOptions(name="onnxruntime")).load()


@pytest.fixture(scope="module")
def face_backend(bundle: Bundle):
    backend = _backend(bundle, "face")
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def frames(demo_frames: list[np.ndarray]) -> list[np.ndarray]:
    return demo_frames[:40]


@pytest.fixture
def runner(bundle: Bundle, face_backend: Backend) -> FaceRunner:
    """The daemon's default face runner: a 0.5 s window of up to 5 frames, stale after 1 s."""
    return FaceRunner("face", bundle.encoder("face"), face_backend, create_detector(HAAR), window_s=0.5, stale_s=1.0,
                      max_frames=5)


def _feed(runner: ModalityRunner, t_ns: int, data: np.ndarray) -> None:
    chunk = Chunk(t_ns, data)
    runner.buffer.push(chunk)
    runner.on_chunk(chunk)


def _processed(runner: FaceRunner) -> int:
    """Frames the runner has run the detector on (one ``face.detect`` sample each)."""
    return len(runner.timings.stages().get("face.detect", []))


def _grey() -> np.ndarray:
    return np.full((240, 320, 3), 90, np.uint8)


# ----------------------------------------------------------------------------- on-arrival processing


def test_frames_are_processed_on_arrival_at_most_one_per_spacing(runner: FaceRunner, frames) -> None:
    spacing = int(0.9e9 * 0.5 / 5)  # window_s / max_frames less 10% slack: 90 ms
    assert spacing == 90 * MS
    _feed(runner, 0, frames[0])
    assert _processed(runner) == 1  # processed in on_chunk, before any tick
    _feed(runner, spacing - 1, frames[1])
    assert _processed(runner) == 1  # too soon after the last processed frame
    _feed(runner, spacing, frames[2])
    assert _processed(runner) == 2  # exactly one spacing later
    _feed(runner, spacing + 60 * MS, frames[3])
    _feed(runner, 2 * spacing - 1, frames[4])
    assert _processed(runner) == 2  # spacing counts from the last processed frame, not the last arrival
    _feed(runner, 2 * spacing + 30 * MS, frames[5])
    assert _processed(runner) == 3
    stages = runner.timings.stages()
    assert len(stages["encoder.face"]) == 3 and len(stages["face.crop"]) == 3  # each processed frame encoded once
    assert runner.buffer.pushed == 6  # every frame still reaches the buffer


def test_a_15_fps_camera_gets_every_other_frame_processed(runner: FaceRunner, frames) -> None:
    for i, frame in enumerate(frames[:30]):
        _feed(runner, i * FRAME_NS, frame)
    assert _processed(runner) == 15  # 66.7 ms < 90 ms: frames 0, 2, 4, ...


def test_the_slack_keeps_a_jittery_10_fps_camera_at_every_frame(bundle: Bundle, face_backend, frames) -> None:
    # 10 fps fills a 0.5 s window of 5 frames exactly; frames arriving 95 ms apart (jitter) must still all count.
    runner = FaceRunner("face", bundle.encoder("face"), face_backend, create_detector(HAAR), window_s=0.5,
                        stale_s=1.0, max_frames=5)
    for i in range(10):
        _feed(runner, i * 95 * MS, frames[i])
    assert _processed(runner) == 10
    # A higher max_frames processes every frame of the 15 fps video: 0.9 * 0.5 s / 15 = 30 ms.
    dense = FaceRunner("face", bundle.encoder("face"), face_backend, create_detector(HAAR), window_s=0.5,
                       stale_s=1.0, max_frames=15)
    for i in range(10):
        _feed(dense, i * FRAME_NS, frames[i])
    assert _processed(dense) == 10


# ----------------------------------------------------------------------------- ticks


def _reference(bundle: Bundle, backend: Backend, frames_in_order: list[np.ndarray]) -> list[np.ndarray | None]:
    """Per frame, the face encoder's probabilities as an independent tracker + preprocessor + encoder give them."""
    spec = bundle.encoder("face")
    pre = FacePreprocessor(spec.preprocessing, create_detector(HAAR))
    out = []
    for frame in frames_in_order:
        box = pre.find(frame)
        if box is None:
            out.append(None)
            continue
        probs = backend.infer({spec.inputs[0].name: pre.prepare([frame], [box])})[spec.class_output.name]
        row = np.asarray(probs[:1], dtype=np.float64)
        # The runner calibrates every frame's row before averaging, as the manifest says.
        out.append((row if spec.calibration is None else temperature_scale(row, spec.calibration.temperature))[0])
    return out


def _expected(bundle: Bundle, rows: list[np.ndarray]) -> dict[str, float]:
    spec = bundle.encoder("face")
    mean = np.mean(rows, axis=0)
    return to_canonical(mean / mean.sum(), spec.labels, spec.label_map)


def test_a_tick_averages_only_the_results_inside_its_window(bundle: Bundle, face_backend, runner: FaceRunner,
                                                            frames) -> None:
    times = [i * FRAME_NS for i in range(30)]
    for t, frame in zip(times, frames):
        _feed(runner, t, frame)
    processed = list(range(0, 30, 2))  # see the 15 fps test
    reference = dict(zip(processed, _reference(bundle, face_backend, [frames[i] for i in processed])))
    assert all(r is not None for r in reference.values())  # the demo face is found in every frame
    for now in (times[29], times[20] + 10 * MS, times[14]):
        inside = [i for i in processed if now - 500 * MS < times[i] <= now]
        assert 3 <= len(inside) <= 4
        result = runner.run(now)
        assert result.valid and result.reason is None and result.modality == "face"
        expected = _expected(bundle, [reference[i] for i in inside])
        assert set(result.probs) == set(expected)
        for label, p in expected.items():
            assert result.probs[label] == pytest.approx(p, abs=1e-6), label
        assert result.newest_t_ns == times[inside[-1]]
    # Different windows, different frames, different evidence.
    assert runner.run(times[29]).probs != runner.run(times[14]).probs


def test_newest_t_ns_is_the_newest_processed_frame_not_the_newest_frame(runner: FaceRunner, frames) -> None:
    _feed(runner, 0, frames[0])
    _feed(runner, FRAME_NS, frames[1])  # skipped
    _feed(runner, 2 * FRAME_NS, frames[2])  # processed
    _feed(runner, 3 * FRAME_NS, frames[3])  # skipped
    assert _processed(runner) == 2
    result = runner.run(3 * FRAME_NS + 5 * MS)
    assert result.valid
    assert runner.buffer.newest_t_ns == 3 * FRAME_NS
    assert result.newest_t_ns == 2 * FRAME_NS


def test_a_window_of_frames_without_a_face_is_invalid_no_face(bundle, face_backend, runner: FaceRunner,
                                                              frames) -> None:
    # Faces for 0.6 s, then a covered camera (plain grey frames) for 0.6 s.
    times = [i * 100 * MS for i in range(12)]
    data = frames[:6] + [_grey()] * 6
    for t, frame in zip(times, data):
        _feed(runner, t, frame)
    assert _processed(runner) == 12  # 100 ms apart: every frame processed
    covered = runner.run(times[-1])
    assert not covered.valid and covered.reason == "no face" and covered.probs == {}
    assert covered.newest_t_ns == times[-1]
    # A window straddling both averages the face frames only.
    reference = _reference(bundle, face_backend, data)
    now = times[7]  # window (0.2, 0.7]: faces at 0.3, 0.4, 0.5; grey at 0.6, 0.7
    mixed = runner.run(now)
    assert mixed.valid and mixed.newest_t_ns == now
    expected = _expected(bundle, [reference[i] for i in (3, 4, 5)])
    for label, p in expected.items():
        assert mixed.probs[label] == pytest.approx(p, abs=1e-6)


def test_a_window_without_processed_frames_is_invalid_no_frames(runner: FaceRunner, frames) -> None:
    _feed(runner, 0, frames[0])
    result = runner.run(700 * MS)  # window (0.2, 0.7] s holds nothing; the newest frame is 0.7 s old (< 1 s)
    assert not result.valid and result.reason == "no frames"
    assert result.newest_t_ns == 0
    stale = runner.run(1500 * MS)
    assert not stale.valid and stale.reason.startswith("stale")
    fresh = FaceRunner("face", runner.spec, runner.backend, create_detector(HAAR), 0.5, 1.0, 5)
    assert fresh.run(0).reason == "no data yet"


def test_a_frame_the_detector_rejects_is_recorded_as_invalid_without_raising(
        runner: FaceRunner, frames, caplog: pytest.LogCaptureFixture) -> None:
    bad = frames[0].astype(np.float32)
    with caplog.at_level(logging.WARNING, logger="edge_mer.pipeline.runners"):
        _feed(runner, 0, bad)  # must not raise out of the source thread
    assert "frame at 0 ns failed" in caplog.text
    result = runner.run(10 * MS)
    assert not result.valid
    assert result.reason.startswith("error: ") and "uint8" in result.reason and "float32" in result.reason
    assert result.newest_t_ns == 0
    # The camera goes on: the next due frame is processed normally, and the window averages only good frames.
    _feed(runner, 50 * MS, frames[1])  # within the spacing of the bad frame: skipped
    _feed(runner, 100 * MS, frames[2])
    good = runner.run(110 * MS)
    assert good.valid and good.newest_t_ns == 100 * MS
    assert len(runner.timings.stages()["encoder.face"]) == 1


# ----------------------------------------------------------------------------- EEG hop


@pytest.fixture(scope="module")
def eeg_backend(bundle: Bundle):
    backend = _backend(bundle, choose_eeg_encoder(bundle, SYNTHETIC_NAMES, "auto"))
    yield backend
    backend.close()


def _eeg_runner(bundle: Bundle, backend: Backend, hop_s: float) -> EegRunner:
    """As build_runner makes it with the default EegConfig (stale 2 s, no notch override, 2000 uV limit)."""
    name = choose_eeg_encoder(bundle, SYNTHETIC_NAMES, "auto")
    return EegRunner(name, bundle.encoder(name), backend, EEG_RATE, SYNTHETIC_NAMES, None, 2.0, None, 2000.0,
                     hop_s=hop_s)


class _Board:
    """Synthetic-board-like EEG in 0.1 s chunks: noise of ~20 uV with a slow drift, on the board's 16 channels."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.written = 0

    def feed(self, runner: EegRunner, samples: int) -> int:
        """Push ``samples`` samples; returns the daemon-clock time of the newest."""
        t = np.arange(self.written, self.written + samples) / EEG_RATE
        data = self.rng.normal(0.0, 20.0, (len(SYNTHETIC_NAMES), samples)) + 30.0 * np.sin(2 * np.pi * 0.3 * t)
        self.written += samples
        t_ns = round((self.written - 1) * 1e9 / EEG_RATE)
        _feed(runner, t_ns, data)
        return t_ns


def _eeg_features_runs(runner: EegRunner) -> int:
    return len(runner.timings.stages().get("eeg.features", []))


def test_eeg_reuses_its_result_until_hop_s_of_new_samples_arrived(bundle: Bundle, eeg_backend) -> None:
    runner = _eeg_runner(bundle, eeg_backend, hop_s=0.5)
    assert runner.hop_samples == 125
    board = _Board()
    newest = 0
    for _ in range(40):  # 4 s: one full window
        newest = board.feed(runner, 25)
    first = runner.run(newest)
    assert first.valid, first.reason
    assert first.newest_t_ns == newest and _eeg_features_runs(runner) == 1
    for _ in range(4):  # 100, then 124 new samples: fewer than 125
        newest = board.feed(runner, 25)
        again = runner.run(newest)
        assert again.valid and again.probs == first.probs and again.newest_t_ns == first.newest_t_ns
    newest = board.feed(runner, 24)
    again = runner.run(newest)
    assert again.probs == first.probs and again.newest_t_ns == first.newest_t_ns
    assert _eeg_features_runs(runner) == 1 and len(runner.timings.stages()["encoder.eeg"]) == 1
    newest = board.feed(runner, 1)  # the 125th new sample
    second = runner.run(newest)
    assert second.valid and second.newest_t_ns == newest > first.newest_t_ns
    assert _eeg_features_runs(runner) == 2
    assert second.probs != first.probs  # new data, new evidence
    assert runner.run(newest + 50 * MS).newest_t_ns == newest  # no new samples: the cached result again
    assert _eeg_features_runs(runner) == 2


def test_eeg_hop_zero_recomputes_every_run(bundle: Bundle, eeg_backend) -> None:
    runner = _eeg_runner(bundle, eeg_backend, hop_s=0.0)
    board = _Board(1)
    newest = 0
    for _ in range(40):
        newest = board.feed(runner, 25)
    results = []
    for _ in range(3):
        newest = board.feed(runner, 5)
        results.append(runner.run(newest))
    assert all(r.valid for r in results)
    assert [r.newest_t_ns for r in results] == sorted({r.newest_t_ns for r in results})
    assert _eeg_features_runs(runner) == 3


def test_eeg_gives_evidence_as_soon_as_the_window_is_full(bundle: Bundle, eeg_backend) -> None:
    runner = _eeg_runner(bundle, eeg_backend, hop_s=0.5)
    board = _Board(2)
    newest = 0
    for _ in range(39):  # 3.9 s: filling
        newest = board.feed(runner, 25)
    assert runner.run(newest).reason == "filling: less than one window of EEG"
    newest = board.feed(runner, 25)  # 4.0 s: a full window is in the buffer
    result = runner.run(newest)
    assert result.valid, result.reason
