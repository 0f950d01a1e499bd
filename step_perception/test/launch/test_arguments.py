"""Bad launch arguments through `ros2 launch`, as a user types them: a clear error, exit 1."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

pytestmark = [pytest.mark.ros]

ROS2 = shutil.which("ros2")


def _ros2_launch(*arguments: str) -> subprocess.CompletedProcess[str]:
    if ROS2 is None:
        pytest.skip("ros2 CLI not installed (make build; . ./env.sh)")
    return subprocess.run(
        [ROS2, "launch", "step_perception", "perception.launch.py", *arguments],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


@pytest.mark.parametrize(
    ("argument", "message"),
    [
        ("use_sim_time:=maybe", "use_sim_time:='maybe': expected true or false"),
        ("cameras:=front,wrist,front", "front given twice"),
        ("cameras:=front,2nd", "'2nd' is not a valid namespace name"),
        ("params_file:=/nonexistent/params.yaml", "'/nonexistent/params.yaml': no such file"),
        ("log_level:=loud", "log_level:='loud': expected one of debug, info, warn, error, fatal"),
    ],
)
def test_a_bad_argument_stops_the_launch_with_a_clear_error(argument: str, message: str) -> None:
    res = _ros2_launch(argument)
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert f"Caught exception in launch (see debug for traceback): {argument.split(':=')[0]}" in out
    assert message in out, out
    assert "process started" not in out, out  # nothing was started
    assert "Traceback" not in out, out


def test_a_bad_parameter_value_is_named_by_the_node() -> None:
    """A value only the node can judge: the node says which and exits 1; launch reports it."""
    res = _ros2_launch("model_profile:=nonsense")
    out = res.stdout + res.stderr
    assert "bad parameter: model_profile: 'nonsense' is not one of" in out, out
    assert "process has died" in out and "exit code 1" in out, out
    assert "Traceback" not in out, out
