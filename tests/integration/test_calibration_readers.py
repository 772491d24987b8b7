"""The calibration readers give exactly the arrays the runtime gives for the same data (real data from ../shared).

Each test feeds the same file to a reader and to the runtime's own path
(sources, ring buffers, preprocessors, as the daemon wires them) and compares
bytes. Subsets keep the whole module to a few seconds.
"""
from __future__ import annotations

import csv
import itertools
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile
from scipy.io import loadmat

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.pipeline.buffers import SampleBuffer
from edge_mer.preprocess.audio import AudioPreprocessor, to_mono
from edge_mer.preprocess.eeg import EegPreprocessor, board_eeg
from edge_mer.preprocess.face import FacePreprocessor, prepare_crops
from edge_mer.pipeline.face_models import build_detector
from edge_mer.preprocess.face_detect import FaceDetectorOptions
from edge_mer.sessions.format import load_session, write_session_json
from edge_mer.sessions.replay import AudioReplaySource, EegReplaySource, VideoReplaySource
from edge_mer.sources.wav import WavFileSource
from edge_mer_calibration.datasets import open_dataset, stratified_sample
from edge_mer_calibration.eeg import GU_CHANNELS, GU_RATE, read_brainflow_file, read_gu_folder, read_session_eeg
from edge_mer_calibration.face import FER_LABELS, read_face_folder, read_face_video, read_fer_csv
from edge_mer_calibration.sessions import build_session
from edge_mer_calibration.speech import read_session_audio, read_wav_folder

pytestmark = pytest.mark.shared


@pytest.fixture(scope="module")
def specs() -> dict[str, EncoderSpec]:
    bundle = load_bundle(default_bundle_path())
    return {name: bundle.encoder(name) for name in ("face", "speech", "eeg", "eeg_cyton")}


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    """A 3 x 4 s labelled session (CK+ faces in video, EMO-DB speaker 08, GU sub1) from the project's builder."""
    return build_session(shared_dir, tmp_path_factory.mktemp("calib") / "session", seconds=4.0)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_ckplus_image_equals_prepare_crops_of_the_same_image(shared_dir: Path, specs) -> None:
    root = shared_dir / "data" / "face" / "ckplus48"
    params = specs["face"].preprocessing
    samples = list(read_face_folder(root, params))
    assert len(samples) == 981 - len(list((root / "contempt").glob("*.png")))  # contempt has no label mapping
    assert {s.label for s in samples} == {"angry", "disgust", "fear", "happy", "sad", "surprise"}
    for sample in samples[::97]:
        image = cv2.imread(sample.source, cv2.IMREAD_UNCHANGED)
        assert _same(sample.array, prepare_crops([image], params)[0])
        # a camera delivers BGR: the grey conversion of a grey image put in BGR is exact
        assert _same(sample.array, prepare_crops([cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)], params)[0])
        assert sample.group == Path(sample.source).name[:4]


def test_fer_row_equals_prepare_crops_of_the_reshaped_uint8_image(shared_dir: Path, specs) -> None:
    path = shared_dir / "data" / "face" / "fer2013_train_rows.csv"
    params = specs["face"].preprocessing
    samples = list(itertools.islice(read_fer_csv(path, params), 40))
    with open(path, newline="") as fh:
        rows = list(itertools.islice(csv.DictReader(fh), 40))
    for sample, row in zip(samples, rows, strict=True):
        image = np.array(row["pixels"].split(), dtype=np.uint8).reshape(48, 48)
        assert _same(sample.array, prepare_crops([image], params)[0])
        assert sample.label == FER_LABELS[int(row["emotion"])] and sample.group is None


def test_session_video_frames_equal_the_daemon_face_path(session: Path, specs) -> None:
    params = specs["face"].preprocessing
    samples = list(read_face_video(session / "video.mp4", params, every_n=4))
    loaded = load_session(session)
    runtime = FacePreprocessor(params, build_detector(FaceDetectorOptions(), load_bundle(default_bundle_path())))  # the FaceRunner's
    expected = {}
    with VideoReplaySource(loaded, pace=False) as source:
        for chunk in source:
            index = chunk.meta["frame_index"]
            if index % 4 == 0:
                batch = runtime.process([chunk.data])
                if isinstance(batch, np.ndarray):
                    expected[index] = (batch[0], loaded.label_at(chunk.meta["session_t"]))
    assert len(samples) == len(expected) >= 0.9 * 180 / 4
    for sample in samples:
        array, label = expected[int(sample.source.rsplit("#", 1)[1])]
        assert _same(sample.array, array) and sample.label == label and sample.group == "session"
    assert [s.label for s in samples[:3]] == ["happy"] * 3 and samples[-1].label == "fear"
    assert {s.label for s in read_face_video(session / "video.mp4", params, every_n=30, label="sad")} == {"sad"}


def test_emodb_wav_equals_the_wav_source_and_microphone_path(shared_dir: Path, specs) -> None:
    """int16 read + to_mono (a microphone's path) and WavFileSource float32 chunks give the same bytes."""
    params = specs["speech"].preprocessing
    samples = list(itertools.islice(read_wav_folder(shared_dir / "data" / "speech" / "emodb", params), 14))
    runtime = AudioPreprocessor(params)
    for sample in samples:
        path = Path(sample.source)
        assert sample.label == {"W": "angry", "L": "boredom", "E": "disgust", "A": "fear", "F": "happy",
                                "T": "sad", "N": "neutral"}[path.name[5]] and sample.group == path.name[:2]
        source = WavFileSource(path, pace=False)
        with source:
            buffer = SampleBuffer(source.info.rate, 1, 10.0)  # the SpeechRunner's ring buffer
            chunks = []
            for chunk in source:
                buffer.push(chunk)
                chunks.append(chunk.data)
        delivered = np.concatenate(chunks)
        assert delivered.dtype == np.float32
        pcm, rate = soundfile.read(str(path), dtype="int16")
        assert _same(to_mono(pcm), delivered)  # the microphone's int16 and the file source agree exactly
        window = buffer.window(2.0)[0].astype(np.float32)  # what SpeechRunner hands the preprocessor
        assert _same(sample.array, runtime.process(window, rate))
        assert _same(sample.array, runtime.process(delivered, rate))


def test_session_audio_windows_equal_the_daemon_speech_path(session: Path, specs) -> None:
    params = specs["speech"].preprocessing
    samples = list(read_session_audio(session, params, window_s=2.0, hop_s=0.5))
    loaded = load_session(session)
    rate = soundfile.info(str(session / "audio.wav")).samplerate
    ends = [round(float(s.source.rsplit("@", 1)[1]) * rate) + 2 * rate for s in samples]
    assert len(samples) == 21  # 12 s: windows ending at 2.0, 2.5, ... 12.0 s
    runtime = AudioPreprocessor(params)
    expected = {}
    with AudioReplaySource(loaded, pace=False) as source:
        buffer = SampleBuffer(source.rate, 1, 10.0)  # the SpeechRunner's ring buffer
        for chunk in source:
            buffer.push(chunk)
            if buffer.written in ends:  # the daemon's window when a tick falls on this chunk
                window = buffer.window(2.0)[0].astype(np.float32)
                expected[buffer.written] = (runtime.process(window, source.rate),
                                            loaded.label_at(chunk.meta["session_t"]))
    assert sorted(expected) == ends  # 20 ms chunks of 441 samples end on every 0.5 s boundary
    for sample, end in zip(samples, ends):
        array, label = expected[end]
        assert _same(sample.array, array) and sample.label == label


def test_gu_window_equals_eeg_preprocessor_on_the_same_window(shared_dir: Path, specs) -> None:
    root = shared_dir / "data" / "eeg" / "gu"
    for name in ("eeg", "eeg_cyton"):
        params = specs[name].preprocessing
        samples = list(itertools.islice(read_gu_folder(root, params, hop_s=3.0), 8))
        runtime = EegPreprocessor(params)
        for sample in samples:
            file, start = sample.source.split("@")
            data = loadmat(str(root / file))["normalizedMatrix"].T
            first = int(float(start) * GU_RATE)
            window = data[:, first:first + int(params.window_s * GU_RATE)]
            assert _same(sample.array, runtime.process(window, GU_CHANNELS, GU_RATE))


@pytest.fixture(scope="module")
def eeg_session(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    """GU sub2 trial 1 happy then sad (15 s each) as eeg.csv, labelled with a 2 s unlabelled gap."""
    out = tmp_path_factory.mktemp("eeg_session")
    gu = shared_dir / "data" / "eeg" / "gu"
    data = np.concatenate([loadmat(str(gu / f"sub2t1{e}.mat"))["normalizedMatrix"] for e in "HS"])
    times = np.arange(len(data)) / GU_RATE
    np.savetxt(out / "eeg.csv", np.column_stack([times, data]), delimiter=",", comments="", fmt="%.6f",
               header="timestamp," + ",".join(GU_CHANNELS))
    write_session_json(out, eeg="eeg.csv", eeg_sampling_rate=GU_RATE, labels=[
        {"start": 0.0, "end": 14.0, "label": "happy"}, {"start": 16.0, "end": 30.0, "label": "sad"}])
    return out


def test_session_eeg_windows_equal_the_daemon_eeg_path(eeg_session: Path, specs) -> None:
    params = specs["eeg"].preprocessing
    samples = list(read_session_eeg(eeg_session, params, hop_s=0.25))
    loaded = load_session(eeg_session)
    runtime = EegPreprocessor(params)
    ends = [round(float(s.source.rsplit("@", 1)[1]) * GU_RATE) + 4 * GU_RATE for s in samples]
    expected = {}
    with EegReplaySource(loaded, pace=False) as source:
        buffer = SampleBuffer(source.rate, len(source.channels), 30.0)  # the EegRunner's ring buffer
        for chunk in source:
            buffer.push(chunk)
            if buffer.written in ends:
                expected[buffer.written] = runtime.process(buffer.window(params.window_s), source.channels,
                                                           source.rate)
    assert {loaded.label_at((end - 1) / GU_RATE) for end in ends} == {"happy", "sad"}
    assert [s.label for s in samples] == [loaded.label_at((end - 1) / GU_RATE) for end in ends]
    gap = [end for end in range(4 * GU_RATE, 30 * GU_RATE + 1, 32) if 14.0 <= (end - 1) / GU_RATE < 16.0]
    assert gap and not set(gap) & set(ends)  # windows ending in the unlabelled gap are skipped
    matched = [(s, expected[end]) for s, end in zip(samples, ends) if end in expected]
    assert len(matched) >= 6  # window ends that coincide with the replay's 13-row chunk boundaries
    for sample, array in matched:
        assert _same(sample.array, array) and sample.group == eeg_session.name


def test_brainflow_file_windows_equal_the_board_path(tmp_path: Path, shared_dir: Path, specs) -> None:
    """GU rows written into a Cyton-layout BrainFlow file; the reader matches board_eeg + EegPreprocessor."""
    from brainflow.board_shim import BoardIds, BoardShim
    from brainflow.data_filter import DataFilter

    board = int(BoardIds.CYTON_BOARD)
    gu = loadmat(str(shared_dir / "data" / "eeg" / "gu" / "sub3t1F.mat"))["normalizedMatrix"].T
    raw = np.zeros((BoardShim.get_num_rows(board), gu.shape[1]))
    for row, name in zip(BoardShim.get_eeg_channels(board), BoardShim.get_eeg_names(board)):
        raw[row] = 50.0 * gu[GU_CHANNELS.index(name)]
    path = tmp_path / "cyton.csv"
    DataFilter.write_file(raw, str(path), "w")
    params = specs["eeg_cyton"].preprocessing
    samples = list(read_brainflow_file(path, "CYTON_BOARD", params, hop_s=2.0, label="fear"))
    eeg, names, rate = board_eeg(DataFilter.read_file(str(path)), board)
    runtime = EegPreprocessor(params)
    assert len(samples) == (gu.shape[1] - 4 * rate) // (2 * rate) + 1
    for sample in samples:
        start = int(float(sample.source.rsplit("@", 1)[1]) * rate)
        assert _same(sample.array, runtime.process(eeg[:, start:start + 4 * rate], names, rate))
        assert sample.label == "fear"


def test_open_dataset_detects_every_shared_layout(shared_dir: Path, session: Path, specs,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    data = shared_dir / "data"
    cases = [
        ("face", data / "face" / "ckplus48", "image class folders", 300),
        ("face", data / "face" / "fer2013_train_rows.csv", "FER2013 CSV", 300),
        ("face", session, "session video", 20),
        ("face", session / "video.mp4", "video file", 20),
        ("speech", data / "speech" / "emodb", "WAV folder", 30),
        ("speech", session, "session audio", 5),
        ("eeg", data / "eeg" / "gu", "GU .mat folder", 30),
        ("eeg", session, "session EEG", 3),
    ]
    for modality, path, layout, take in cases:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="edge_mer_calibration.datasets"):
            samples = list(itertools.islice(open_dataset(path, specs[modality], hop_s=2.0, every_n=6), take))
        assert f"{modality} data {path}: {layout}" in caplog.text
        assert len(samples) == take, (path, len(samples))
        outputs = set(specs[modality].label_map.values())
        assert all(s.label in outputs for s in samples if s.label is not None)
    ckplus = list(open_dataset(data / "face" / "ckplus48", specs["face"]))
    chosen = stratified_sample(ckplus, 98, seed=0)
    counts = {label: sum(s.label == label for s in chosen) for label in sorted({s.label for s in ckplus})}
    full = {label: sum(s.label == label for s in ckplus) for label in counts}
    assert sum(counts.values()) == 98 and all(abs(counts[k] - 98 * full[k] / len(ckplus)) < 1 for k in counts)
    assert [s.source for s in chosen] == [s.source for s in stratified_sample(ckplus, 98, seed=0)]
