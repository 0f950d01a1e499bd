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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Retry the DDS tests of this folder up to twice (see test/integration/conftest.py)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents and item.get_closest_marker("ros"):
            item.add_marker(pytest.mark.flaky(reruns=2, reruns_delay=1))
