"""What every preprocessor returns when a window cannot be classified."""
from __future__ import annotations

from dataclasses import dataclass

from edge_mer.names import ReasonCode


@dataclass(frozen=True)
class Invalid:
    """A window that must not be classified: a :class:`ReasonCode` and text for people.

    ``reason`` defaults to the code's plain text (``"no face"``, ``"silence"``).
    """

    code: ReasonCode
    reason: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.code, ReasonCode):
            raise TypeError(f"Invalid.code must be a ReasonCode, got {self.code!r}")  # a programming error
        if not self.reason:
            object.__setattr__(self, "reason", self.code.text)
