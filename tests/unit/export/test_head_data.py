"""The fusion-head data reader (edge_mer_calibration.head): the .npz format, bounds and one-line refusals.

Also files serving several heads: embedding inputs, label sets, arrays another head declares, mask column names.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from attention_models import ATTENTION_INPUTS, SETS_OUTPUT, SPEECH_EMBEDDING, multi_head_rows
from edge_mer.errors import InputError
from edge_mer.bundle.schema import TensorInfo
from edge_mer_calibration.head import MAX_DATA_BYTES, MAX_ROWS, read_head_npz
from export_models import HEAD_INPUTS, HEAD_LABELS, head_rows, write_claimed_npz, write_head_npz


def _read(path: Path, **kwargs: object):
    return read_head_npz(path, HEAD_INPUTS, HEAD_LABELS, **kwargs)


def test_rows_feeds_and_labels_round_trip(tmp_path: Path) -> None:
    rows = head_rows(70, seed=1)
    data = _read(write_head_npz(tmp_path / "eval.npz", rows))
    assert len(data) == 70 and data.labels == tuple(rows["labels"].tolist()) and data.va is None
    assert {k: v.dtype for k, v in data.arrays.items()} == {"face": np.float32, "speech": np.float32,
                                                             "mask": np.float32}
    feeds = data.feeds(32)
    assert [f["face"].shape for f in feeds] == [(32, 7), (32, 7), (6, 7)]
    np.testing.assert_array_equal(np.concatenate([f["mask"] for f in feeds]), rows["mask"])
    part = data.subset([3, 1])
    assert part.labels == (rows["labels"][3], rows["labels"][1]) and len(part.row_keys()) == 2
    assert part.row_keys() <= data.row_keys()


def test_calibration_rows_need_no_labels_and_float64_is_cast(tmp_path: Path) -> None:
    rows = {k: v.astype(np.float64) for k, v in head_rows(10, seed=2).items() if k != "labels"}
    data = _read(write_head_npz(tmp_path / "calib.npz", rows), need_labels=False)
    assert data.labels is None and data.arrays["face"].dtype == np.float32


def test_valence_arousal_targets_only_where_the_head_has_that_output(tmp_path: Path) -> None:
    rows = head_rows(8, seed=3)
    rows["valence_arousal"] = np.linspace(-1, 1, 16).reshape(8, 2)
    path = write_head_npz(tmp_path / "va.npz", rows)
    assert _read(path, allow_va=True).va.shape == (8, 2)
    with pytest.raises(InputError, match="unexpected array 'valence_arousal.npy'"):
        _read(path)


def _edit(rows: dict[str, np.ndarray], case: str) -> dict[str, np.ndarray]:
    rows = dict(rows)
    if case == "wrong width":
        rows["face"] = rows["face"][:, :6]
    elif case == "missing input":
        del rows["speech"]
    elif case == "missing labels":
        del rows["labels"]
    elif case == "unknown label":
        rows["labels"] = rows["labels"].copy()
        rows["labels"][3] = "joy"
    elif case == "row counts differ":
        rows["mask"] = rows["mask"][:-1]
    elif case == "extra array":
        rows["weights"] = np.ones((len(rows["mask"]), 1))
    elif case == "mask not 0/1":
        rows["mask"] = rows["mask"] * 0.5
    elif case == "empty mask row":
        rows["face"][2], rows["speech"][2], rows["mask"][2] = 0.0, 0.0, 0.0
    elif case == "masked input not zero":
        i = int(np.flatnonzero(rows["mask"][:, 0] == 0)[0])
        rows["face"][i, 0] = 0.3
    elif case == "not probabilities":
        rows["speech"][np.flatnonzero(rows["mask"][:, 1] == 1)[0]] = 0.9
    elif case == "nan":
        rows["face"][0, 0] = np.nan
    elif case == "integer input":
        rows["face"] = (rows["face"] > 0.5).astype(np.int64)
    elif case == "object labels":
        rows["labels"] = rows["labels"].astype(object)
    elif case == "3-d input":
        rows["face"] = rows["face"][:, :, None]
    return rows


CASES = {
    "wrong width": "array 'face' has shape [20, 6], the head's input is [rows, 7]",
    "missing input": "lacks array 'speech'",
    "missing labels": "lacks array 'labels'",
    "unknown label": "labels row 3 is 'joy', not one of the head's output labels",
    "row counts differ": "arrays have different row counts",
    "extra array": "unexpected array 'weights.npy'",
    "mask not 0/1": "mask values must be 0 or 1",
    "empty mask row": "mask row 2 is all zero",
    "masked input not zero": "is masked out (mask 0) but not all zero",
    "not probabilities": "is not probabilities",
    "nan": "input 'face' row 0 column 0 is nan, not a finite float32 value",
    "integer input": "dtype int64, expected float16, float32 or float64",
    "object labels": "expected a 1-d unicode string array",
    "3-d input": "shape [20, 7, 1], expected [rows, width]",
}


@pytest.mark.parametrize("case", CASES)
def test_malformed_head_data_is_one_line_input_error(tmp_path: Path, case: str) -> None:
    rows = _edit({k: v.copy() for k, v in head_rows(20, seed=4).items()}, case)
    np.savez(tmp_path / "bad.npz", **rows)  # object arrays are pickled by savez: the reader must refuse them
    with pytest.raises(InputError) as caught:
        _read(tmp_path / "bad.npz")
    message = str(caught.value)
    assert CASES[case] in message and "\n" not in message and str(tmp_path / "bad.npz") in message


def test_the_first_bad_mask_value_is_named(tmp_path: Path) -> None:
    rows = head_rows(20, seed=4)
    rows["mask"][5, 1] = 0.5
    with pytest.raises(InputError, match=r"mask row 5 column 1 is 0.5; mask values must be 0 or 1$"):
        _read(write_head_npz(tmp_path / "mask.npz", rows))


def test_values_beyond_the_input_dtype_are_refused_after_the_cast(tmp_path: Path) -> None:
    rows = {k: v.copy() for k, v in multi_head_rows(12, seed=9).items()}
    rows[SPEECH_EMBEDDING] = rows[SPEECH_EMBEDDING].astype(np.float64)
    valid = int(np.flatnonzero(rows["mask"][:, 1] == 1)[0])
    rows[SPEECH_EMBEDDING][valid, 3] = 1e39  # finite as float64, inf as the float32 the head is fed
    path = write_head_npz(tmp_path / "big.npz", rows)
    with pytest.raises(InputError, match=rf"input 'speech.embedding' row {valid} column 3 is 1e\+39, not a finite "
                                         r"float32 value$"):
        read_head_npz(path, ATTENTION_INPUTS, HEAD_LABELS, shared=["speech", "label_sets"])
    half = tuple(TensorInfo(t.name, t.shape, dtype="float16", kind=t.kind, labels=t.labels) for t in ATTENTION_INPUTS)
    rows[SPEECH_EMBEDDING][valid, 3] = 70000.0  # above float16's largest value (65504)
    path = write_head_npz(tmp_path / "half.npz", rows)
    with pytest.raises(InputError, match=rf"row {valid} column 3 is 70000, not a finite float16 value$"):
        read_head_npz(path, half, HEAD_LABELS, shared=["speech", "label_sets"])
    rows[SPEECH_EMBEDDING][valid, 3] = 60000.0
    data = read_head_npz(write_head_npz(tmp_path / "ok.npz", rows), half, HEAD_LABELS, shared=["speech", "label_sets"])
    assert data.arrays[SPEECH_EMBEDDING].dtype == np.float16 and np.isfinite(data.arrays[SPEECH_EMBEDDING]).all()


def test_headers_asking_for_more_data_in_total_than_the_budget_are_refused_before_reading(tmp_path: Path) -> None:
    # Each header is within the row and width bounds; together they ask for more than MAX_DATA_BYTES.
    import zipfile

    rows = MAX_ROWS
    width = MAX_DATA_BYTES // (3 * rows * 8) + 1  # three float64 arrays of this width pass the total
    assert width <= 1024
    path = write_claimed_npz(tmp_path / "wide.npz", "face", (rows, width), descr="<f8")
    with zipfile.ZipFile(path, "a") as zf:  # two more claimed-only members
        for key in ("speech", "mask"):
            header = zipfile.ZipFile(write_claimed_npz(tmp_path / f"{key}.npz", key, (rows, width), "<f8")).read(
                f"{key}.npy")
            zf.writestr(f"{key}.npy", header)
    total = 3 * rows * width * 8
    with pytest.raises(InputError) as caught:
        _read(path)
    assert str(caught.value) == (f"{path}: its arrays hold {total} bytes decompressed, at most {MAX_DATA_BYTES}")


def test_a_header_claiming_a_billion_rows_is_refused_before_reading(tmp_path: Path) -> None:
    path = write_claimed_npz(tmp_path / "huge.npz", "face", (10**9, 7))
    with pytest.raises(InputError, match=f"array 'face': 1000000000 rows, expected 1..{MAX_ROWS}"):
        _read(path)
    with pytest.raises(InputError, match="rows, expected 1..5"):
        _read(write_head_npz(tmp_path / "six.npz", head_rows(6, seed=5)), max_rows=5)


@pytest.mark.parametrize("content, message", [
    (b"not a zip at all", "is not a readable .npz file"),
    (b"PK\x03\x04" + b"\x00" * 40, "is not a readable .npz file"),
])
def test_files_that_are_not_npz_archives(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "x.npz"
    path.write_bytes(content)
    with pytest.raises(InputError, match=message):
        _read(path)
    with pytest.raises(InputError, match="does not exist"):
        _read(tmp_path / "absent.npz")


def test_truncated_array_data_and_fortran_order(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not a readable .npz file"):
        _read(write_claimed_npz(tmp_path / "short.npz", "face", (100, 7)))
    rows = head_rows(5, seed=6)
    rows["face"] = np.asfortranarray(rows["face"])
    np.savez(tmp_path / "f.npz", **rows)
    with pytest.raises(InputError, match="Fortran-ordered"):
        _read(tmp_path / "f.npz")


# --- files that serve several heads: embeddings, label sets, arrays of other heads, mask column names ---


def test_one_file_serves_heads_that_read_different_arrays(tmp_path: Path) -> None:
    rows = multi_head_rows(40, seed=7)
    path = write_head_npz(tmp_path / "all.npz", rows)
    stacked = _read(path, shared=[SPEECH_EMBEDDING, "label_sets"])
    assert set(stacked.arrays) == {"face", "speech", "mask"} and stacked.label_sets is None
    attention = read_head_npz(path, ATTENTION_INPUTS, HEAD_LABELS, shared=["speech", "label_sets"])
    assert attention.arrays[SPEECH_EMBEDDING].shape == (40, 128)
    compound = _read(path, multilabel=SETS_OUTPUT, need_label_sets=True, shared=[SPEECH_EMBEDDING])
    np.testing.assert_array_equal(compound.label_sets, rows["label_sets"])
    assert compound.subset([2, 0]).label_sets.tolist() == [rows["label_sets"][2].tolist(),
                                                           rows["label_sets"][0].tolist()]
    with pytest.raises(InputError, match="unexpected array 'speech.embedding.npy'"):
        _read(path, shared=["label_sets"])  # an array no shipped head declares is still refused


def _multi_edit(rows: dict[str, np.ndarray], case: str) -> dict[str, np.ndarray]:
    if case == "label sets not 0/1":
        rows["label_sets"][1, 2] = 0.5
    elif case == "label sets width":
        rows["label_sets"] = rows["label_sets"][:, :3]
    elif case == "label sets missing":
        del rows["label_sets"]
    elif case == "masked embedding not zero":
        i = int(np.flatnonzero(rows["mask"][:, 1] == 0)[0])
        rows[SPEECH_EMBEDDING][i, 5] = 0.2
    elif case == "embedding nan":
        rows[SPEECH_EMBEDDING][0, 0] = np.inf
    return rows


MULTI_CASES = {
    "label sets not 0/1": "label_sets row 1 column 2 is 0.5; values must be 0 or 1",
    "label sets width": "label_sets has shape [30, 3], expected [rows, 4] (one 0/1 column per label of output 'sets'",
    "label sets missing": "lacks array 'label_sets'",
    "masked embedding not zero": "input 'speech.embedding' row",
    "embedding nan": "input 'speech.embedding' row 0 column 0 is inf, not a finite float32 value",
}


@pytest.mark.parametrize("case", MULTI_CASES)
def test_malformed_label_sets_and_embeddings_are_one_line_input_errors(tmp_path: Path, case: str) -> None:
    rows = _multi_edit({k: v.copy() for k, v in multi_head_rows(30, seed=8).items()}, case)
    path = write_head_npz(tmp_path / "bad.npz", rows)
    with pytest.raises(InputError) as caught:
        if "label sets" in case:
            _read(path, multilabel=SETS_OUTPUT, need_label_sets=True, shared=[SPEECH_EMBEDDING])
        else:
            read_head_npz(path, ATTENTION_INPUTS, HEAD_LABELS, shared=["speech", "label_sets"])
    message = str(caught.value)
    assert MULTI_CASES[case] in message and "\n" not in message and str(path) in message


def test_embeddings_need_not_be_probabilities(tmp_path: Path) -> None:
    rows = multi_head_rows(20, seed=9)
    rows[SPEECH_EMBEDDING] = rows[SPEECH_EMBEDDING] * 5.0  # values well outside [0, 1], rows summing past 1
    data = read_head_npz(write_head_npz(tmp_path / "e.npz", rows), ATTENTION_INPUTS, HEAD_LABELS,
                         shared=["speech", "label_sets"])
    assert float(np.abs(data.arrays[SPEECH_EMBEDDING]).max()) > 1.0


def test_mask_labels_pick_each_heads_columns(tmp_path: Path) -> None:
    rows = head_rows(30, seed=10)
    # The file's mask has three columns (speech, an unused eeg, face) named by mask_labels.
    eeg = np.zeros((30, 1), np.float32)
    eeg[:5] = 1.0
    rows["mask"] = np.concatenate([rows["mask"][:, 1:2], eeg, rows["mask"][:, :1]], axis=1)
    rows["mask_labels"] = np.array(["speech", "eeg", "face"])
    data = _read(write_head_npz(tmp_path / "m.npz", rows), need_mask_labels=True)
    np.testing.assert_array_equal(data.arrays["mask"], head_rows(30, seed=10)["mask"])
    del rows["mask_labels"]
    with pytest.raises(InputError, match="lacks array 'mask_labels'; the heads it serves order their masks "
                                         "differently"):
        _read(write_head_npz(tmp_path / "n.npz", rows), need_mask_labels=True)


def test_rows_with_none_of_a_heads_encoders_are_left_out_for_it(tmp_path: Path) -> None:
    rows = head_rows(12, seed=11)
    rows["face"][:3], rows["speech"][:3] = 0.0, 0.0  # rows 0-2: only the eeg is valid
    rows["mask"] = np.concatenate([rows["mask"], np.zeros((12, 1), np.float32)], axis=1)
    rows["mask"][:3] = [0.0, 0.0, 1.0]
    rows["mask_labels"] = np.array(["face", "speech", "eeg"])
    data = _read(write_head_npz(tmp_path / "few.npz", rows))
    assert len(data) == 9 and data.labels == tuple(rows["labels"][3:].tolist())
    rows["mask_labels"] = np.array(["face", "speech", "face"])
    with pytest.raises(InputError, match="mask_labels .* must name each of the 3 mask columns once"):
        _read(write_head_npz(tmp_path / "dup.npz", rows))
