"""Send geometry per profile (parameter ``detail``) and the exact way back for padded images."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from step_perception.core.box_encoding import encode_source_box
from step_perception.core.config import PerceptionConfig
from step_perception.core.imaging import prepare_array_for, send_size
from step_perception.core.parsing import parse_answer
from step_perception.core.profiles import get_profile, profile_names
from step_perception.core.tokens import Detail, step3_image_tokens
from step_perception.core.types import Box2D


def _config(profile: str, detail: Detail, **extra: object) -> PerceptionConfig:
    return PerceptionConfig.from_mapping(
        {"model_profile": profile, "detail": detail.value, **extra}
    )


def test_step3p7_high_is_the_classic_728_side() -> None:
    size = send_size(_config("step3p7", Detail.HIGH), 1280, 720)
    assert (size.canvas_width, size.canvas_height) == (728, 410)
    assert step3_image_tokens(728, 410) == 337


def test_step3p7_balanced_spends_the_same_tokens_on_more_pixels() -> None:
    size = send_size(_config("step3p7", Detail.BALANCED), 1280, 720)
    assert not size.padded
    assert step3_image_tokens(size.width, size.height) <= 337
    assert size.width * size.height > 2 * 728 * 410
    # One px more on the long side would cost more than the budget.
    assert step3_image_tokens(size.width + 2, round((size.width + 2) * 9 / 16)) > 337


def test_step3p7_balanced_follows_the_budget_parameter() -> None:
    size = send_size(_config("step3p7", Detail.BALANCED, image_token_budget=700), 1280, 720)
    assert (size.width, size.height) == (1280, 720)  # 670 tokens: the source fits
    # Below the cheapest unpadded cost of 16:9 (337) the largest 337-token size is taken.
    low = send_size(_config("step3p7", Detail.BALANCED, image_token_budget=171), 1280, 720)
    assert low == send_size(_config("step3p7", Detail.BALANCED), 1280, 720)


def test_step3p7_low_pads_16_9_into_a_4_3_canvas_for_171_tokens() -> None:
    size = send_size(_config("step3p7", Detail.LOW), 1280, 720)
    assert (size.width, size.height) == (727, 409)
    assert (size.canvas_width, size.canvas_height) == (727, 545)
    assert step3_image_tokens(size.canvas_width, size.canvas_height) == 171
    tall = send_size(_config("step3p7", Detail.LOW), 720, 1280)
    assert (tall.canvas_width, tall.canvas_height) == (545, 727)
    four_three = send_size(_config("step3p7", Detail.LOW), 640, 480)
    assert not four_three.padded and (four_three.width, four_three.height) == (640, 480)


@pytest.mark.parametrize("profile", ["generic", "qwen2_5_vl", "gemini"])
def test_profiles_without_a_token_count_send_max_image_side(profile: str) -> None:
    for detail in Detail:
        size = send_size(_config(profile, detail), 1280, 720)
        assert (size.canvas_width, size.canvas_height) == (728, 410)


def _scene(width: int = 1280, height: int = 720) -> tuple[np.ndarray, list[Box2D]]:
    img = np.full((height, width, 3), 90, np.uint8)
    boxes = [Box2D(100, 80, 420, 300), Box2D(700, 400, 1180, 690), Box2D(20, 600, 140, 715)]
    for b in boxes:
        cv2.rectangle(img, (int(b.x1), int(b.y1)), (int(b.x2) - 1, int(b.y2) - 1), (0, 0, 255), -1)
    return img, boxes


@pytest.mark.parametrize("detail", list(Detail))
@pytest.mark.parametrize("profile", profile_names())
def test_oracle_round_trip_keeps_iou_above_0_98(profile: str, detail: Detail) -> None:
    # A perfect model answers the truth in the profile's convention, in whole numbers (the
    # schema asks for integers); parsing maps it back through the padding and the resize.
    bgr, truth = _scene()
    config = _config(profile, detail)
    image = prepare_array_for(bgr, config)
    decoded = cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[:2] == (image.height, image.width)
    conv = get_profile(profile)
    objects = [
        {
            "label": "red box",
            conv.box_key: [round(v) for v in encode_source_box(b, image, conv.box_convention)],
        }
        for b in truth
    ]
    parsed = parse_answer(json.dumps({"objects": objects}), conv, image)
    assert len(parsed.detections) == len(truth)
    for det, box in zip(parsed.detections, truth, strict=True):
        assert det.box.iou(box) >= 0.98, (det.box, box)


def test_padding_is_black_below_the_content() -> None:
    bgr, _ = _scene()
    image = prepare_array_for(bgr, _config("step3p7", Detail.LOW))
    decoded = cv2.imdecode(np.frombuffer(image.data, np.uint8), cv2.IMREAD_COLOR)
    assert decoded[420:, :].mean() < 3  # JPEG ringing aside, the canvas below row 409 is black
    assert image.transform.offset_x == 0 and image.transform.offset_y == 0
    assert image.transform.scale_x == pytest.approx(1280 / 727)
