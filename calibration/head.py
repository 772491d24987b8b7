"""Fusion-head evaluation and calibration data: one ``.npz`` of per-row head inputs and labels.

Format (``numpy.savez``/``savez_compressed``, read without pickles):

* one float array per head input, named exactly as the input (the encoder
  names and ``mask``), shape ``[n, K]`` with ``K`` the input's width; the
  encoder inputs hold probabilities (each value in [0, 1], row sums at most
  1) and all zeros where that encoder is masked out, as the runtime feeds
  them; ``mask`` holds 0 or 1 per encoder, at least one 1 per row;
* ``labels``: a unicode string array ``[n]`` of the head's output labels,
  the truth of each row (needed for evaluation, optional for calibration);
* ``valence_arousal`` (optional): float ``[n, 2]`` targets in [-1, 1] for a
  head with a ``valence_arousal`` output;
* ``label_sets`` (optional; needed to gate a head with a ``multilabel``
  output): float ``[n, L]`` of 0 or 1, L = that output's labels in its
  order, the true label set of each row;
* ``mask_labels`` (optional): a unicode ``[M]`` array naming the columns of
  ``mask``, for a file that serves heads reading different encoders: each
  head then takes its own mask labels' columns (rows where none of them is
  1 are left out for that head). Without it ``mask`` is in the head's own
  mask-label order.

Embedding inputs (``kind`` ``embedding``, named ``<encoder>.<output>``) hold
finite ``[n, D]`` encoder features, all zeros where that encoder is masked
out, as the runtime feeds them. One file may hold the inputs of several
heads: arrays another head declares (``shared``) are skipped unread.

The file is untrusted input: every ``.npy`` header is read and bounded
(rows, width, dtype, label length), and the data all headers ask for
together (:data:`MAX_DATA_BYTES`), before any data is read; each problem is
one :class:`InputError` line naming the file and the array.
:func:`read_head_npz` returns :class:`HeadRows`, whose :meth:`~HeadRows.feeds`
are plain ``{input name: batch}`` dicts like the other readers' feeds.
"""
from __future__ import annotations

import hashlib
import logging
import zipfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_mer.bundle.schema import TensorInfo
from edge_mer.errors import InputError
from edge_mer_calibration.multilabel_metrics import first_not_binary

log = logging.getLogger(__name__)

LABELS_KEY = "labels"
VA_KEY = "valence_arousal"
MASK_KEY = "mask"
LABEL_SETS_KEY = "label_sets"
MASK_LABELS_KEY = "mask_labels"
_STRING_KEYS = (LABELS_KEY, MASK_LABELS_KEY)
#: Bounds on what one file may ask for.
MAX_FILE_BYTES = 1 << 30
MAX_ROWS = 200_000
MAX_WIDTH = 1024
MAX_LABEL_CHARS = 64
MAX_MEMBERS = 64
#: Bound on the data all array headers of one file ask for together (decompressed), checked before any is read.
MAX_DATA_BYTES = 2 << 30
#: Slack on probability bounds (float16 rounding, softmax sums).
_PROB_SLACK = 1e-3
_FLOAT_KINDS = ("f",)
Feed = dict[str, np.ndarray]


@dataclass(frozen=True)
class HeadRows:
    """Validated rows of head inputs: ``arrays`` by input name (``[n, K]``, the input's dtype), labels, targets."""

    arrays: dict[str, np.ndarray]
    labels: tuple[str, ...] | None
    va: np.ndarray | None
    source: str
    digest: str = field(default="", compare=False)
    #: ``[n, L]`` float32 0/1 true label sets of a head's multilabel output (``label_sets``), if given.
    label_sets: np.ndarray | None = field(default=None, compare=False)

    def __len__(self) -> int:
        return next(iter(self.arrays.values())).shape[0]

    def subset(self, rows: Sequence[int]) -> HeadRows:
        """The rows at ``rows`` (in that order)."""
        index = np.asarray(rows, dtype=np.int64)
        return HeadRows({k: v[index] for k, v in self.arrays.items()},
                        None if self.labels is None else tuple(self.labels[i] for i in index),
                        None if self.va is None else self.va[index], self.source, self.digest,
                        None if self.label_sets is None else self.label_sets[index])

    def feeds(self, batch_size: int = 1) -> list[Feed]:
        """``{input name: rows}`` dicts of up to ``batch_size`` rows each, in file order."""
        if batch_size < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        return [{k: np.ascontiguousarray(v[i:i + batch_size]) for k, v in self.arrays.items()}
                for i in range(0, len(self), batch_size)]

    def row_keys(self) -> set[bytes]:
        """One digest per row over every input (to find rows shared with another file)."""
        names = sorted(self.arrays)
        return {hashlib.sha256(b"".join(self.arrays[k][i].tobytes() for k in names)).digest()
                for i in range(len(self))}


def _header(fh: object, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from a ``.npy`` header, read without the data."""
    version = np.lib.format.read_magic(fh)
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
    else:
        raise InputError(f"{where}: .npy format version {version} is not supported (1.0 or 2.0)")
    if fortran:
        raise InputError(f"{where}: Fortran-ordered arrays are not supported; save C-ordered arrays")
    return tuple(int(d) for d in shape), np.dtype(dtype)


def _check_header(key: str, shape: tuple[int, ...], dtype: np.dtype, where: str, max_rows: int) -> None:
    """Refuse an array whose header is the wrong kind or size, before its data is read."""
    limit = MAX_WIDTH if key == MASK_LABELS_KEY else max_rows
    if not shape or not 1 <= shape[0] <= limit:
        rows = shape[0] if shape else "no"
        raise InputError(f"{where}: {rows} rows, expected 1..{limit}")
    if key in _STRING_KEYS:
        if len(shape) != 1 or dtype.kind != "U" or dtype.itemsize > 4 * MAX_LABEL_CHARS:
            raise InputError(f"{where}: expected a 1-d unicode string array (labels of at most "
                             f"{MAX_LABEL_CHARS} characters), got {dtype} {list(shape)}")
        return
    if len(shape) != 2 or not 1 <= shape[1] <= MAX_WIDTH:
        raise InputError(f"{where}: shape {list(shape)}, expected [rows, width] with width 1..{MAX_WIDTH}")
    if dtype.kind not in _FLOAT_KINDS or dtype.itemsize > 8:
        raise InputError(f"{where}: dtype {dtype}, expected float16, float32 or float64")


def _headers(zf: zipfile.ZipFile, path: Path, allowed: Sequence[str], max_rows: int
             ) -> list[tuple[zipfile.ZipInfo, str]]:
    """Every member with its array name, each header checked, and their total data bounded, before any data is read."""
    members = zf.infolist()
    if len(members) > MAX_MEMBERS:
        raise InputError(f"{path}: {len(members)} archive members, expected the head's inputs and labels "
                         f"({', '.join(allowed)})")
    checked: list[tuple[zipfile.ZipInfo, str]] = []
    total = 0
    for info in members:
        key = info.filename.removesuffix(".npy")
        if not info.filename.endswith(".npy") or key not in allowed or key in (k for _, k in checked):
            raise InputError(f"{path}: unexpected array {info.filename[:80]!r}; expected the head's inputs "
                             f"and labels ({', '.join(allowed)})")
        where = f"{path}: array {key!r}"
        with zf.open(info) as fh:
            shape, dtype = _header(fh, where)
        _check_header(key, shape, dtype, where, max_rows)
        total += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        checked.append((info, key))
    if total > MAX_DATA_BYTES:
        raise InputError(f"{path}: its arrays hold {total} bytes decompressed, at most {MAX_DATA_BYTES}")
    return checked


def _read_members(path: Path, allowed: Sequence[str], max_rows: int, skipped: Sequence[str] = ()
                  ) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` at ``path`` (``skipped`` ones only header-checked), headers bounded first."""
    allowed = [*allowed, *(k for k in skipped if k not in allowed)]
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        for info, key in _headers(zf, path, allowed, max_rows):
            if key in skipped:
                continue  # another shipped head's array: that head's read checks its data
            with zf.open(info) as fh:
                arrays[key] = np.lib.format.read_array(fh, allow_pickle=False)
    return arrays


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _load(path: Path, allowed: Sequence[str], max_rows: int, skipped: Sequence[str] = ()
          ) -> tuple[dict[str, np.ndarray], str]:
    """The arrays of the ``.npz`` at ``path`` and the file's sha256; InputError for anything unreadable."""
    if not path.is_file():
        raise InputError(f"head data {path} does not exist; expected an .npz file")
    size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise InputError(f"head data {path} is {size} bytes, at most {MAX_FILE_BYTES}")
    try:
        return _read_members(path, allowed, max_rows, skipped), _file_digest(path)
    except InputError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError) as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise InputError(f"head data {path} is not a readable .npz file: {first}") from None


def _check_input(tensor: TensorInfo, cast: np.ndarray, original: np.ndarray, mask: np.ndarray, where: str) -> None:
    """Encoder inputs: finite, probabilities (``embedding`` inputs: any finite features), all zero where masked.

    Finiteness is checked on ``cast`` (the values at the input's dtype, as they are fed): a value beyond
    that dtype's range becomes infinite there; the error shows the ``original`` value.
    """
    name = tensor.name
    infinite = np.argwhere(~np.isfinite(cast))
    if infinite.size:
        row, column = (int(v) for v in infinite[0])
        raise InputError(f"{where}: input {name!r} row {row} column {column} is {float(original[row, column]):g}, "
                         f"not a finite {cast.dtype} value")
    array = cast.astype(np.float64)
    bad = np.flatnonzero((array < -_PROB_SLACK).any(axis=1) | (array > 1 + _PROB_SLACK).any(axis=1)
                         | (array.sum(axis=1) > 1 + _PROB_SLACK))
    if bad.size and tensor.kind != "embedding":
        raise InputError(f"{where}: input {name!r} row {int(bad[0])} is not probabilities "
                         "(values in [0, 1], summing to at most 1)")
    leaked = np.flatnonzero((mask == 0) & (array != 0).any(axis=1))
    if leaked.size:
        raise InputError(f"{where}: input {name!r} row {int(leaked[0])} is masked out (mask 0) but not all zero; "
                         "the runtime feeds zeros for an encoder without a valid result")


def _check_mask(mask: np.ndarray, where: str) -> None:
    """Mask values 0 or 1, at least one 1 per row."""
    bad = first_not_binary(mask)
    if bad is not None:
        raise InputError(f"{where}: mask row {bad[0]} column {bad[1]} is {bad[2]:g}; mask values must be 0 or 1")
    empty = np.flatnonzero(mask.sum(axis=1) == 0)
    if empty.size:
        raise InputError(f"{where}: mask row {int(empty[0])} is all zero; the runtime runs the head only "
                         "when at least one encoder is valid")


def _labels(array: np.ndarray, allowed: Sequence[str], where: str) -> tuple[str, ...]:
    """The ``labels`` array as strings, each one of the head's output labels."""
    labels = tuple(str(v) for v in array.tolist())
    known = set(allowed)
    for i, label in enumerate(labels):
        if label not in known:
            raise InputError(f"{where}: labels row {i} is {label[:MAX_LABEL_CHARS]!r}, not one of the head's "
                             f"output labels ({', '.join(allowed)})")
    return labels


def _va(array: np.ndarray, where: str) -> np.ndarray:
    """The ``valence_arousal`` targets: ``[rows, 2]``, finite, in [-1, 1]."""
    if array.shape[1] != 2:
        raise InputError(f"{where}: {VA_KEY} has shape {list(array.shape)}, expected [rows, 2]")
    va = array.astype(np.float64)
    if not np.isfinite(va).all() or np.abs(va).max() > 1.0:
        raise InputError(f"{where}: {VA_KEY} values must be finite and in [-1, 1]")
    return va


def _label_sets(array: np.ndarray, output: TensorInfo, where: str) -> np.ndarray:
    """The ``label_sets`` truth: ``[rows, L]`` of 0 or 1 for the multilabel ``output``'s L labels."""
    if array.shape[1] != len(output.labels):
        raise InputError(f"{where}: {LABEL_SETS_KEY} has shape {list(array.shape)}, expected [rows, "
                         f"{len(output.labels)}] (one 0/1 column per label of output {output.name!r}: "
                         f"{', '.join(output.labels)})")
    bad = first_not_binary(array)
    if bad is not None:
        raise InputError(f"{where}: {LABEL_SETS_KEY} row {bad[0]} column {bad[1]} is {bad[2]:g}; values must be "
                         "0 or 1")
    return array.astype(np.float32)


def _column_of(name: str, mask_labels: Sequence[str]) -> int | None:
    """The mask column of input ``name``: its encoder's (``face`` for ``face`` and ``face.embedding``)."""
    matches = [i for i, label in enumerate(mask_labels) if name == label or name.startswith(f"{label}.")]
    return max(matches, key=lambda i: len(mask_labels[i])) if matches else None


def _select_mask(arrays: dict[str, np.ndarray], mask: TensorInfo | None, where: str,
                 need_mask_labels: bool) -> dict[str, np.ndarray]:
    """With ``mask_labels``: the head's mask columns, in its order, and only the rows with one of them valid."""
    names = arrays.pop(MASK_LABELS_KEY, None)
    if names is None:
        if need_mask_labels and mask is not None:
            raise InputError(f"{where} lacks array {MASK_LABELS_KEY!r}; the heads it serves order their masks "
                             f"differently, so name the mask's columns (this head: {', '.join(mask.labels)})")
        return arrays
    names = tuple(str(v) for v in names.tolist())
    if mask is None or MASK_KEY not in arrays:
        return arrays
    if len(names) != arrays[MASK_KEY].shape[1] or len(set(names)) != len(names):
        raise InputError(f"{where}: {MASK_LABELS_KEY} {list(names)[:8]} must name each of the "
                         f"{arrays[MASK_KEY].shape[1]} mask columns once")
    missing = [label for label in mask.labels if label not in names]
    if missing:
        raise InputError(f"{where}: {MASK_LABELS_KEY} lacks {missing[0]!r}, a mask label of the head "
                         f"({', '.join(mask.labels)})")
    selected = arrays[MASK_KEY][:, [names.index(label) for label in mask.labels]]
    if not np.isin(selected, (0.0, 1.0)).all():
        return {**arrays, MASK_KEY: selected}  # _check_mask names the bad values
    rows = np.flatnonzero(selected.sum(axis=1) > 0)
    if rows.size == 0:
        raise InputError(f"{where}: no row has any of the head's encoders ({', '.join(mask.labels)}) valid")
    if rows.size < selected.shape[0]:
        log.info("%s: %d rows have none of %s valid and are left out for this head", where,
                 selected.shape[0] - rows.size, ", ".join(mask.labels))
    return {**{k: v[rows] for k, v in arrays.items()}, MASK_KEY: selected[rows]}


def _allowed(names: Sequence[str], allow_va: bool, multilabel: TensorInfo | None) -> list[str]:
    """The arrays a head's file may hold: its inputs, labels, mask column names and its optional truths."""
    return [*names, LABELS_KEY, MASK_LABELS_KEY, *([VA_KEY] if allow_va else []),
            *([LABEL_SETS_KEY] if multilabel is not None else [])]


def _checked_inputs(arrays: dict[str, np.ndarray], inputs: Sequence[TensorInfo], where: str) -> dict[str, np.ndarray]:
    """Each input's array at the head's width and dtype, checked against the mask (format above)."""
    out: dict[str, np.ndarray] = {}
    for tensor in inputs:
        width = tensor.shape[-1]
        if arrays[tensor.name].shape[1] != width:
            raise InputError(f"{where}: array {tensor.name!r} has shape {list(arrays[tensor.name].shape)}, "
                             f"the head's input is [rows, {width}]")
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values become inf: _check_input names them
            out[tensor.name] = arrays[tensor.name].astype(tensor.np_dtype)
    n = next(iter(arrays.values())).shape[0]
    mask = arrays[MASK_KEY].astype(np.float64) if MASK_KEY in arrays else np.ones((n, 0))
    mask_labels = next((t.labels for t in inputs if t.name == MASK_KEY), ())
    if MASK_KEY in arrays:
        _check_mask(mask, where)
    for tensor in inputs:
        if tensor.name != MASK_KEY:
            index = _column_of(tensor.name, mask_labels)
            column = mask[:, index] if index is not None else np.ones(n)
            _check_input(tensor, out[tensor.name], arrays[tensor.name], column, where)
    return out


def read_head_npz(path: str | Path, inputs: Sequence[TensorInfo], output_labels: Sequence[str], *,
                  need_labels: bool = True, allow_va: bool = False, max_rows: int = MAX_ROWS,
                  multilabel: TensorInfo | None = None, need_label_sets: bool = False, shared: Sequence[str] = (),
                  need_mask_labels: bool = False) -> HeadRows:
    """The rows of the ``.npz`` at ``path`` for a head with ``inputs`` and ``output_labels`` (format above).

    ``need_labels``: ``labels`` must be present (evaluation); ``allow_va``:
    the file may carry ``valence_arousal`` targets (a head with such an
    output); ``multilabel``: the head's multilabel output, whose truth
    ``label_sets`` the file may (``need_label_sets``: must) carry;
    ``shared``: arrays other heads declare, skipped here;
    ``need_mask_labels``: the file must name its mask columns.
    """
    path = Path(path)
    names = [t.name for t in inputs]
    clash = [n for n in names if n in (LABELS_KEY, VA_KEY, LABEL_SETS_KEY, MASK_LABELS_KEY)]
    if clash:
        raise InputError(f"head input {clash[0]!r} has a name the head data format reserves")
    allowed = _allowed(names, allow_va, multilabel)
    arrays, digest = _load(path, allowed, max_rows, [k for k in shared if k not in allowed])
    where = f"head data {path}"
    missing = [n for n in names if n not in arrays] + ([LABELS_KEY] if need_labels and LABELS_KEY not in arrays
                                                        else [])
    missing += [LABEL_SETS_KEY] if need_label_sets and LABEL_SETS_KEY not in arrays else []
    if missing:
        raise InputError(f"{where} lacks array {missing[0]!r}; expected one array per head input "
                         f"({', '.join(names)}), {LABELS_KEY}"
                         + (f" and {LABEL_SETS_KEY} for output {multilabel.name!r}" if multilabel else ""))
    rows = {k: v.shape[0] for k, v in arrays.items() if k != MASK_LABELS_KEY}
    if len(set(rows.values())) != 1:
        raise InputError(f"{where}: arrays have different row counts {rows}")
    arrays = _select_mask(arrays, next((t for t in inputs if t.name == MASK_KEY), None), where, need_mask_labels)
    out = _checked_inputs(arrays, inputs, where)
    labels = _labels(arrays[LABELS_KEY], output_labels, where) if LABELS_KEY in arrays else None
    va = _va(arrays[VA_KEY], where) if VA_KEY in arrays else None
    label_sets = (_label_sets(arrays[LABEL_SETS_KEY], multilabel, where)
                  if LABEL_SETS_KEY in arrays and multilabel is not None else None)
    n = len(next(iter(out.values())))
    log.info("%s: %d head rows%s", path, n, "" if labels is None else ", labelled")
    return HeadRows(out, labels, va, str(path), digest, label_sets)
