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
from dataclasses import dataclass

from step_perception.core.errors import ImageError

__all__ = [
    "STEP3_CROP_TOKENS",
    "STEP3_GLOBAL_TOKENS",
    "STEP3_MAX_IMAGE_SIDE",
    "Step3Tiling",
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
