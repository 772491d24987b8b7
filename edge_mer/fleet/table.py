"""The fleet table ``edge-mer fleet watch`` prints, live and as its final summary (plain text, fixed columns).

Columns: DEVICE, STATE (online/offline/unknown, from the retained status),
HEALTH (the retained health ``status``), LABEL, VAL and ARO (latest
valence/arousal), DEC/S (decisions per second over the rate window), LAG_S,
DECISIONS (distinct decisions received), GAPS (sequence numbers missing),
DUPS (duplicates dropped) and RECONN (times the status went online again
after offline). A missing value is ``-``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: (header, row key, format)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("DEVICE", "device", "s"), ("STATE", "state", "s"), ("HEALTH", "health", "s"), ("LABEL", "label", "s"),
    ("VAL", "valence", "+.2f"), ("ARO", "arousal", "+.2f"), ("DEC/S", "rate", ".1f"), ("LAG_S", "lag_s", ".2f"),
    ("DECISIONS", "decisions", "d"), ("GAPS", "gaps", "d"), ("DUPS", "duplicates", "d"),
    ("RECONN", "reconnects", "d"),
)
_NUMERIC = {key for _, key, fmt in COLUMNS if fmt != "s"}


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    text = format(value, fmt)
    return text if len(text) <= 24 else text[:23] + "~"


def render_table(rows: Sequence[dict[str, Any]]) -> str:
    """``rows`` (from :meth:`Fleet.rows <edge_mer.fleet.state.Fleet.rows>`) as aligned text, one line each."""
    cells = [[header for header, _, _ in COLUMNS]]
    cells += [[_cell(row.get(key), fmt) for _, key, fmt in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    lines = []
    for line in cells:
        parts = [text.rjust(w) if key in _NUMERIC else text.ljust(w)
                 for text, w, (_, key, _) in zip(line, widths, COLUMNS)]
        lines.append("  ".join(parts).rstrip())
    if not rows:
        lines.append("(no devices yet)")
    return "\n".join(lines)


def render_summary(rows: Sequence[dict[str, Any]], *, url: str, prefix: str, elapsed_s: float,
                   messages: int) -> str:
    """The final report: a header line, the table, and a totals line."""
    online = sum(1 for row in rows if row["state"] == "online")
    head = (f"fleet summary: {len(rows)} device(s), {online} online, {messages} message(s) "
            f"in {elapsed_s:.1f} s from {url} (prefix {prefix!r})")
    totals = (f"total: {sum(r['decisions'] for r in rows)} decision(s), {sum(r['gaps'] for r in rows)} missing "
              f"by seq (gaps), {sum(r['duplicates'] for r in rows)} duplicate(s) removed, "
              f"{sum(r['renumbered'] for r in rows)} renumbering(s), "
              f"{sum(r['bad_messages'] for r in rows)} unreadable message(s)")
    return "\n".join([head, render_table(rows), totals])
