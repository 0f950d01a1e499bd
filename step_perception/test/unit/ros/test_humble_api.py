"""Every rclpy / launch / launch_ros name the node and its launch file import exists on Humble.

Humble (Python 3.10, rclpy 3.3) has no wheels on PyPI, so this is a static check: the imports are
read with ``ast`` and compared with the names checked against the humble branches of rclpy,
launch and launch_ros (sources read 2026-12-01; the table says where each one comes from).
A name newer than Humble may only be imported inside ``try: ... except ImportError:`` with a
fallback: that is the gate, and the gated names are listed too, so a new one is a decision.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[3]
FILES = sorted([*(PKG / "step_perception" / "ros").glob("*.py"), *(PKG / "launch").glob("*.py")])

ROS_ROOTS = ("rclpy", "launch", "launch_ros", "tf2_ros")

# (module, name) -> where it is on the humble branch.
HUMBLE: dict[tuple[str, str], str] = {
    ("rclpy", ""): "rclpy/rclpy/__init__.py (init, shutdown, ok, spin_once)",
    ("rclpy.callback_groups", "CallbackGroup"): "rclpy/rclpy/callback_groups.py",
    ("rclpy.callback_groups", "ReentrantCallbackGroup"): "rclpy/rclpy/callback_groups.py",
    ("rclpy.callback_groups", "MutuallyExclusiveCallbackGroup"): "rclpy/rclpy/callback_groups.py",
    ("rclpy.clock", "Clock"): "rclpy/rclpy/clock.py",
    ("rclpy.clock", "ClockType"): "rclpy/rclpy/clock.py (class ClockType(IntEnum))",
    ("rclpy.context", "Context"): "rclpy/rclpy/context.py",
    ("rclpy.duration", "Duration"): "rclpy/rclpy/duration.py",
    ("rclpy.exceptions", "InvalidParameterTypeException"): "rclpy/rclpy/exceptions.py",
    ("rclpy.exceptions", "InvalidParameterValueException"): "rclpy/rclpy/exceptions.py",
    ("rclpy.executors", "ExternalShutdownException"): "rclpy/rclpy/executors.py (rclpy#854)",
    ("rclpy.executors", "MultiThreadedExecutor"): "rclpy/rclpy/executors.py",
    ("rclpy.executors", "SingleThreadedExecutor"): "rclpy/rclpy/executors.py",
    ("rclpy.lifecycle", "LifecycleNode"): "rclpy/rclpy/lifecycle/node.py (demos lifecycle_py)",
    ("rclpy.lifecycle", "LifecycleState"): "rclpy/rclpy/lifecycle/node.py",
    ("rclpy.lifecycle", "TransitionCallbackReturn"): "rclpy/rclpy/lifecycle/node.py",
    ("rclpy.lifecycle.publisher", "LifecyclePublisher"): "rclpy/rclpy/lifecycle/publisher.py",
    ("rclpy.logging", "get_logger"): "rclpy/rclpy/logging.py",
    ("rclpy.node", "Node"): "rclpy/rclpy/node.py",
    ("rclpy.parameter", "Parameter"): "rclpy/rclpy/parameter.py",
    ("rclpy.publisher", "Publisher"): "rclpy/rclpy/publisher.py",
    ("rclpy.qos", "DurabilityPolicy"): "rclpy/rclpy/qos.py",
    ("rclpy.qos", "HistoryPolicy"): "rclpy/rclpy/qos.py",
    ("rclpy.qos", "QoSProfile"): "rclpy/rclpy/qos.py",
    ("rclpy.qos", "ReliabilityPolicy"): "rclpy/rclpy/qos.py",
    ("rclpy.qos", "qos_profile_sensor_data"): "rclpy/rclpy/qos.py",
    ("rclpy.subscription", "Subscription"): "rclpy/rclpy/subscription.py",
    ("rclpy.time", "Time"): "rclpy/rclpy/time.py",
    ("rclpy.utilities", "get_rmw_implementation_identifier"): "rclpy/rclpy/utilities.py",
    ("rclpy.utilities", "try_shutdown"): "rclpy/rclpy/utilities.py",
    ("launch", "LaunchContext"): "launch/launch/__init__.py",
    ("launch", "LaunchDescription"): "launch/launch/__init__.py",
    ("launch.actions", "DeclareLaunchArgument"): "launch/launch/actions/__init__.py",
    ("launch.actions", "OpaqueFunction"): "launch/launch/actions/__init__.py",
    ("launch.actions", "SetEnvironmentVariable"): "launch/launch/actions/__init__.py",
    ("launch.substitutions", "LaunchConfiguration"): "launch/launch/substitutions/__init__.py",
    ("launch.substitutions", "PathJoinSubstitution"): "launch/launch/substitutions/__init__.py",
    ("launch_ros.actions", "Node"): "launch_ros/launch_ros/actions/__init__.py",
    ("launch_ros.actions", "LifecycleNode"): "launch_ros/launch_ros/actions/__init__.py",
    ("launch_ros.substitutions", "FindPackageShare"): "launch_ros/launch_ros/substitutions",
    ("tf2_ros", "Buffer"): "geometry2 humble tf2_ros_py/tf2_ros/__init__.py",
    ("tf2_ros", "TransformListener"): "geometry2 humble tf2_ros_py/tf2_ros/__init__.py",
    ("tf2_ros", "TransformException"): "geometry2 humble tf2_ros_py/tf2_ros/__init__.py",
}

# Names newer than Humble, allowed only behind an ImportError gate with a fallback.
GATED: dict[tuple[str, str], str] = {
    ("rclpy.clock_type", "ClockType"): "Jazzy+ (rclpy#1235); falls back to rclpy.clock",
    ("rclpy.subscription_content_filter_options", "ContentFilterOptions"): (
        "Kilted+ (rclpy#1506); falls back to the rcl/ctypes path or no filter"
    ),
}


def _gated(tree: ast.AST) -> set[int]:
    """Line numbers of imports inside a ``try`` whose handlers catch ImportError."""
    lines: set[int] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Try):
            continue
        names = {
            n.id
            for h in node.handlers
            if h.type is not None
            for n in ast.walk(h.type)
            if isinstance(n, ast.Name)
        }
        if names & {"ImportError", "ModuleNotFoundError"}:
            for stmt in node.body:
                lines.update(n.lineno for n in ast.walk(stmt) if hasattr(n, "lineno"))
    return lines


def _ros_imports(path: Path) -> list[tuple[int, str, str]]:
    tree = ast.parse(path.read_text("utf-8"))
    gated = _gated(tree)
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if getattr(node, "lineno", -1) in gated:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.split(".")[0] in ROS_ROOTS:
                found += [(node.lineno, node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, "") for a in node.names if a.name in ROS_ROOTS]
    return found


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_ungated_ros_imports_exist_on_humble(path: Path) -> None:
    unknown = [
        f"{path.name}:{line}: from {mod} import {name}"
        for line, mod, name in _ros_imports(path)
        if (mod, name) not in HUMBLE
    ]
    assert unknown == [], "not checked against Humble (add to HUMBLE with a source, or gate it)"


def test_gated_imports_are_the_known_ones() -> None:
    seen: set[tuple[str, str]] = set()
    for path in FILES:
        tree = ast.parse(path.read_text("utf-8"))
        gated = _gated(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.lineno in gated
                and node.module
                and node.module.split(".")[0] in ROS_ROOTS
            ):
                seen.update((node.module, a.name) for a in node.names)
    assert seen - set(HUMBLE) <= set(GATED)


def test_the_check_sees_a_jazzy_only_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("from rclpy.clock_type import ClockType\nfrom rclpy.event_handler import X\n")
    pairs = {(m, n) for _, m, n in _ros_imports(bad)}
    assert pairs - set(HUMBLE) == {("rclpy.clock_type", "ClockType"), ("rclpy.event_handler", "X")}
    good = tmp_path / "good.py"
    good.write_text(
        "try:\n    from rclpy.clock_type import ClockType\n"
        "except ImportError:\n    from rclpy.clock import ClockType\n"
    )
    assert {(m, n) for _, m, n in _ros_imports(good)} <= set(HUMBLE)
