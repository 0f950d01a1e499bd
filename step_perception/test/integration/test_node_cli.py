"""The node's command line: real rcl parsing of --params-file, -r and -p; failing loudly."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
from ros_harness import PACKAGE_DIR, child_env, node_command, wait_for

pytestmark = [pytest.mark.ros]


def test_params_file_and_namespace_from_the_command_line(ros: Any, tester: Any) -> None:
    """`perception_node --ros-args --params-file config/params.yaml -r __ns:=/cam1` works."""
    from lifecycle_msgs.srv import GetState
    from rcl_interfaces.srv import GetParameters

    cmd = [*node_command(), "--ros-args", "--params-file", "config/params.yaml"]
    cmd += ["-r", "__ns:=/cam1"]
    proc = subprocess.Popen(
        cmd, cwd=PACKAGE_DIR, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        assert wait_for(lambda: tester.count_subscribers("/cam1/image_raw") > 0, 30.0)
        names = ["model", "endpoint", "model_profile", "rate_hz", "max_image_side", "backend"]
        req = GetParameters.Request(names=names)
        values = ros.call(tester, GetParameters, "/cam1/step_perception/get_parameters", req).values
        got = {n: v for n, v in zip(names, values, strict=True)}
        assert got["model"].string_value == "stepfun-ai/Step-3.7-Flash"
        assert got["endpoint"].string_value == "http://localhost:8000/v1"
        assert got["model_profile"].string_value == "step3p7"
        assert got["rate_hz"].double_value == 1.0
        assert got["max_image_side"].integer_value == 728
        assert got["backend"].string_value == "openai"
        state = ros.call(
            tester, GetState, "/cam1/step_perception/get_state", GetState.Request(), idempotent=True
        )
        assert state.current_state.label == "active"  # autostart, no server needed to start
    finally:
        proc.send_signal(subprocess.signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out.decode()
    assert b"Traceback" not in out, out.decode()


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("rate_hz:=-5.0", "rate_hz"),
        ("endpoint:=http://user:secret@gpu:8000/v1", "credentials"),
        ("task:=dance", "task"),
    ],
)
def test_bad_parameters_fail_loudly(override: str, needle: str) -> None:
    """A bad value stops autostart with a message naming the parameter, and exit code 1."""
    cmd = [*node_command(), "--ros-args", "-r", "__ns:=/it_bad", "-p", override]
    res = subprocess.run(
        cmd, env=child_env(), capture_output=True, text=True, timeout=60, cwd=PACKAGE_DIR
    )
    assert res.returncode == 1, res.stdout + res.stderr
    log = res.stdout + res.stderr
    assert "bad parameter" in log and needle in log, log
    assert "Traceback" not in log
    assert "secret" not in log  # never echo a credential


def test_yaml_words_and_integers_are_accepted(ros: Any, tester: Any) -> None:
    """`-p rate_hz:=2` (an integer) and `-p content_filter:=off` (YAML reads a bool) both work."""
    from rcl_interfaces.srv import GetParameters

    cmd = [*node_command(), "--ros-args", "-r", "__ns:=/it_yaml", "-p", "rate_hz:=2",
           "-p", "content_filter:=off", "-p", "cassette_mode:=off", "-p", "prompt:=\"\"",
           "-p", "use_response_format:=true"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        assert wait_for(
            lambda: tester.count_subscribers("/it_yaml/image_raw") > 0 or proc.poll() is not None,
            30.0,
        )
        assert proc.poll() is None
        req = GetParameters.Request(names=["rate_hz", "prompt", "content_filter"])
        got = ros.call(tester, GetParameters, "/it_yaml/step_perception/get_parameters", req).values
        assert got[0].integer_value == 2  # kept as given; the config reads it as 2.0 Hz
        assert got[1].string_value == ""
        assert got[2].bool_value is False  # YAML's reading of "off", understood as "off"
    finally:
        proc.send_signal(subprocess.signal.SIGINT)
        out, _ = proc.communicate(timeout=15)
    assert proc.returncode == 0, out.decode()
    assert b"plain keep-last-1 subscription (content_filter is off)" in out, out.decode()
