"""The header row of a session's EEG CSV: channel names and an optional ``timestamp`` column.

:func:`read_eeg_header` reads and checks it for
:func:`~edge_mer.sessions.format.load_session` and the replay's
:class:`~edge_mer.sessions.replay.EegReplaySource`. The file is untrusted:
the header is at most ``MAX_HEADER_CHARS`` bytes of UTF-8 CSV with at most
``MAX_EEG_COLUMNS`` distinct names of at most ``MAX_CHANNEL_CHARS`` letters,
digits, spaces and `` _-.+()``, none a number, and errors name the file, the
line and a column number, never the header's text.
"""
from __future__ import annotations

import csv
from pathlib import Path

from edge_mer.errors import ConfigError
from edge_mer.numeric import is_number_text

TIMESTAMP_COLUMN = "timestamp"
MAX_EEG_COLUMNS = 1024
MAX_HEADER_CHARS = 65_536  # an EEG CSV header line
MAX_CHANNEL_CHARS = 64
_NAME_PUNCTUATION = " _-.+()"  # with letters and digits: "EEG Fpz-Cz", "ch_1"; never a line of some other file


def read_eeg_header(path: Path) -> tuple[tuple[str, ...], int | None]:
    """Channel names and the index of the ``timestamp`` column (or None) from an EEG CSV header.

    Errors name the file, the line and a column number, never the header's text (the file is untrusted).
    """
    where = f"eeg file {path} line 1"
    try:
        with open(path, "rb") as fh:
            raw = fh.readline(MAX_HEADER_CHARS + 1)
    except OSError as exc:
        raise ConfigError(f"eeg file {path}: cannot read its header ({exc.strerror or type(exc).__name__})") from None
    if len(raw) > MAX_HEADER_CHARS:
        raise ConfigError(f"{where}: longer than {MAX_HEADER_CHARS} bytes, expected a row of channel names")
    try:
        header = next(csv.reader([raw.decode("utf-8-sig")]), None)
    except UnicodeDecodeError:
        raise ConfigError(f"{where}: not UTF-8 text, expected a row of channel names (e.g. Fz,Cz,Pz)") from None
    except csv.Error:
        raise ConfigError(f"{where}: not a valid CSV row, expected channel names (e.g. Fz,Cz,Pz)") from None
    if not header:
        raise ConfigError(f"eeg file {path} is empty: expected a header row of channel names (e.g. Fz,Cz,Pz)")
    if len(header) > MAX_EEG_COLUMNS:
        raise ConfigError(f"{where}: {len(header)} columns, expected at most {MAX_EEG_COLUMNS}")
    names = [name.strip() for name in header]
    for i, name in enumerate(names):
        if not name or is_number_text(name):
            raise ConfigError(f"{where}: column {i + 1} of {len(names)} is {'a number' if name else 'empty'} where "
                              "a channel name is expected (the first row must name the channels, e.g. "
                              "Fz,Cz,Pz[,timestamp])")
        if len(name) > MAX_CHANNEL_CHARS or not all(ch.isalnum() or ch in _NAME_PUNCTUATION for ch in name):
            raise ConfigError(f"{where}: column {i + 1} is not a channel name (at most {MAX_CHANNEL_CHARS} letters, "
                              f"digits, spaces and {_NAME_PUNCTUATION.strip()})")
    ts = [i for i, name in enumerate(names) if name == TIMESTAMP_COLUMN]
    channels = tuple(name for name in names if name != TIMESTAMP_COLUMN)
    if not channels:
        raise ConfigError(f"{where}: no channel names, expected e.g. Fz,Cz,Pz[,timestamp]")
    dup = next(((names.index(name), i) for i, name in enumerate(names) if names.index(name) != i), None)
    if dup is not None:
        raise ConfigError(f"{where}: columns {dup[0] + 1} and {dup[1] + 1} name the same channel, "
                          "expected distinct names")
    return channels, (ts[0] if ts else None)
