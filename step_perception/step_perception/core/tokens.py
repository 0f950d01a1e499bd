"""Prompt tokens an image costs, computed the way the model's own image processor counts them.

The token count of an image is a property of the model family's processor, not of the pixels:
Step-3.7-Flash's processor (vLLM's ``Step3VLImageProcessor`` with its ``ImagePatcher``) always
sends one 728x728 global view (169 tokens) and, for images whose long side reaches 728 px (or that
are long and thin), adds 504x504 crops of 81 tokens each. So a 728x410 frame costs 337 tokens, the
same as a 1072x603 frame with 2.4x its pixels, while a 727x545 frame costs 171.

This module is pure Python (no torch, no PIL): the node can price a send geometry before it
encodes anything. ``step3_tiling`` mirrors vLLM 0.32's
``vllm/transformers_utils/processors/step3_vl.py`` (``ImagePatcher.get_num_patches`` and
``Step3VLImageProcessor.get_num_image_tokens``) line for line, float arithmetic included, and the
integration tests check it against vLLM's own code and against the server's ``usage.prompt_tokens``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache

from step_perception.core.errors import ImageError

__all__ = [
    "STEP3_CROP_TOKENS",
    "STEP3_GLOBAL_TOKENS",
    "STEP3_LOW_CANVAS_SIDE",
    "STEP3_MAX_IMAGE_SIDE",
    "Detail",
    "SendSize",
    "Step3Tiling",
    "most_pixels_within",
    "step3_fewest_tokens_size",
    "step3_image_tokens",
    "step3_tiling",
]

#: Tokens of the 728x728 global view: 13x13 features plus ``<im_start>``/``<im_end>``.
STEP3_GLOBAL_TOKENS = 169 + 2
#: Tokens of one 504x504 crop: 9x9 features plus ``<patch_start>``/``<patch_end>``.
STEP3_CROP_TOKENS = 81 + 2
#: The processor first scales an image whose long side exceeds this down to it.
STEP3_MAX_IMAGE_SIDE = 3024
_GLOBAL_SIDE = 728  # long side from which crops start
_CROP_SIDE = 504


@dataclass(frozen=True)
class Step3Tiling:
    """How Step-3's processor cuts one image, and what it costs.

    ``window`` is the crop side in pixels (0: no crops, only the global view); the crops form a
    ``cols`` x ``rows`` grid over the image resized to ``crop_width`` x ``crop_height``; one
    ``<patch_newline>`` token separates consecutive rows.
    """

    width: int
    height: int
    window: int
    cols: int
    rows: int
    crop_width: int
    crop_height: int

    @property
    def crops(self) -> int:
        """Number of crops (0 when the image is small enough for the global view alone)."""
        return self.cols * self.rows

    @property
    def newlines(self) -> int:
        """``<patch_newline>`` tokens: one between consecutive crop rows."""
        return max(0, self.rows - 1) if self.crops else 0

    @property
    def tokens(self) -> int:
        """Prompt tokens of the image (what the server adds to ``usage.prompt_tokens``)."""
        return self.crops * STEP3_CROP_TOKENS + STEP3_GLOBAL_TOKENS + self.newlines


def _window_size(long: int, short: int) -> int:
    # ImagePatcher.determine_window_size
    if long < _GLOBAL_SIDE:
        return short if long / short > 1.5 else 0
    return min(short, _CROP_SIDE) if long / short > 4 else _CROP_SIDE


def _crop_side(side: int, window: int) -> int:
    # ImagePatcher.get_image_size_for_crop, one axis: round up when the rest exceeds 20 %.
    ratio = side / window
    if ratio < 1:
        return side
    decimal = ratio - side // window
    return window * (int(ratio) + 1 if decimal > 0.2 else int(ratio))


def _windows_along(side: int, window: int) -> int:
    # ImagePatcher.slide_window with size == step == window, one axis.
    return 1 if side <= window else math.ceil((side - window) / window + 1)


def step3_tiling(width: int, height: int) -> Step3Tiling:
    """Return how Step-3.7's processor tiles a ``width`` x ``height`` image.

    Raises ``ImageError`` for an empty size.
    """
    if width <= 0 or height <= 0:
        raise ImageError(f"image size {width}x{height} is empty")
    w, h = width, height
    # get_image_size_for_padding: a very thin image is padded to a square first.
    ratio = w / h
    if min(w, h) < 32 and (ratio > 4 or ratio < 1 / 4):
        w = h = max(w, h)
    # get_image_size_for_preprocess: cap the long side (truncating, as int() does).
    if max(w, h) > STEP3_MAX_IMAGE_SIDE:
        scale = STEP3_MAX_IMAGE_SIDE / max(w, h)
        w, h = int(w * scale), int(h * scale)
    window = _window_size(max(w, h), min(w, h))
    if window == 0:
        return Step3Tiling(width, height, 0, 0, 0, w, h)
    cw, ch = _crop_side(w, window), _crop_side(h, window)
    return Step3Tiling(
        width, height, window, _windows_along(cw, window), _windows_along(ch, window), cw, ch
    )


def step3_image_tokens(width: int, height: int) -> int:
    """Return the prompt tokens a ``width`` x ``height`` image costs on Step-3.7-Flash."""
    return step3_tiling(width, height).tokens


#: Longest side of Step-3.7's cheapest send geometry: below 728 px (and at most 1.5:1) an image
#: costs only the 171-token global view.
STEP3_LOW_CANVAS_SIDE = 727


class Detail(str, Enum):
    """How the node picks the size of the image it sends (parameter ``detail``)."""

    LOW = "low"  # the fewest prompt tokens (pads to a cheap canvas where the profile knows one)
    BALANCED = "balanced"  # the most pixels within the profile's image-token budget
    HIGH = "high"  # a fixed longest side: max_image_side (and max_pixels), the classic setting


@dataclass(frozen=True)
class SendSize:
    """The sent image: content resized to ``width`` x ``height`` at the top-left of a canvas.

    ``canvas_width`` x ``canvas_height`` is what the model sees (equal to the content size when
    nothing is padded). Padding only at the right and bottom keeps the sent-to-source map a pure
    scale, so boxes map back exactly (and boxes in the padding clamp to the image's edge).
    """

    width: int
    height: int
    canvas_width: int
    canvas_height: int

    @property
    def padded(self) -> bool:
        """Whether the canvas is larger than the content."""
        return (self.canvas_width, self.canvas_height) != (self.width, self.height)


def _fit(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Aspect-kept size with the longest side ``long_side`` (never larger than the source)."""
    f = min(1.0, long_side / max(width, height))
    return max(1, min(width, round(width * f))), max(1, min(height, round(height * f)))


def step3_fewest_tokens_size(width: int, height: int) -> SendSize:
    """Return Step-3.7's cheapest geometry: at most 727 px, padded to 4:3 when wider (or 3:4).

    A 1280x720 frame becomes 727x409 content on a 727x545 canvas: 171 tokens instead of 337.
    """
    cw, ch = _fit(width, height, STEP3_LOW_CANVAS_SIDE)
    if max(cw, ch) / min(cw, ch) <= 4 / 3:
        return SendSize(cw, ch, cw, ch)
    if cw >= ch:
        return SendSize(cw, ch, cw, max(ch, round(cw * 3 / 4)))
    return SendSize(cw, ch, max(cw, round(ch * 3 / 4)), ch)


@lru_cache(maxsize=256)
def _most_pixels_within(
    width: int, height: int, budget: int, cost: Callable[[int, int], int]
) -> tuple[int, int]:
    # The cost is a step function of the size: scan every longest side from the largest down.
    # When no size fits the budget, the cheapest cost's largest size wins.
    cheapest: tuple[int, tuple[int, int]] | None = None
    for long_side in range(min(max(width, height), STEP3_MAX_IMAGE_SIDE), 15, -1):
        w, h = _fit(width, height, long_side)
        tokens = cost(w, h)
        if tokens <= budget:
            return w, h
        if cheapest is None or tokens < cheapest[0]:
            cheapest = (tokens, (w, h))
    return cheapest[1] if cheapest is not None else _fit(width, height, 16)


def most_pixels_within(
    width: int, height: int, budget: int, cost: Callable[[int, int], int]
) -> SendSize:
    """Return the largest aspect-kept size whose ``cost`` is at most ``budget`` tokens.

    For Step-3.7 and a budget of 337 a 1280x720 frame goes at 1072x603 (2.2x the pixels of the
    728x410 that costs the same). Never upscales; when no size fits the budget (a 16:9 image
    never costs less than 337 on Step-3.7 without padding), the largest of the cheapest sizes.
    """
    if width <= 0 or height <= 0:
        raise ImageError(f"image size {width}x{height} is empty")
    w, h = _most_pixels_within(width, height, budget, cost)
    return SendSize(w, h, w, h)
