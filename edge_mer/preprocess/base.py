"""What every preprocessor returns when a window cannot be classified."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Invalid:
    """A window that must not be classified, and why (e.g. ``"no face"``, ``"silence"``)."""

    reason: str
