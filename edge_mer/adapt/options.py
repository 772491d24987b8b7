"""``edge-mer adapt``'s options: one frozen dataclass, validated on construction (flags map 1:1 to fields)."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from edge_mer.adapt.folds import MAX_FOLDS, MIN_FOLDS
from edge_mer.config import require

#: Encoder names as a bundle manifest allows them.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MAX_ENCODERS = 16
STEP_S = (0.05, 10.0)
L2 = (1e-6, 1e6)


@dataclass(frozen=True)
class AdaptOptions:
    """What to adapt, from which session, onto which base bundle, and how it is cross-validated.

    ``encoders`` empty adapts the encoder a run would use for each stream of
    the session (skipping, with the reason, one that cannot be adapted);
    naming encoders makes any that cannot be adapted an error. ``step_s`` is
    the spacing of the analysis windows (the decision period of a default
    run); ``head_l2`` the L2 penalty of the per-user EEG head.
    """

    session: Path
    out: Path
    labels: Path | None = None
    bundle: Path | None = None
    folds: int = 3
    encoders: tuple[str, ...] = ()
    step_s: float = 0.5
    head_l2: float = 0.1

    def __post_init__(self) -> None:
        require(MIN_FOLDS <= self.folds <= MAX_FOLDS, f"folds must be in {MIN_FOLDS}..{MAX_FOLDS}, got {self.folds}")
        require(len(self.encoders) <= MAX_ENCODERS, f"encoders: {len(self.encoders)} named, expected at most "
                f"{MAX_ENCODERS}")
        for name in self.encoders:
            require(bool(_NAME.match(name)), f"encoder {name[:64]!r}: expected 1..64 letters, digits, '_', '.' or '-'")
            require(self.encoders.count(name) == 1, f"encoder {name!r} is named twice")
        low, high = STEP_S
        require(math.isfinite(self.step_s) and low <= self.step_s <= high,
                f"step_s must be in {low:g}..{high:g} s, got {self.step_s}")
        low, high = L2
        require(math.isfinite(self.head_l2) and low <= self.head_l2 <= high,
                f"head_l2 must be in {low:g}..{high:g}, got {self.head_l2}")
