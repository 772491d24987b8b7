"""Face encoder input parameters, free of OpenCV so that bundle manifests load without it."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from edge_mer.config import require

#: Most faces one frame may follow (each costs a crop and an encoder row per processed frame).
MAX_FACES = 16
Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels
#: Largest crop side a manifest may ask for (a batch of crops is allocated from it).
MAX_SIDE = 1024


@dataclass(frozen=True)
class FaceParams:
    """How a face crop becomes the encoder's input tensor.

    Pixels are scaled as ``(p / 255 - mean) / std`` per channel; ``margin`` is
    the fraction of the detected box's side added on each side before the
    square crop.  ``color`` is the model's input colour order (frames arrive
    as OpenCV BGR).
    """

    size: tuple[int, int] = (64, 64)
    color: Literal["gray", "bgr", "rgb"] = "gray"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    margin: float = 0.0
    interpolation: Literal["linear", "area", "cubic", "nearest"] = "linear"
    layout: Literal["NCHW", "NHWC"] = "NCHW"

    def __post_init__(self) -> None:
        require(len(self.size) == 2 and all(8 <= s <= MAX_SIDE for s in self.size),
                f"size must be [width, height], each 8..{MAX_SIDE} pixels, got {list(self.size)[:4]}")
        channels = self.channels
        for name in ("mean", "std"):
            value = getattr(self, name)
            require(len(value) in (1, channels),
                    f"{name} needs 1 or {channels} values for color {self.color!r}, got {len(value)}")
            require(all(math.isfinite(v) for v in value), f"{name} must be finite numbers, got {list(value)}")
        require(all(s > 0 for s in self.std), f"std must be > 0, got {list(self.std)}")
        require(0.0 <= self.margin <= 1.0, f"margin must be in 0..1, got {self.margin}")

    @property
    def channels(self) -> int:
        return 1 if self.color == "gray" else 3

    def input_shape(self, batch: int) -> tuple[int, int, int, int]:
        w, h = self.size
        if self.layout == "NCHW":
            return (batch, self.channels, h, w)
        return (batch, h, w, self.channels)
