"""open_dataset's layout detection for every modality, on small datasets written here with the real libraries."""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile
from scipy.io import savemat

from edge_mer.bundle import default_bundle_path, load_bundle
from edge_mer.bundle.schema import EncoderSpec
from edge_mer.errors import InputError
from edge_mer.preprocess.face import FaceParams, prepare_crops
from edge_mer.sessions.format import write_session_json
from edge_mer_calibration.datasets import open_dataset
from edge_mer_calibration.eeg import GU_CHANNELS, GU_RATE
from edge_mer_calibration.face import fer_image

RNG_SEED = 11


@pytest.fixture(scope="module")
def specs() -> dict[str, EncoderSpec]:
    bundle = load_bundle(default_bundle_path())
    return {name: bundle.encoder(name) for name in ("face", "speech", "eeg")}


def _face(i: int) -> np.ndarray:
    y, x = np.mgrid[0:48, 0:48]
    return ((x * 3 + y * (i + 1) * 2) % 256).astype(np.uint8)


def _tone(path: Path, hz: float, seconds: float = 2.0, rate: int = 16000) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, 0.3 * np.sin(2 * np.pi * hz * t), rate, subtype="PCM_16")
    return path


def _read(path: Path, spec: EncoderSpec, caplog: pytest.LogCaptureFixture, **options) -> tuple[list, str]:
    with caplog.at_level(logging.INFO, logger="edge_mer_calibration.datasets"):
        samples = list(open_dataset(path, spec, **options))
    return samples, caplog.text


def test_face_class_folders_keep_only_labels_the_model_has(tmp_path: Path, specs, caplog) -> None:
    for i, folder in enumerate(("happy", "sadness", "contempt")):
        (tmp_path / folder).mkdir()
        cv2.imwrite(str(tmp_path / folder / f"S00{i}_001_0001.png"), _face(i))
    samples, log_text = _read(tmp_path, specs["face"], caplog)
    assert "image class folders" in log_text
    assert [(s.label, s.group) for s in samples] == [("happy", "S000"), ("sad", "S001")]
    np.testing.assert_array_equal(samples[1].array, prepare_crops([_face(1)], specs["face"].preprocessing)[0])


def test_fer_csv_rows_map_label_ids(tmp_path: Path, specs, caplog) -> None:
    path = tmp_path / "rows.csv"
    rows = [f"{label},{' '.join(map(str, _face(i).ravel()))},{usage}"
            for i, (label, usage) in enumerate([(3, "Training"), (6, "PublicTest"), (0, "Training")])]
    path.write_text("emotion,pixels,Usage\n" + "\n".join(rows) + "\n")
    samples, log_text = _read(path, specs["face"], caplog)
    assert "FER2013 CSV" in log_text and [s.label for s in samples] == ["happy", "neutral", "angry"]
    assert [s.source for s in samples] == ["rows.csv:2", "rows.csv:3", "rows.csv:4"]
    np.testing.assert_array_equal(samples[2].array, prepare_crops([_face(2)], specs["face"].preprocessing)[0])
    assert [s.label for s in open_dataset(path, specs["face"], usage="Training")] == ["happy", "angry"]
    path.write_text("emotion,pixels,Usage\n9,1 2 3,Training\n")
    with pytest.raises(InputError, match="rows.csv:2: 3 pixel values, expected 2304"):
        list(open_dataset(path, specs["face"]))
    path.write_text("emotion,pixels\n9," + " ".join(["0"] * 2304) + "\n")
    with pytest.raises(InputError, match="rows.csv:2: emotion '9' is not a FER2013 label id 0..6"):
        list(open_dataset(path, specs["face"]))
    np.testing.assert_array_equal(fer_image(" ".join(map(str, _face(0).ravel())), "row"), _face(0))


def test_emodb_names_and_class_folders_of_wavs(tmp_path: Path, specs, caplog) -> None:
    flat = tmp_path / "flat"
    for name, hz in (("03a01Fa.wav", 220), ("03a01Ta.wav", 330), ("10b02Lb.wav", 440), ("notes.wav", 550)):
        _tone(flat / name, hz)
    samples, log_text = _read(flat, specs["speech"], caplog, hop_s=2.0)
    assert "WAV folder" in log_text
    assert [(s.label, s.group) for s in samples] == [("happy", "03"), ("sad", "03"), ("boredom", "10")]
    assert all(s.array.shape == (1, 64, 201) for s in samples)
    classes = tmp_path / "classes"
    _tone(classes / "Anger" / "a.wav", 300)
    _tone(classes / "unknown" / "b.wav", 300)
    _tone(classes / "boredom" / "c.wav", 300, seconds=5.0)
    samples = list(open_dataset(classes, specs["speech"], window_s=2.0, hop_s=1.0))
    assert [(s.label, s.source.rsplit("/", 2)[-2:]) for s in samples][:2] == [("angry", ["Anger", "a.wav@0"]),
                                                                              ("boredom", ["boredom", "c.wav@0"])]
    assert [s.source.rsplit("@", 1)[1] for s in samples] == ["0", "0", "1", "2", "3"]
    six = ("angry", "disgust", "fear", "happy", "sad", "neutral")  # a speech model without EMO-DB's boredom
    no_boredom = dataclasses.replace(specs["speech"], outputs=(
        dataclasses.replace(specs["speech"].outputs[0], shape=("N", 6), labels=six),), label_map={k: k for k in six})
    assert [s.label for s in open_dataset(flat, no_boredom)] == ["happy", "sad"]
    assert [s.label for s in open_dataset(flat, no_boredom, keep_all_labels=True)] == ["happy", "sad", "boredom"]


def _noise(n: int, channels: int, seed: int = RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, channels))


def test_gu_folder_session_and_brainflow_file(tmp_path: Path, specs, caplog) -> None:
    from brainflow.board_shim import BoardIds, BoardShim
    from brainflow.data_filter import DataFilter

    gu = tmp_path / "gu"
    gu.mkdir()
    savemat(gu / "sub4t1S.mat", {"normalizedMatrix": _noise(15 * GU_RATE, 32)})
    samples, log_text = _read(gu, specs["eeg"], caplog, hop_s=4.0)
    assert "GU .mat folder" in log_text and [s.source for s in samples] == [f"sub4t1S.mat@{t}" for t in (0, 4, 8)]
    assert {(s.label, s.group, s.array.shape) for s in samples} == {("sad", "sub4", (10, 5))}

    session = tmp_path / "session"
    session.mkdir()
    data = np.column_stack([np.arange(12 * GU_RATE) / GU_RATE, _noise(12 * GU_RATE, 32)])
    np.savetxt(session / "eeg.csv", data, delimiter=",", header="timestamp," + ",".join(GU_CHANNELS), comments="",
               fmt="%.6f")
    write_session_json(session, eeg="eeg.csv", labels=[{"start": 0, "end": 6, "label": "fear"}])
    samples, log_text = _read(session, specs["eeg"], caplog, hop_s=1.0)
    assert "session EEG" in log_text and [s.label for s in samples] == ["fear"] * 3  # windows ending at 4, 5, 6 s
    with pytest.raises(InputError, match=f"session {session} has no video file"):
        open_dataset(session, specs["face"])
    with pytest.raises(InputError, match=f"session {session} has no audio file"):
        open_dataset(session, specs["speech"])

    board = int(BoardIds.SYNTHETIC_BOARD)
    raw = np.zeros((BoardShim.get_num_rows(board), 10 * BoardShim.get_sampling_rate(board)))
    raw[BoardShim.get_eeg_channels(board)] = 20 * _noise(raw.shape[1], len(BoardShim.get_eeg_channels(board))).T
    DataFilter.write_file(raw, str(tmp_path / "board.csv"), "w")
    samples, log_text = _read(tmp_path / "board.csv", specs["eeg"], caplog, board="SYNTHETIC_BOARD", hop_s=2.0)
    assert "BrainFlow file" in log_text and len(samples) == 4 and {s.label for s in samples} == {None}
    by_id = list(open_dataset(tmp_path / "board.csv", specs["eeg"], board_id=board, hop_s=2.0, label="sad"))
    assert [s.array.tobytes() for s in by_id] == [s.array.tobytes() for s in samples]
    assert {s.label for s in by_id} == {"sad"}
    with pytest.raises(InputError, match="a BrainFlow file needs the board option"):
        open_dataset(tmp_path / "board.csv", specs["eeg"])
    with pytest.raises(InputError, match="not a BrainFlow BoardIds name or number"):
        list(open_dataset(tmp_path / "board.csv", specs["eeg"], board="NO_SUCH_BOARD"))


@pytest.mark.parametrize("modality", ["face", "speech", "eeg"])
def test_empty_missing_and_unknown_folders_are_clear_errors(tmp_path: Path, specs, modality: str) -> None:
    spec = specs[modality]
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=f"dataset folder {empty} is empty; expected "):
        open_dataset(empty, spec)
    with pytest.raises(InputError, match=f"dataset {tmp_path / 'nope'} does not exist"):
        open_dataset(tmp_path / "nope", spec)
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "readme.txt").write_text("not data\n")
    with pytest.raises(InputError, match=f"{other} is no {modality} dataset layout edge-mer reads; expected"):
        open_dataset(other, spec)
    with pytest.raises(InputError, match="unknown dataset option\\(s\\) colour"):
        open_dataset(other, spec, colour="red")


def test_samples_that_do_not_fit_the_input_tensor_are_refused(tmp_path: Path, specs) -> None:
    (tmp_path / "happy").mkdir()
    cv2.imwrite(str(tmp_path / "happy" / "a.png"), _face(0))
    wrong = dataclasses.replace(specs["face"], preprocessing=FaceParams(size=(48, 48)))
    with pytest.raises(InputError, match="preprocessed shape \\[1, 48, 48\\] does not fit input input_1 "
                                         "\\['N', 1, 64, 64\\]"):
        list(open_dataset(tmp_path, wrong))
