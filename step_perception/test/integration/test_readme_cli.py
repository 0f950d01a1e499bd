"""The README's "Using it on a robot" commands, run as a user types them, outputs checked.

The commands are read from README.md itself (so the README cannot drift from what is tested):
the ``perception_node`` line starts the node (its endpoint swapped for the local oracle model
server), a test camera publishes frames, and every ``ros2 ...`` line of the section runs through
the real ``ros2`` CLI in a subprocess, in the README's order. Needs the ROS overlay (make build).
"""

from __future__ import annotations

import re
import shlex
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from ros_harness import REPO, Camera, child_env, wait_for

pytestmark = [pytest.mark.ros]

README_ENDPOINT = "http://gpu-ws:8000/v1"


def _section_commands() -> list[list[str]]:
    """The shell commands of the README's "Using it on a robot" bash blocks, as argv lists."""
    text = (REPO / "README.md").read_text()
    section = text.split("## Using it on a robot\n", 1)[1].split("\n### ", 1)[0]
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.DOTALL):
        for line in block.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            if argv and argv[0] != ".":
                commands.append(argv)
    return commands


COMMANDS = _section_commands()
NODE_CMD = next(c for c in COMMANDS if c[0] == "perception_node")
CLI = [c for c in COMMANDS if c[0] == "ros2"]


def _cli(argv: list[str]) -> str:
    return shlex.join(argv)


@pytest.fixture(scope="module")
def robot(ros: Any, model_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The node started by the README's line, a camera publishing, the ros2 daemon stopped after."""
    if shutil.which("ros2") is None:
        pytest.skip("ros2 CLI not installed (make build; . ./env.sh)")
    node_cmd = [a.replace(README_ENDPOINT, model_server.url()) for a in NODE_CMD]
    assert node_cmd != NODE_CMD, "the README's node line names no endpoint to replace"
    log = tmp_path_factory.mktemp("readme") / "node.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(node_cmd, cwd=REPO, env=child_env(), stdout=out, stderr=out)
    tester = ros.node("readme_cli_tester")
    camera = Camera(tester, "/camera/image_raw", fps=5.0, reliable=False)
    try:
        assert wait_for(
            lambda: proc.poll() is not None or camera.pub.get_subscription_count() > 0, 30.0
        ), log.read_text()
        assert proc.poll() is None, log.read_text()
        # The ros2 commands ask the ros2 daemon about the graph; a fresh daemon needs a moment to
        # discover it (before that, "Node not found"). A user's daemon has been up for a while.
        subprocess.run(["ros2", "daemon", "stop"], env=child_env(), capture_output=True, timeout=30)
        subprocess.run(
            ["ros2", "daemon", "start"], env=child_env(), capture_output=True, timeout=30
        )
        assert wait_for(
            lambda: "/camera/step_perception" in _run(["ros2", "node", "list"]).split(), 20.0, 0.5
        ), "the ros2 daemon never saw the node"
        camera.start()
        yield proc
    finally:
        camera.stop()
        ros.remove(tester)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            proc.wait(15)
        # The first ros2 command started a daemon for this domain: stop it (it outlives us).
        subprocess.run(["ros2", "daemon", "stop"], env=child_env(), capture_output=True, timeout=30)
    assert proc.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def _run(argv: list[str], timeout: float = 30.0) -> str:
    """Run one README command as typed; its stdout (a failure shows the command and output)."""
    res = subprocess.run(argv, env=child_env(), capture_output=True, text=True, timeout=timeout)
    assert res.returncode == 0, f"{_cli(argv)} -> {res.returncode}\n{res.stdout}{res.stderr}"
    return res.stdout


def _run_until(
    argv: list[str], pattern: str, accept: Any = lambda m: True, timeout: float = 30.0
) -> re.Match[str]:
    """Run a command that never ends by itself (``topic hz``) until ``pattern`` matches its
    output and ``accept(match)`` holds; then Ctrl-C it."""
    proc = subprocess.Popen(
        argv, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    try:
        found: list[re.Match[str]] = []

        def seen() -> bool:
            found[:] = [m for m in re.finditer(pattern, "".join(lines)) if accept(m)]
            return bool(found) or proc.poll() is not None

        wait_for(seen, timeout, step=0.1)
        assert found, f"{_cli(argv)}: no {pattern!r} in {timeout} s:\n{''.join(lines)}"
        return found[0]
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(10)
        reader.join(5)


def test_the_readme_lists_the_commands_the_issue_names() -> None:
    verbs = {tuple(c[1:3]) for c in CLI}
    for want in [("service", "call"), ("param", "set"), ("topic", "pub"), ("lifecycle", "set"),
                 ("topic", "echo"), ("topic", "hz"), ("lifecycle", "get")]:  # fmt: skip
        assert want in verbs, want


@pytest.mark.parametrize("argv", CLI, ids=[_cli(c[1:]) for c in CLI])
def test_readme_command(argv: list[str], robot: Any, model_server: Any) -> None:
    """One ``ros2`` line of the README, as typed; what it prints is what the README says."""
    verb = tuple(argv[1:3])
    if verb == ("lifecycle", "get"):
        assert _run(argv).strip() == "active [3]"
    elif verb == ("topic", "echo") and argv[-1].endswith("/detections"):
        out = _run(argv)
        assert "frame_id: camera_optical" in out, out
        assert "label: white cube" in out and "center_x:" in out, out
    elif verb == ("topic", "echo"):
        out = _run(argv)
        assert "name: '/camera/step_perception: perception'" in out, out
        assert "hardware_id: /camera" in out and "values:" in out, out
    elif verb == ("topic", "hz"):
        # A rate over at least 5 intervals: the first prints average two or three arrivals.
        found = _run_until(
            argv,
            r"average rate: (\d+\.\d+)\n\s*min: \S+ max: \S+ std dev: \S+ window: (\d+)",
            accept=lambda m: int(m.group(2)) >= 5,
        )
        assert 0.2 < float(found.group(1)) <= 1.5, found.group(0)  # params.yaml: rate_hz 1.0
    elif verb == ("service", "call"):
        before = len(model_server.seen())
        out = _run(argv)
        assert "success=True" in out, out
        assert "object(s) in frame" in out and "label='white cube'" in out, out
        asked = [s.user for s in model_server.seen()[before:]]
        assert any("the blue mug" in u for u in asked), asked
    elif verb == ("param", "set"):
        assert _run(argv).strip() == "Set parameter successful"
        value = argv[-1]
        assert wait_for(lambda: any(value in s.user for s in model_server.seen()[-2:]), 10.0)
    elif verb == ("topic", "pub"):
        out = _run(argv)
        assert "publishing #1: std_msgs.msg.String(data='the blue mug')" in out, out
    elif verb == ("param", "get"):
        got: list[str] = []
        assert wait_for(
            lambda: got.append(_run(argv).strip()) or got[-1] == "String value is: the blue mug",
            10.0,
            step=0.5,
        ), got[-3:]
    elif verb == ("lifecycle", "set"):
        assert _run(argv).strip() == "Transitioning successful"
        transition = argv[-1]
        state = _run([*argv[:2], "get", argv[3]]).strip()
        assert state == {"deactivate": "inactive [2]", "activate": "active [3]"}[transition]
        if transition == "deactivate":  # no model calls while inactive
            time.sleep(2.0)
            n = len(model_server.seen())
            time.sleep(2.0)
            assert len(model_server.seen()) == n
        else:  # answers resume
            n = len(model_server.seen())
            assert wait_for(lambda: len(model_server.seen()) > n, 10.0)
    else:
        raise AssertionError(f"no check for README command {_cli(argv)}: add one")
