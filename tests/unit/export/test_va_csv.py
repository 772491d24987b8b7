"""V/A-labelled CSVs (edge_mer_calibration.va_csv): the runtime's features per row, and one-line refusals."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from edge_mer.bundle import load_bundle
from edge_mer.errors import InputError
from edge_mer_calibration.face import read_face_folder
from edge_mer_calibration.speech import read_wav_folder
from edge_mer_calibration.va_csv import is_va_csv, read_va_csv
from export_models import face_images, va_bundle, write_va_csv, write_wavs


@pytest.fixture(scope="module")
def specs(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("va")
    face = load_bundle(va_bundle(root / "face", "face", True)).encoder("face")
    speech = load_bundle(va_bundle(root / "speech", "speech", False)).encoder("speech")
    return {"face": face, "speech": speech}


def test_face_rows_are_the_image_folder_readers_arrays(tmp_path: Path, specs: dict) -> None:
    images = face_images(tmp_path / "data" / "happy", 6, seed=1)
    csv = write_va_csv(tmp_path / "data" / "va.csv", images, seed=2)
    assert is_va_csv(csv)
    data = read_va_csv(csv, specs["face"])
    folder = list(read_face_folder(tmp_path / "data", specs["face"].preprocessing))
    assert len(data) == 6 and data.targets.shape == (6, 2) and np.abs(data.targets).max() <= 1
    for sample, reference in zip(data.samples, folder):
        np.testing.assert_array_equal(sample.array, reference.array)  # byte-identical to the runtime's crops
        assert sample.label is None and sample.source.startswith("va.csv:")
    assert data.subset([4, 0]).samples[0].array.tobytes() == data.samples[4].array.tobytes()


def test_speech_rows_are_the_wav_readers_features(tmp_path: Path, specs: dict) -> None:
    wavs = write_wavs(tmp_path / "data" / "angry", 3, seed=3)
    data = read_va_csv(write_va_csv(tmp_path / "data" / "va.csv", wavs, seed=4), specs["speech"])
    folder = list(read_wav_folder(tmp_path / "data", specs["speech"].preprocessing))
    assert len(data) == 3
    for sample, reference in zip(data.samples, folder):
        np.testing.assert_array_equal(sample.array, reference.array)


def test_silent_files_are_skipped_and_an_eeg_encoder_is_refused(tmp_path: Path, specs: dict) -> None:
    wavs = write_wavs(tmp_path / "d", 2, seed=5)
    import soundfile

    soundfile.write(str(tmp_path / "d" / "silence.wav"), np.zeros(24000), 16000, subtype="PCM_16")
    csv = write_va_csv(tmp_path / "d" / "va.csv", [*wavs, tmp_path / "d" / "silence.wav"], seed=6)
    assert len(read_va_csv(csv, specs["speech"])) == 2
    import dataclasses

    from edge_mer.preprocess.eeg import EegParams

    eeg = dataclasses.replace(specs["speech"], modality="eeg", preprocessing=EegParams(channels=("Fp1", "Fp2")))
    with pytest.raises(InputError, match="a eeg encoder cannot read them"):
        read_va_csv(csv, eeg)


BAD_ROWS = {
    "valence not a number": ("img.png,abc,0.1", "row 2: valence 'abc' is not a number in [-1, 1]"),
    "arousal out of range": ("img.png,0.2,1.5", "row 2: arousal '1.5' is not a number in [-1, 1]"),
    "valence nan": ("img.png,nan,0.1", "row 2: valence 'nan' is not a number in [-1, 1]"),
    "parent path": ("../img.png,0.1,0.1", "row 2: path '../img.png' must be a relative path inside"),
    "absolute path": ("/etc/passwd.png,0.1,0.1", "row 2: path '/etc/passwd.png' must be a relative path inside"),
    "missing file": ("absent.png,0.1,0.1", "row 2: path 'absent.png' does not exist"),
    "wrong suffix": ("img.wav,0.1,0.1", "row 2: path 'img.wav' is not a face sample file"),
    "too few fields": ("img.png,0.1", "row 2: 2 fields, expected 3 (path,valence,arousal)"),
    "link out": ("link.png,0.1,0.1", "row 2: path 'link.png' leads out of"),
    "undecodable image": ("junk.png,0.1,0.1", "row 2: cannot decode image junk.png"),
}


@pytest.mark.parametrize("case", BAD_ROWS)
def test_bad_rows_are_one_line_errors_naming_the_row(tmp_path: Path, specs: dict, case: str) -> None:
    data = tmp_path / "data"
    face_images(data, 1, seed=7)[0].rename(data / "img.png")
    (data / "junk.png").write_bytes(b"not a png")
    outside = face_images(tmp_path / "outside", 1, seed=8)[0]
    os.symlink(outside, data / "link.png")
    row, message = BAD_ROWS[case]
    csv = data / "va.csv"
    csv.write_text(f"path,valence,arousal\n{row}\n", encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_va_csv(csv, specs["face"])
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("text, message", [
    ("file,v,a\nimg.png,0,0\n", "header ['file', 'v', 'a'], expected path,valence,arousal"),
    ("path,valence,arousal\n", "has no rows after its header"),
    ("", "header None"),
    ("path,valence,arousal\n" + "img.png,0,0\n" * 4, "has more than 3 rows"),
])
def test_bad_files(tmp_path: Path, specs: dict, text: str, message: str) -> None:
    face_images(tmp_path, 1, seed=9)[0].rename(tmp_path / "img.png")
    csv = tmp_path / "va.csv"
    csv.write_text(text, encoding="utf-8")
    with pytest.raises(InputError, match=message.replace("[", r"\[").replace("]", r"\]")):
        read_va_csv(csv, specs["face"], max_rows=3)
    (tmp_path / "bin.csv").write_bytes(b"path,valence,arousal\n\xff\xfe,0,0\n")
    with pytest.raises(InputError, match="is not a readable UTF-8 CSV"):
        read_va_csv(tmp_path / "bin.csv", specs["face"])
