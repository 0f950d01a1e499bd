"""Collects the ``test_launch_*.py`` files of this folder as launch_testing tests.

Each file is a launch_testing test (``generate_test_description`` plus unittest classes, the
way ``launch_test FILE`` or ament's ``add_launch_test`` run it); one pytest item runs it with
launch_testing's own ``LaunchTestRunner``. launch_testing's pytest plugin does that too, but it
does not load under pytest 9 (pyproject.toml disables it), so this is its collection hook, for
this folder only. Needs the ROS overlay (``make build``) and ``. ./env.sh``.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
# The real-DDS harness and the oracle model server of the integration tests.
sys.path.insert(0, str(HERE.parent / "integration"))


def _launch_testing_available() -> bool:
    return all(importlib.util.find_spec(m) for m in ("launch_testing", "launch_ros", "rclpy"))


if _launch_testing_available():
    from launch_testing.pytest.hooks import LaunchTestFailure, LaunchTestItem, LaunchTestModule

    class _Item(LaunchTestItem):  # type: ignore[misc]
        def runtest(self) -> None:
            # As LaunchTestItem.runtest, without the plugin's --launch-args option.
            runner = self.runner_cls(
                test_runs=copy.deepcopy(self.test_runs),
                launch_file_arguments=[],
                debug=int(self.config.getoption("verbose")) > 1,
            )
            runner.validate()
            results = runner.run()
            if any(not result.wasSuccessful() for result in results.values()):
                raise LaunchTestFailure(message="some test cases have failed", results=results)

    class _Module(LaunchTestModule):  # type: ignore[misc]
        def makeitem(self, *args: Any, **kwargs: Any) -> Any:
            return _Item.from_parent(*args, **kwargs)


def pytest_pycollect_makemodule(module_path: Path, parent: pytest.Collector) -> Any:
    """``test_launch_*.py`` here is a launch_testing file: one item runs it whole."""
    if module_path.parent != HERE or not module_path.name.startswith("test_launch_"):
        return None
    if not _launch_testing_available():
        return _Skipped.from_parent(parent, path=module_path)
    module = _Module.from_parent(parent, path=module_path)
    module.add_marker(pytest.mark.ros)
    return module


class _Skipped(pytest.File):
    def collect(self) -> list[pytest.Item]:
        pytest.skip("launch_testing / launch_ros not installed (make build; . ./env.sh)")
        return []
