"""A box as a model writes it: the inverse of ``core.parsing.box_to_sent``.

Whoever plays the model (the oracle cassette of ``run-offline``, test servers)
encodes a known box with this module, so the encoding and the node's decoding
are one pair of functions in one layer and cannot disagree about a convention.
"""

from __future__ import annotations

from step_perception.core.profiles import BoxConvention
from step_perception.core.types import Box2D, PreparedImage

__all__ = ["encode_box", "encode_source_box"]


def encode_box(
    box: Box2D, convention: BoxConvention, sent_width: int, sent_height: int
) -> tuple[float, float, float, float]:
    """Return the four numbers that ``box_to_sent`` reads back as ``box`` (sent pixels)."""
    x1, y1, x2, y2 = box.x1, box.y1, box.x2, box.y2
    if convention is not BoxConvention.ABS_PIXELS_SENT:
        x1, x2 = 1000.0 * x1 / sent_width, 1000.0 * x2 / sent_width
        y1, y2 = 1000.0 * y1 / sent_height, 1000.0 * y2 / sent_height
    if convention is BoxConvention.NORM_1000_YXYX:
        return y1, x1, y2, x2
    return x1, y1, x2, y2


def encode_source_box(
    box: Box2D, image: PreparedImage, convention: BoxConvention
) -> tuple[float, float, float, float]:
    """Return the four numbers a model answers for ``box`` (source pixels) seeing ``image``."""
    x1, y1 = image.transform.to_sent(box.x1, box.y1)
    x2, y2 = image.transform.to_sent(box.x2, box.y2)
    return encode_box(Box2D(x1, y1, x2, y2), convention, image.width, image.height)
