"""Helpers of the bag-level tests: run `step-perception` as a separate process."""

from __future__ import annotations

import os
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
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    return env


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
