"""The launch file and the parameter file, checked without ROS (and loaded where launch_ros is).

launch and launch_ros are not installable from PyPI, so the first tests read the
launch file's source: every executable, parameter, topic and file it names must
exist. The last one loads the description for real where launch_ros imports.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
from pathlib import Path
from typing import Any

import pytest
import yaml
from step_perception.core.config import PARAMETERS, PerceptionConfig

PACKAGE_DIR = Path(__file__).resolve().parents[3]  # step_perception/ (the ROS package)
LAUNCH_FILE = PACKAGE_DIR / "launch" / "perception.launch.py"
PARAMS_YAML = PACKAGE_DIR / "config" / "params.yaml"
NODE_PY = PACKAGE_DIR / "step_perception" / "ros" / "node.py"
INPUTS_PY = PACKAGE_DIR / "step_perception" / "ros" / "inputs.py"  # the node's subscriptions
PARAMS_PY = PACKAGE_DIR / "step_perception" / "ros" / "params.py"
SETUP_PY = PACKAGE_DIR / "setup.py"


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _constants(path: Path) -> dict[str, Any]:
    """Module-level ``NAME = <literal>`` assignments of a file."""
    out: dict[str, Any] = {}
    for stmt in _tree(path).body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target = stmt.targets[0]
            if isinstance(target, ast.Name):
                with contextlib.suppress(ValueError):
                    out[target.id] = ast.literal_eval(stmt.value)
    return out


def _string_args(path: Path, func: str) -> set[str]:
    """First string arguments of every call to ``func`` (a name or attribute) in a file."""
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call) and node.args:
            f = node.func
            name = getattr(f, "id", None) or getattr(f, "attr", "")
            first = node.args[0]
            if name == func and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.add(first.value)
    return found


def _declared_parameters() -> set[str]:
    """Every parameter the node declares: the core's table plus the adapter's own."""
    return {s.name for s in PARAMETERS} | _string_args(PARAMS_PY, "ParamSpec") | {"use_sim_time"}


LAUNCH = _constants(LAUNCH_FILE)


def test_launch_names_our_package_executable_and_entry_point() -> None:
    assert LAUNCH["PACKAGE"] == "step_perception"
    scripts = _constants(SETUP_PY).get("PACKAGE"), SETUP_PY.read_text()
    assert scripts[0] == LAUNCH["PACKAGE"]
    entry = f"{LAUNCH['EXECUTABLE']} = step_perception.ros.node:main"
    assert entry in scripts[1], "setup.py must install the executable the launch file starts"
    assert "main" in {f.name for f in _tree(NODE_PY).body if isinstance(f, ast.FunctionDef)}
    assert _constants(NODE_PY)["NODE_NAME"] == LAUNCH["NODE_NAME"]


def test_launch_files_exist_and_are_installed() -> None:
    params = PACKAGE_DIR.joinpath(*LAUNCH["PARAMS_FILE"])
    assert params.is_file()
    setup = SETUP_PY.read_text()
    # setup.py installs config/*.yaml and launch/*.launch.py into share/step_perception.
    assert '"config/*.yaml"' in setup and params.match("config/*.yaml")
    assert '"launch/*.launch.py"' in setup and LAUNCH_FILE.match("launch/*.launch.py")
    assert (PACKAGE_DIR / "resource" / LAUNCH["PACKAGE"]).is_file()


def test_launch_parameters_are_declared_by_the_node() -> None:
    declared = _declared_parameters()
    for argument, parameter in LAUNCH["PARAMETER_ARGUMENTS"].items():
        assert parameter in declared, (argument, parameter)


def test_launch_topics_are_the_nodes_inputs() -> None:
    node_topics = _string_args(INPUTS_PY, "create_subscription") | {
        c.value
        for c in ast.walk(_tree(INPUTS_PY))
        if isinstance(c, ast.Constant) and isinstance(c.value, str)
    }
    for argument, (topic, _default) in LAUNCH["TOPIC_ARGUMENTS"].items():
        assert topic in node_topics, (argument, topic)


def test_every_launch_argument_is_declared_and_described() -> None:
    declared = {name: (default, desc) for name, default, desc in LAUNCH["ARGUMENTS"]}
    used = _string_args(LAUNCH_FILE, "arg") | _string_args(LAUNCH_FILE, "LaunchConfiguration")
    used |= set(LAUNCH["PARAMETER_ARGUMENTS"]) | set(LAUNCH["TOPIC_ARGUMENTS"])
    assert used <= set(declared), used - set(declared)
    for name in ("namespace", "cameras", "params_file", "endpoint", "model", "model_profile",
                 "use_sim_time", "image_topic", "camera_info_topic", "depth_topic"):  # fmt: skip
        assert name in declared
    for name, (default, desc) in declared.items():
        assert isinstance(default, str) and len(desc) > 20, name
    assert declared["fastdds_transports"][0] == "LARGE_DATA"
    assert "FASTDDS_BUILTIN_TRANSPORTS" in _string_args(LAUNCH_FILE, "SetEnvironmentVariable")


def test_launch_file_runs_nothing_itself() -> None:
    names = {n.id for n in ast.walk(_tree(LAUNCH_FILE)) if isinstance(n, ast.Name)}
    imports = {
        alias.name.split(".")[0]
        for n in ast.walk(_tree(LAUNCH_FILE))
        if isinstance(n, (ast.Import, ast.ImportFrom))
        for alias in n.names
    } | {
        n.module.split(".")[0]
        for n in ast.walk(_tree(LAUNCH_FILE))
        if isinstance(n, ast.ImportFrom) and n.module
    }
    assert not {"eval", "exec", "__import__"} & names
    assert not {"subprocess", "os"} & imports
    assert "ExecuteProcess" not in names


def test_params_yaml_holds_valid_documented_defaults() -> None:
    loaded = yaml.safe_load(PARAMS_YAML.read_text())
    assert list(loaded) == ["/**"], "must apply to any node name in any namespace"
    values = loaded["/**"]["ros__parameters"]
    declared = _declared_parameters()
    assert set(values) <= declared, set(values) - declared
    core = {k: v for k, v in values.items() if k in {s.name for s in PARAMETERS}}
    config = PerceptionConfig.from_mapping(core)
    assert config.model == "stepfun-ai/Step-3.7-Flash"
    assert config.endpoints == ("http://localhost:8000/v1",)
    assert config.model_profile == "step3p7"
    assert config.rate_hz == 1.0 and config.max_image_side == 728
    assert values["content_filter"] == "auto" and values["autostart"] is True
    # Every line with a value carries a comment saying what it is.
    for line in PARAMS_YAML.read_text().splitlines():
        key = line.strip().split(":", 1)[0]
        if key in values:
            assert "#" in line, line


@pytest.mark.skipif(
    importlib.util.find_spec("launch_ros") is None, reason="launch_ros is not installed here"
)
def test_launch_description_loads_and_makes_one_node_per_camera() -> None:
    from launch import LaunchContext
    from launch.actions import DeclareLaunchArgument, OpaqueFunction
    from launch.launch_description_sources import PythonLaunchDescriptionSource
    from launch_ros.actions import Node

    description = PythonLaunchDescriptionSource(str(LAUNCH_FILE)).get_launch_description(
        LaunchContext()
    )
    args = [e for e in description.entities if isinstance(e, DeclareLaunchArgument)]
    assert {a.name for a in args} == {name for name, _, _ in LAUNCH["ARGUMENTS"]}
    assert all(a.description for a in args)
    context = LaunchContext()
    for name, default, _ in LAUNCH["ARGUMENTS"]:
        context.launch_configurations[name] = default
    context.launch_configurations.update(
        {"cameras": "front, wrist", "namespace": "/robot", "params_file": str(PARAMS_YAML)}
    )
    opaque = next(e for e in description.entities if isinstance(e, OpaqueFunction))
    nodes = [e for e in opaque.execute(context) or [] if isinstance(e, Node)]
    assert len(nodes) == 2
