"""Shared fixtures of the bag-level tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def small_scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight 320x240 scenes at 10 fps (seed 5)."""
    from step_perception_tools.make_scenes import make_scenes

    out = tmp_path_factory.mktemp("scenes") / "small"
    make_scenes(out, count=8, seed=5, width=320, height=240, fps=10.0, jobs=1)
    return out
