import pytest
from step_perception.core.config import (
    PARAMETERS,
    BackendKind,
    CassetteMode,
    ImageTransportKind,
    PerceptionConfig,
    Reliability,
)
from step_perception.core.errors import ConfigError
from step_perception.core.types import Task


def test_defaults_match_the_documented_ones():
    c = PerceptionConfig()
    assert c.backend is BackendKind.OPENAI
    assert c.endpoints == ("http://localhost:8000/v1",)
    assert c.model == "stepfun-ai/Step-3.7-Flash"
    assert c.model_profile == "step3p7"
    assert c.rate_hz == 1.0
    assert c.max_image_side == 728
    assert c.max_inflight == 1
    assert c.max_frame_age_s == 2.0
    assert c.jpeg_quality == 85
    assert c.request_timeout_s == 10.0
    assert c.allowed_actions == ("pick", "place", "move_to", "look_at", "stop")
    assert c.use_response_format is None
    assert c.max_frame_age_ns == 2_000_000_000


def test_every_parameter_has_a_spec_and_round_trips():
    c = PerceptionConfig.from_mapping(
        {
            "backend": "replay",
            "endpoint": ["http://a:8000/v1/", "https://b.example/v1"],
            "task": "command",
            "prompt": "pick the red cube",
            "rate_hz": 2,
            "max_inflight": 2,
            "image_transport": "compressed",
            "reliability": "reliable",
            "cassette": "/tmp/c.jsonl",
            "cassette_mode": "replay",
            "use_response_format": "false",
            "allowed_actions": "Pick, place",
            "reasoning_effort": "High",
        }
    )
    assert c.backend is BackendKind.REPLAY
    assert c.endpoints == ("http://a:8000/v1", "https://b.example/v1")
    assert c.task is Task.COMMAND
    assert isinstance(c.rate_hz, float) and c.rate_hz == 2.0
    assert c.image_transport is ImageTransportKind.COMPRESSED
    assert c.reliability is Reliability.RELIABLE
    assert c.cassette_mode is CassetteMode.REPLAY
    assert c.use_response_format is False
    assert c.allowed_actions == ("pick", "place")
    assert c.reasoning_effort == "high"
    params = c.as_parameters()
    assert {s.name for s in PARAMETERS} == set(params)
    assert PerceptionConfig.from_mapping(params) == c


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("rate_hz", 0, "rate_hz"),
        ("rate_hz", float("nan"), "rate_hz"),
        ("rate_hz", "fast", "rate_hz"),
        ("max_inflight", 0, "max_inflight"),
        ("max_inflight", 1.5, "max_inflight"),
        ("max_image_side", 8, "max_image_side"),
        ("jpeg_quality", 101, "jpeg_quality"),
        ("use_depth", 1, "use_depth"),
        ("task", "dance", "task"),
        ("backend", "grpc", "backend"),
        ("model_profile", "llava", "model_profile"),
        ("endpoint", "ftp://host/v1", "endpoint"),
        ("endpoint", "http://user:secret@host/v1", "endpoint"),
        ("endpoint", "http:///v1", "endpoint"),
        ("endpoint", "http://host:99999/v1", "endpoint"),
        ("endpoint", "http://host/v1?key=1", "endpoint"),
        ("endpoint", 5, "endpoint"),
        ("allowed_actions", ["pick", "rm -rf"], "allowed_actions"),
        ("api_key_env", "MY KEY", "api_key_env"),
        ("max_pixels", 100, "max_pixels"),
        ("use_response_format", "maybe", "use_response_format"),
        ("no_such_parameter", 1, "no_such_parameter"),
    ],
)
def test_bad_values_raise_naming_the_parameter(key, value, needle):
    with pytest.raises(ConfigError) as exc:
        PerceptionConfig.from_mapping({key: value})
    assert str(exc.value).startswith(needle)
    assert "secret" not in str(exc.value)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"rate_hz": 0.0}, "rate_hz"),
        ({"max_inflight": 0}, "max_inflight"),
        ({"jpeg_quality": 500}, "jpeg_quality"),
        ({"max_frame_age_s": float("inf")}, "max_frame_age_s"),
        ({"task": "dance"}, "task"),
        ({"endpoints": ("http://user:secret@host/v1",)}, "endpoint"),
        ({"allowed_actions": ("pick", "rm -rf")}, "allowed_actions"),
        ({"prompt": "a\x00b"}, "prompt"),
    ],
)
def test_direct_construction_is_validated_too(kwargs, needle):
    with pytest.raises(ConfigError) as exc:
        PerceptionConfig(**kwargs)
    assert str(exc.value).startswith(needle)


def test_direct_construction_normalises_types():
    c = PerceptionConfig(backend="replay", cassette="c.jsonl", rate_hz=2, task="locate")
    assert c.backend is BackendKind.REPLAY and c.task is Task.LOCATE
    assert isinstance(c.rate_hz, float) and c.rate_hz == 2.0
    assert c == PerceptionConfig.from_mapping(c.as_parameters())


def test_cross_field_checks():
    with pytest.raises(ConfigError, match="cassette"):
        PerceptionConfig.from_mapping({"cassette_mode": "record"})
    with pytest.raises(ConfigError, match="cassette"):
        PerceptionConfig.from_mapping({"backend": "replay"})
    with pytest.raises(ConfigError, match="endpoint"):
        PerceptionConfig.from_mapping({"endpoint": ""})


def test_ignore_unknown_for_ros_parameters():
    c = PerceptionConfig.from_mapping({"use_sim_time": True, "rate_hz": 3.0}, ignore_unknown=True)
    assert c.rate_hz == 3.0


def test_with_updates_revalidates_and_keeps_the_rest():
    c = PerceptionConfig.from_mapping({"prompt": "cubes", "rate_hz": 2.0})
    d = c.with_updates(task="locate", max_image_side=512)
    assert d.task is Task.LOCATE and d.max_image_side == 512
    assert d.prompt == "cubes" and d.rate_hz == 2.0
    assert c.task is Task.DETECT  # frozen original untouched
    with pytest.raises(ConfigError, match="rate_hz"):
        c.with_updates(rate_hz=-1.0)
    with pytest.raises(ConfigError, match="bogus"):
        c.with_updates(bogus=1)
    assert c.with_updates(endpoint="http://x:1/v1 http://y:2/v1").endpoints == (
        "http://x:1/v1",
        "http://y:2/v1",
    )


def test_parse_endpoints_dedupes_and_splits():
    from step_perception.core.endpoints import parse_endpoints

    assert parse_endpoints("http://a/v1, http://a/v1/  https://b/v1") == (
        "http://a/v1",
        "https://b/v1",
    )
    assert parse_endpoints(["http://a:1", "http://b/v1,http://c/v1"]) == (
        "http://a:1/v1",
        "http://b/v1",
        "http://c/v1",
    )


def test_runtime_parameters_include_the_required_ones():
    runtime = {s.name for s in PARAMETERS if s.runtime}
    assert {"rate_hz", "prompt", "task", "max_image_side"} <= runtime
    assert "backend" not in runtime and "endpoint" not in runtime


def test_summary_names_the_settings_and_never_the_endpoint() -> None:
    c = PerceptionConfig.from_mapping(
        {"endpoint": "http://10.0.0.7:8000/v1", "rate_hz": 2.5, "task": "describe"}
    )
    line = c.summary()
    assert "profile=step3p7" in line and "task=describe" in line and "rate_hz=2.5" in line
    assert "input=raw/best_effort" in line and "use_depth=" in line
    assert "10.0.0.7" not in line
