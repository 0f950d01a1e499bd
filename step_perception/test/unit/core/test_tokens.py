"""The Step-3 image-token function (pure; checked against vLLM's code and server in test/vllm/)."""

from __future__ import annotations

import pytest
from step_perception.core.errors import ImageError
from step_perception.core.tokens import (
    STEP3_CROP_TOKENS,
    STEP3_GLOBAL_TOKENS,
    step3_image_tokens,
    step3_tiling,
)


@pytest.mark.parametrize(
    ("width", "height", "tokens"),
    [
        # vLLM 0.32's ImagePatcher, as listed in issue 11 and measured on the server.
        (640, 480, 171),
        (728, 410, 337),
        (1072, 603, 337),
        (1280, 720, 670),
        (1920, 1080, 836),
        (727, 545, 171),
    ],
)
def test_known_sizes(width: int, height: int, tokens: int) -> None:
    assert step3_image_tokens(width, height) == tokens


def test_small_images_cost_only_the_global_view() -> None:
    tiling = step3_tiling(727, 727)
    assert (tiling.window, tiling.crops, tiling.newlines) == (0, 0, 0)
    assert tiling.tokens == STEP3_GLOBAL_TOKENS


def test_1080p_is_a_four_by_two_grid_of_crops() -> None:
    tiling = step3_tiling(1920, 1080)
    assert (tiling.window, tiling.cols, tiling.rows) == (504, 4, 2)
    assert (tiling.crop_width, tiling.crop_height) == (2016, 1008)
    assert tiling.tokens == 8 * STEP3_CROP_TOKENS + STEP3_GLOBAL_TOKENS + 1


def test_long_side_is_capped_at_3024() -> None:
    assert step3_image_tokens(6048, 4032) == step3_image_tokens(3024, 2016)


def test_wide_small_image_gets_crops_of_its_short_side() -> None:
    # Below 728 px a strip wider than 1.5:1 is cut into windows of its height.
    tiling = step3_tiling(700, 400)
    assert (tiling.window, tiling.cols, tiling.rows) == (400, 2, 1)


def test_cost_never_falls_when_the_image_grows_within_an_aspect() -> None:
    costs = [step3_image_tokens(round(s * 16 / 9), s) for s in range(200, 1700, 10)]
    assert costs == sorted(costs)


@pytest.mark.parametrize(("width", "height"), [(0, 10), (10, 0), (-1, 5)])
def test_empty_size_is_an_image_error(width: int, height: int) -> None:
    with pytest.raises(ImageError):
        step3_tiling(width, height)
