"""The `step-perception` program: subcommands, help text and argument errors (no ROS needed)."""

from __future__ import annotations

import pytest
from step_perception.core.errors import ConfigError
from step_perception_tools.offline import load_config

from step_perception_tools import cli


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_top_level_help_lists_every_subcommand(capsys):
    text = _help(capsys)
    for sub in ("make-scenes", "replay", "record", "eval", "run-offline"):
        assert sub in text


def test_make_scenes_help_documents_the_truth_message(capsys):
    text = " ".join(_help(capsys, "make-scenes").split())
    assert "step_perception_msgs/ObjectDetectionArray" in text
    assert "has_position true" in text and "source pixels" in text
    assert "--storage" in text and "--fps" in text


def test_subcommand_help(capsys):
    assert "--clock" in _help(capsys, "replay") and "--remap" in _help(capsys, "replay")
    assert "--use-sim-time" in _help(capsys, "record")
    assert "--truth" in _help(capsys, "eval")
    assert "--oracle-cassette" in _help(capsys, "run-offline")


@pytest.mark.parametrize(
    "argv",
    [
        ["replay", "bag", "--remap", "/a=/b"],
        ["replay", "bag", "--rate", "0"],
        ["make-scenes", "--count", "3"],  # --out is required
        ["eval", "run"],  # --truth is required
        ["nope"],
    ],
)
def test_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


def test_bad_values_are_typed_errors(tmp_path, capsys):
    assert cli.main(["make-scenes", "--out", str(tmp_path / "x"), "--count", "0"]) == 1
    assert "count" in capsys.readouterr().err
    assert cli.main(["eval", str(tmp_path / "missing"), "--truth", str(tmp_path)]) == 1
    assert "cannot open bag" in capsys.readouterr().err


def test_params_file_and_overrides(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        "step_perception:\n  ros__parameters:\n    model_profile: generic\n"
        "    max_image_side: 512\n    some_node_only_param: 3\n"
    )
    config = load_config(params, ["max_image_side=256", "allowed_actions=[pick, stop]"])
    assert config.model_profile == "generic" and config.max_image_side == 256
    assert config.allowed_actions == ("pick", "stop")
    with pytest.raises(ConfigError):
        load_config(None, ["novalue"])
    with pytest.raises(ConfigError):
        load_config(None, ["not_a_param=1"])
