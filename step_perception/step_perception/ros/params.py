"""The node's ROS parameters: declared from the core's table, read once into the typed config.

Every parameter in ``core.config.PARAMETERS`` is declared with a descriptor
(description, range, choices, read-only unless it may change at run time) and
the core's default. The values are read once into a ``PerceptionConfig``; at
run time a change is validated by building a new config from it
(``apply_updates``), so ROS and the offline tools share one set of rules.

Typing: numbers declared as floats also accept integers (``-p rate_hz:=2``),
and list parameters (``endpoint``, ``allowed_actions``) accept a list or one
comma separated string, so both are declared with dynamic typing and checked
by the core instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    ParameterType,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter

from step_perception.core.config import PARAMETERS, ParamSpec, PerceptionConfig
from step_perception.core.errors import ConfigError

__all__ = [
    "NODE_PARAMETERS",
    "ContentFilterMode",
    "NodeSettings",
    "apply_updates",
    "declare_parameters",
    "descriptor_for",
    "read_settings",
    "validate_updates",
]


class ContentFilterMode(str, Enum):
    """Whether the image subscription pushes the throttle into a DDS content filter."""

    AUTO = "auto"  # on where no publisher crash is known: not Fast DDS 2.x or 3 (measured)
    ON = "on"  # on wherever the RMW supports content-filtered topics
    OFF = "off"  # plain keep-last-1 subscription


#: Parameters of the ROS adapter alone (the core does not know them).
NODE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec(
        "content_filter",
        "str",
        "Push the throttle into a DDS content filter on header.stamp: auto, on or off. "
        "auto = on only where the middleware filters images without harming the publisher: "
        "not Fast DDS 2.x (samples over 64 KB break) nor 3 (a writer can abort while the "
        "filter moves). on = wherever the RMW supports content-filtered topics.",
        choices=tuple(m.value for m in ContentFilterMode),
    ),
    ParamSpec(
        "vision_msgs",
        "bool",
        "Also publish vision_msgs: Detection2DArray on detections_2d and, with use_depth, "
        "Detection3DArray (the detections that have a position) on detections_3d.",
    ),
)

_NODE_DEFAULTS: dict[str, Any] = {
    "content_filter": ContentFilterMode.AUTO.value,
    "vision_msgs": True,
}
_CORE_SPECS = {s.name: s for s in PARAMETERS}


@dataclass(frozen=True)
class NodeSettings:
    """Everything the node reads from its parameters at configure."""

    config: PerceptionConfig
    content_filter: ContentFilterMode = ContentFilterMode.AUTO
    vision_msgs: bool = True  # publish detections_2d / detections_3d beside our own messages


# YAML 1.1 (what rcl's parameter parser speaks) reads these words as booleans.
_TRUE_WORDS = ("on", "true", "yes")
_FALSE_WORDS = ("off", "false", "no")


def _bool_words(spec: ParamSpec) -> bool:
    return spec.type == "str" and any(c in (*_TRUE_WORDS, *_FALSE_WORDS) for c in spec.choices)


def _dynamic(spec: ParamSpec) -> bool:
    return spec.type in ("float", "str_list") or _bool_words(spec)


def _coerce(spec: ParamSpec, value: Any) -> Any:
    """Undo YAML's reading of ``on``/``off``/``true``/``false`` choices as booleans."""
    if isinstance(value, bool) and _bool_words(spec):
        words = _TRUE_WORDS if value else _FALSE_WORDS
        for word in words:
            if word in spec.choices:
                return word
    return value


def descriptor_for(spec: ParamSpec) -> ParameterDescriptor:
    """Build the ROS descriptor of one parameter: description, range, choices, read-only."""
    d = ParameterDescriptor(
        name=spec.name,
        description=spec.description,
        read_only=not spec.runtime,
        dynamic_typing=_dynamic(spec),
    )
    if spec.type == "bool":
        d.type = ParameterType.PARAMETER_BOOL
    elif spec.type == "int":
        d.type = ParameterType.PARAMETER_INTEGER
        if spec.min is not None and spec.max is not None:
            d.integer_range = [
                IntegerRange(from_value=int(spec.min), to_value=int(spec.max), step=1)
            ]
    elif spec.type == "float":
        if spec.min is not None and spec.max is not None:
            d.floating_point_range = [
                FloatingPointRange(from_value=float(spec.min), to_value=float(spec.max), step=0.0)
            ]
        d.additional_constraints = "a number (an integer is accepted)"
    elif spec.type == "str":
        d.type = ParameterType.PARAMETER_STRING
    else:
        d.additional_constraints = "a list of strings, or one comma separated string"
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(c or "''" for c in spec.choices)
    if spec.runtime:
        d.description += " (changeable at run time)"
    return d


def _defaults() -> dict[str, Any]:
    values: dict[str, Any] = dict(PerceptionConfig().as_parameters())
    for name, value in list(values.items()):
        if isinstance(value, list) and not value:
            values[name] = ""  # rclpy cannot type an empty list
    values.update(_NODE_DEFAULTS)
    return values


def declare_parameters(node: Node) -> None:
    """Declare every parameter of the node with its descriptor and default."""
    defaults = _defaults()
    for spec in (*PARAMETERS, *NODE_PARAMETERS):
        node.declare_parameter(spec.name, defaults[spec.name], descriptor_for(spec))


def _plain(value: Any) -> Any:
    """Parameter value -> plain Python (rclpy hands arrays back as array.array or lists)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "array":
        return list(value)
    return value


def read_settings(node: Node) -> NodeSettings:
    """Read the declared parameters into validated settings; ``ConfigError`` names the bad one."""
    defaults = _defaults()
    values: dict[str, Any] = {}
    for spec in PARAMETERS:
        value = _coerce(spec, _plain(node.get_parameter(spec.name).value))
        values[spec.name] = defaults[spec.name] if value is None else value
    config = PerceptionConfig.from_mapping(values)
    raw_mode = _coerce(NODE_PARAMETERS[0], node.get_parameter("content_filter").value)
    try:
        mode = ContentFilterMode(raw_mode if raw_mode is not None else "auto")
    except ValueError as err:
        raise ConfigError(f"content_filter: {raw_mode!r} is not one of auto, on, off") from err
    vision = node.get_parameter("vision_msgs").value
    if not isinstance(vision, bool):
        raise ConfigError(f"vision_msgs: {vision!r} is not true or false")
    return NodeSettings(config=config, content_filter=mode, vision_msgs=vision)


def apply_updates(config: PerceptionConfig, params: Iterable[Parameter]) -> PerceptionConfig:
    """Return ``config`` with the changed parameters applied; ``ConfigError`` with the reason.

    Parameters the core does not know (``use_sim_time``, QoS overrides, ...)
    are ignored here; read-only ones never reach this point (rclpy refuses them).
    """
    updates: dict[str, Any] = {}
    for p in params:
        spec = _CORE_SPECS.get(p.name)
        if spec is None:
            continue
        if p.type_ == Parameter.Type.NOT_SET:
            raise ConfigError(f"{p.name}: cannot be undeclared")
        updates[p.name] = _coerce(spec, _plain(p.value))
    if not updates:
        return config
    return config.with_updates(**updates)


def validate_updates(
    node: Node, config: PerceptionConfig | None, params: Iterable[Parameter]
) -> SetParametersResult:
    """Check (for the on-set-parameters callback) that ``params`` give a valid config.

    Before configure there is no config yet; the one the node's parameters
    give now (or the defaults, when they are themselves invalid) is checked.
    """
    if config is None:
        try:
            config = read_settings(node).config
        except ConfigError:
            config = PerceptionConfig()
    try:
        apply_updates(config, params)
    except ConfigError as err:
        return SetParametersResult(successful=False, reason=str(err))
    return SetParametersResult(successful=True)
