"""Helpers of the bag-level tests: run `step-perception` as a separate process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

_TOOLS_DIR = Path(__file__).resolve().parents[2]  # step_perception_tools/ (the ROS package)
# The source trees of both Python packages, so the child runs this checkout's code.
SOURCE_DIRS = (_TOOLS_DIR, _TOOLS_DIR.parent / "step_perception")


def cli_command(*args: str) -> list[str]:
    """argv running `step-perception ARGS` with this interpreter (no console script needed)."""
    return [sys.executable, "-m", "step_perception_tools.cli", *args]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (*map(str, SOURCE_DIRS), env.get("PYTHONPATH")) if p
    )
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    # The shipped Fast DDS profile, as env.sh loads it (see ros_harness.dds_env).
    profile = SOURCE_DIRS[1] / "config" / "fastdds.xml"
    env.setdefault("FASTRTPS_DEFAULT_PROFILES_FILE", str(profile))
    env["PYTHONFAULTHANDLER"] = "1"  # a hung child dumps every thread's stack on SIGABRT
    return env


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """``proc.communicate(timeout)``; a process that hangs is aborted and its stacks reported.

    With ``PYTHONFAULTHANDLER=1`` (see ``cli_env``) SIGABRT makes the child print the Python
    stack of every thread, so a hang in CI says where it hung.
    """
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            _out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
        raise AssertionError(
            f"{proc.args} hung for {timeout} s; its stacks:\n{err[-6000:]}"
        ) from None
