"""Valence/arousal coordinates of the canonical labels, written into the default bundle.

Source: Russell, J. A. (1980). A circumplex model of affect. Journal of
Personality and Social Psychology, 39(6), 1161-1178, Table 3 (direct circular
scaling). Each label sits on the unit circle at the angle Russell measured for
its closest affect word: valence = cos(angle), arousal = sin(angle).
Russell's 28 words have no "disgust"; we place it at "distressed" (138.0
degrees), our choice. "neutral" is the centre of the circumplex, (0, 0).
"""
from __future__ import annotations

import math

#: canonical label -> (Russell 1980 word, angle in degrees)
RUSSELL_1980_ANGLES: dict[str, tuple[str, float]] = {
    "happy": ("happy", 7.8),
    "surprise": ("astonished", 69.8),
    "angry": ("angry", 99.0),
    "fear": ("afraid", 116.9),
    "disgust": ("distressed", 138.0),
    "sad": ("sad", 207.5),
    "boredom": ("bored", 241.0),
}

SOURCE = ("Russell (1980), A circumplex model of affect, JPSP 39(6):1161-1178, Table 3 angles on the unit circle "
          "(valence=cos, arousal=sin): happy=happy 7.8, surprise=astonished 69.8, angry=angry 99.0, "
          "fear=afraid 116.9, disgust=distressed 138.0 (our choice; no Russell word), sad=sad 207.5, "
          "boredom=bored 241.0; neutral=(0,0) the centre")


def valence_arousal() -> dict[str, tuple[float, float]]:
    """Coordinates for every canonical label plus ``boredom``, rounded to 4 decimals."""
    table = {label: (round(math.cos(math.radians(a)), 4), round(math.sin(math.radians(a)), 4))
             for label, (_, a) in RUSSELL_1980_ANGLES.items()}
    table["neutral"] = (0.0, 0.0)
    return table
