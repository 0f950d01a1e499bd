"""The package's parameter file: every key declared by the node, valid, documented.

(The launch file itself is tested by launching it: ``step_perception/test/launch/``.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import yaml
from step_perception.core.config import PARAMETERS, PerceptionConfig

PACKAGE_DIR = Path(__file__).resolve().parents[3]  # step_perception/ (the ROS package)
PARAMS_YAML = PACKAGE_DIR / "config" / "params.yaml"
PARAMS_PY = PACKAGE_DIR / "step_perception" / "ros" / "params.py"


def _string_args(path: Path, func: str) -> set[str]:
    """First string arguments of every call to ``func`` (a name or attribute) in a file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
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
