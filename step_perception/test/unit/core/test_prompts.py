import json

import pytest
from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import ConfigError
from step_perception.core.profiles import PROFILES, BoxConvention, get_profile, profile_names
from step_perception.core.prompts import answer_schema, build_request, clean_prompt, user_text
from step_perception.core.types import ImageTransform, PreparedImage, Task

IMG = PreparedImage(
    b"\xff\xd8jpeg", "image/jpeg", 728, 410, ImageTransform(1920 / 728, 1080 / 410), 1920, 1080
)


def test_profiles_fix_the_conventions():
    assert set(profile_names()) == {"qwen2_5_vl", "qwen3_vl", "step3p7", "generic", "gemini"}
    assert get_profile("qwen2_5_vl").box_convention is BoxConvention.ABS_PIXELS_SENT
    for n in ("qwen3_vl", "step3p7", "generic"):
        assert get_profile(n).box_convention is BoxConvention.NORM_1000_XYXY
    assert get_profile("gemini").box_convention is BoxConvention.NORM_1000_YXYX
    assert get_profile("gemini").box_key == "box_2d"
    with pytest.raises(ConfigError, match="model_profile"):
        get_profile("nope")


@pytest.mark.parametrize("task", list(Task))
def test_user_text_carries_the_wire_contract_lines(task):
    text = user_text(
        get_profile("step3p7"),
        task,
        "pick the\nred cube",
        sent_width=728,
        sent_height=410,
        max_objects=8,
        allowed_actions=("pick", "stop"),
    )
    lines = text.splitlines()
    assert f"Task: {task.value}" in lines
    assert "Request: pick the red cube" in lines  # one line, whatever the prompt held
    assert ("Allowed actions: pick, stop" in lines) == (task is Task.COMMAND)
    assert "0-1000" in text and "bbox_2d" in text


def test_box_wording_follows_the_profile():
    qwen = user_text(
        get_profile("qwen2_5_vl"), Task.DETECT, "", sent_width=640, sent_height=360, max_objects=5
    )
    assert "absolute pixel" in qwen and "640x360" in qwen
    gem = user_text(
        get_profile("gemini"), Task.DETECT, "", sent_width=640, sent_height=360, max_objects=5
    )
    assert "[ymin, xmin, ymax, xmax]" in gem and '"box_2d"' in gem


def test_example_in_the_prompt_satisfies_the_schema_shape():
    for task in Task:
        schema = answer_schema(get_profile("step3p7"), task, 8, ("pick",))
        text = user_text(
            get_profile("step3p7"), task, "x", sent_width=10, sent_height=10, max_objects=8
        )
        example = json.loads(text.split("like this example: ", 1)[1].split("\n", 1)[0])
        assert set(schema["required"]) <= set(example)


def test_build_request_applies_config_and_overrides():
    cfg = PerceptionConfig.from_mapping(
        {
            "prompt": "cubes",
            "max_tokens": 100,
            "reasoning_effort": "none",
            "use_response_format": "false",
        }
    )
    req = build_request(cfg, IMG, task=Task.LOCATE, prompt="the mug", deadline=12.5)
    assert req.model == "stepfun-ai/Step-3.7-Flash" and req.profile == "step3p7"
    assert "Task: locate" in req.user and "Request: the mug" in req.user
    assert req.sampling.max_tokens == 100 and req.sampling.reasoning_effort is None
    assert req.use_response_format is False and req.deadline == 12.5
    assert req.json_schema is not None and req.json_schema["required"] == ["objects"]
    assert req.image is IMG and len(req.cache_key()) == 64
    default = build_request(PerceptionConfig(), IMG)
    assert default.use_response_format is PROFILES["step3p7"].supports_response_format
    assert default.sampling == PROFILES["step3p7"].sampling
    assert "Request: " in default.user


def test_clean_prompt_bounds_and_flattens():
    assert clean_prompt("a\tb\n\nc\x00") == "a b c"
    assert len(clean_prompt("x" * 5000)) == 1000
