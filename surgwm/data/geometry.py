"""Which stored pixels of a video become the cached `size` x `size` frame: border crop, scale, centre crop.

The decode stage (surgwm/data/decode.py) and any other writer of decoded frames share this one definition, so
two caches of the same video with the same params hold the same pixels.

  0. border (`data.border`, fractions of the stored height and width): a fixed band is cut off each side
     BEFORE anything else, so e.g. SurgVU's tool-list banner along the bottom never reaches the cache.
     Each band is rounded to an EVEN number of pixels, so the kept rectangle starts on the 2x2 chroma grid of
     4:2:0 video (an odd offset would make ffmpeg's crop round it, or shift chroma against luma). All zeros
     adds no filter at all: the filter chain, the decode key and the cached bytes stay what they were.
  1. scale: ONE `scale` filter maps the (cropped) stored frame to exact dims whose SHORT display side is
     `size` and whose long side keeps the display aspect (width * sar : height), so output pixels are square;
  2. a centre `crop` keeps size x size. Nothing is padded or stretched; the long side loses its edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from surgwm.params import DataParams


@dataclass(frozen=True)
class Border:
    """Fractions of the stored frame cut off before the square crop: top/bottom of its height, left/right of
    its width (validated in params.py as data.border)."""

    top: float = 0.0
    bottom: float = 0.0
    left: float = 0.0
    right: float = 0.0

    @classmethod
    def of(cls, data: "DataParams") -> "Border":
        b = data.border
        return cls(b.top, b.bottom, b.left, b.right)

    def is_zero(self) -> bool:
        return not (self.top or self.bottom or self.left or self.right)

    def key(self) -> list[float]:
        """Part of the decode key (only when non-zero, so default caches keep their key)."""
        return [float(self.top), float(self.bottom), float(self.left), float(self.right)]


@dataclass(frozen=True)
class Geometry:
    """The three filters for one video: border box (w, h, x, y) in stored pixels or None, scale dims, size."""

    box: tuple[int, int, int, int] | None
    dims: tuple[int, int]
    size: int


class GeometryError(ValueError):
    """The border leaves too little of this video's frame."""


def even_pixels(fraction: float, length: int) -> int:
    """`fraction` of `length` pixels, rounded to the nearest even count (0.08 of 720 = 57.6 -> 58)."""
    return 2 * round(fraction * length / 2)


def border_box(width: int, height: int, border: Border) -> tuple[int, int, int, int]:
    """(w, h, x, y) of the stored-pixel rectangle kept inside the border; x and y are even."""
    left, right = even_pixels(border.left, width), even_pixels(border.right, width)
    top, bottom = even_pixels(border.top, height), even_pixels(border.bottom, height)
    w, h = width - left - right, height - top - bottom
    if w < 2 or h < 2:
        raise GeometryError(f"data.border {border.key()} leaves {w}x{h} of a {width}x{height} frame")
    return w, h, left, top


def output_dims(width: int, height: int, sar: float, size: int) -> tuple[int, int]:
    """Scale target (w, h) in square pixels: short display side = size, long side keeps the display aspect."""
    disp_w, disp_h = width * (sar if sar > 0 else 1.0), float(height)
    if disp_w <= disp_h:
        return size, max(size, round(disp_h * size / disp_w))
    return max(size, round(disp_w * size / disp_h)), size


def plan_geometry(width: int, height: int, sar: float, size: int, border: Border | None = None) -> Geometry:
    """The geometry of one video: the border box (None for a zero border), then the scale of what remains."""
    if border is None or border.is_zero():
        return Geometry(None, output_dims(width, height, sar, size), size)
    box = border_box(width, height, border)
    return Geometry(box, output_dims(box[0], box[1], sar, size), size)


def apply_geometry(stream: Any, geometry: Geometry) -> Any:
    """Append the border crop (if any), the scale and the centre crop to an ffmpeg-python stream."""
    if geometry.box is not None:
        w, h, x, y = geometry.box
        stream = stream.filter("crop", w, h, x, y)
    return (stream
            .filter("scale", geometry.dims[0], geometry.dims[1])
            .filter("crop", geometry.size, geometry.size))          # centred by default
