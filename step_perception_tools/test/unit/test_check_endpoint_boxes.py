"""check-endpoint's box-convention scoring, on answers written out from a generated scene's truth.

The answers are what a perfect model of each convention would write (``core.box_encoding``, the
one encoder the oracle cassettes use too); the servers' cases are in test_check_endpoint_servers.py
and test/vllm/test_vllm_check_endpoint.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from step_perception.core.box_encoding import encode_source_box
from step_perception.core.config import PerceptionConfig
from step_perception.core.imaging import prepare_array_for
from step_perception.core.profiles import BoxConvention, get_profile
from step_perception.core.types import Box2D, PreparedImage
from step_perception_tools.check_endpoint import (
    FIT_MIN_SCORE,
    SCENE_SEED,
    box_fit,
    recommend_profile,
)
from step_perception_tools.scenes import render_scene


def _scene(profile: str, detail: str = "high") -> tuple[PreparedImage, list[Box2D]]:
    scene = render_scene(seed=SCENE_SEED, index=0)
    config = PerceptionConfig.from_mapping({"model_profile": profile, "detail": detail})
    image = prepare_array_for(scene.rgb[:, :, ::-1].copy(), config)
    return image, [Box2D(*o.box) for o in scene.objects]


def _answer(image: PreparedImage, truth: list[Box2D], convention: BoxConvention) -> str:
    objects = [
        {"label": "red cube", "bbox_2d": [round(v, 2) for v in encode_source_box(b, image, c)]}
        for b, c in ((b, convention) for b in truth)
    ]
    return json.dumps({"objects": objects})


@pytest.mark.parametrize("convention", list(BoxConvention))
@pytest.mark.parametrize("detail", ["high", "low"])  # low pads 16:9 into 4:3: the inverse map too
def test_each_convention_is_found_and_only_it(convention: BoxConvention, detail: str) -> None:
    image, truth = _scene("step3p7", detail)
    assert len(truth) >= 4
    fits = box_fit([_answer(image, truth, convention)] * 2, get_profile("step3p7"), image, truth)
    assert fits[0].convention is convention
    assert fits[0].score > 0.95, fits
    assert fits[1].score < FIT_MIN_SCORE, fits


def test_random_boxes_score_low() -> None:
    image, truth = _scene("step3p7")
    rng = np.random.default_rng(3)
    answers = []
    for _ in range(3):
        xs = np.sort(rng.uniform(0, 1000, size=(4, 2)), axis=1)
        ys = np.sort(rng.uniform(0, 1000, size=(4, 2)), axis=1)
        objects = [
            {"label": "x", "bbox_2d": [float(x[0]), float(y[0]), float(x[1]), float(y[1])]}
            for x, y in zip(xs, ys, strict=True)
        ]
        answers.append(json.dumps({"objects": objects}))
    fits = box_fit(answers, get_profile("step3p7"), image, truth)
    assert fits[0].boxes > 0
    assert all(f.score < FIT_MIN_SCORE for f in fits), fits


def test_unparsable_answers_give_no_boxes() -> None:
    image, truth = _scene("generic")
    fits = box_fit(["no json here", '{"objects": []}'], get_profile("generic"), image, truth)
    assert all(f.boxes == 0 and f.score == 0.0 for f in fits)


def test_recommendation_prefers_the_current_then_the_name_then_generic() -> None:
    assert recommend_profile(BoxConvention.NORM_1000_XYXY, "step3p7", "x") == "step3p7"
    assert recommend_profile(BoxConvention.NORM_1000_XYXY, "qwen2_5_vl", "Qwen3-VL-8B") == (
        "qwen3_vl"
    )
    assert recommend_profile(BoxConvention.NORM_1000_XYXY, "gemini", "tabletop-ref") == "generic"
    assert recommend_profile(BoxConvention.ABS_PIXELS_SENT, "generic", "m") == "qwen2_5_vl"
    assert recommend_profile(BoxConvention.NORM_1000_YXYX, "step3p7", "m") == "gemini"
