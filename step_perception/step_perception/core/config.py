"""The node's parameters, read once into one validated, immutable config object.

``PerceptionConfig.from_mapping`` is the only way in from untyped values (ROS
parameters, YAML, CLI flags): it checks types, ranges, enums and endpoint URLs
and raises ``ConfigError`` whose message starts with the parameter's name.
``PARAMETERS`` describes every parameter (type, range, choices, whether it may
change at run time) so the ROS adapter can declare descriptors from the same
table the validation uses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import Enum
from typing import Any, Literal

from step_perception.core.endpoints import parse_endpoints, split_list
from step_perception.core.errors import ConfigError
from step_perception.core.profiles import get_profile, profile_names
from step_perception.core.tokens import Detail
from step_perception.core.types import Task

__all__ = [
    "ENV_VAR_NAME",
    "PARAMETERS",
    "REASONING_EFFORTS",
    "BackendKind",
    "CassetteMode",
    "ImageTransportKind",
    "ParamSpec",
    "PerceptionConfig",
    "Reliability",
    "check_env_var_name",
]


class BackendKind(str, Enum):
    """Which model backend answers requests."""

    OPENAI = "openai"
    TRANSFORMERS = "transformers"
    REPLAY = "replay"


class ImageTransportKind(str, Enum):
    """Which image topic the node subscribes to."""

    RAW = "raw"  # sensor_msgs/Image on image_raw
    COMPRESSED = "compressed"  # sensor_msgs/CompressedImage on image_raw/compressed


class Reliability(str, Enum):
    """QoS reliability of the image subscriptions."""

    BEST_EFFORT = "best_effort"
    RELIABLE = "reliable"


class CassetteMode(str, Enum):
    """Record/replay of model answers through a cassette (see backends/cassette.py)."""

    OFF = "off"
    RECORD = "record"
    REPLAY = "replay"


ParamType = Literal["bool", "int", "float", "str", "str_list"]


@dataclass(frozen=True)
class ParamSpec:
    """How one parameter is typed, bounded and described."""

    name: str
    type: ParamType
    description: str
    min: float | None = None
    max: float | None = None
    choices: tuple[str, ...] = ()
    runtime: bool = False  # may change while the node runs (parameter callback)


_ACTION_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
#: reasoning_effort values a server may be sent: the OpenAI SDK's ``ReasoningEffort``
#: (openai 2.x). vLLM passes the value on to the model's chat template; a server that
#: rejects the field is detected by the openai backend, which then stops sending it.
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
#: What an environment variable name (``api_key_env``) must look like.
ENV_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_env_var_name(name: str) -> None:
    """Raise ``ConfigError`` unless ``api_key_env`` value ``name`` is empty or an env var name."""
    if name and not ENV_VAR_NAME.fullmatch(name):
        raise ConfigError(f"api_key_env: {name!r} is not an environment variable name")


PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("backend", "str", "Model backend.", choices=tuple(k.value for k in BackendKind)),
    ParamSpec(
        "endpoint",
        "str_list",
        "Base URL(s) of OpenAI-compatible servers (http/https, no credentials); "
        "a list or a comma/space separated string. Several = failover.",
    ),
    ParamSpec("model", "str", "Model name as the server knows it (or a local folder path)."),
    ParamSpec("api_key_env", "str", "Name of the env var holding the API key ('' = none)."),
    ParamSpec("api_key_file", "str", "File holding the API key ('' = none)."),
    ParamSpec(
        "tls_verify",
        "bool",
        "Verify https endpoints' certificates (false only for a test rig; logged as a warning).",
    ),
    ParamSpec(
        "model_profile",
        "str",
        "Box convention, wording and sampling defaults of the model family.",
        choices=profile_names(),
    ),
    ParamSpec(
        "task", "str", "What to ask for.", choices=tuple(t.value for t in Task), runtime=True
    ),
    ParamSpec("prompt", "str", "Standing query (object names, description or goal).", runtime=True),
    ParamSpec(
        "rate_hz",
        "float",
        "Max processed frames per second of stamp time.",
        0.001,
        1000.0,
        (),
        True,
    ),
    ParamSpec("max_inflight", "int", "Concurrent model requests.", 1, 64),
    ParamSpec(
        "max_frame_age_s",
        "float",
        "A frame older than this when a slot frees is dropped, not sent [s].",
        0.001,
        3600.0,
        runtime=True,
    ),
    ParamSpec(
        "max_image_side", "int", "Longest side of the image sent [px].", 16, 8192, runtime=True
    ),
    ParamSpec(
        "max_pixels", "int", "Pixel budget of the image sent (0 = off).", 0, 67_108_864, (), True
    ),
    ParamSpec("jpeg_quality", "int", "JPEG quality of the image sent.", 1, 100, runtime=True),
    ParamSpec(
        "image_transport",
        "str",
        "raw (image_raw) or compressed (image_raw/compressed).",
        choices=tuple(k.value for k in ImageTransportKind),
    ),
    ParamSpec("use_depth", "bool", "Use aligned depth (depth/image_raw) for 3D positions."),
    ParamSpec(
        "reliability",
        "str",
        "QoS reliability of the image subscriptions.",
        choices=tuple(k.value for k in Reliability),
    ),
    ParamSpec(
        "request_timeout_s", "float", "Timeout of one model request attempt [s].", 0.01, 3600.0
    ),
    ParamSpec(
        "allowed_actions",
        "str_list",
        "Actions a command may name (lowercase identifiers); empty = no commands.",
        runtime=True,
    ),
    ParamSpec("cassette", "str", "Cassette file for record/replay ('' = none)."),
    ParamSpec(
        "cassette_mode",
        "str",
        "off, record or replay.",
        choices=tuple(k.value for k in CassetteMode),
    ),
    ParamSpec(
        "target_frame",
        "str",
        "Frame of the 3D positions ('' = the camera's optical frame, the image's frame_id); "
        "positions are transformed with tf2 at the image's stamp.",
    ),
    ParamSpec(
        "publish_debug_image",
        "bool",
        "Always publish debug_image (else only when subscribed).",
        runtime=True,
    ),
    ParamSpec("autostart", "bool", "Walk the lifecycle to active at start."),
    ParamSpec("max_objects", "int", "Max objects kept per answer.", 1, 256, runtime=True),
    ParamSpec(
        "reasoning_effort",
        "str",
        "reasoning_effort sent to reasoning models ('' = profile default, 'none' = don't send).",
        choices=("", *REASONING_EFFORTS),
        runtime=True,
    ),
    ParamSpec(
        "use_response_format",
        "str",
        "Send the answer's JSON schema as response_format: auto (profile default), true, false.",
        choices=("auto", "true", "false"),
        runtime=True,
    ),
    ParamSpec(
        "max_tokens", "int", "Max answer tokens (0 = profile default).", 0, 1_000_000, (), True
    ),
    ParamSpec(
        "detail",
        "str",
        "Send geometry: low (fewest image tokens), balanced (most pixels within "
        "image_token_budget), high (longest side max_image_side).",
        choices=tuple(d.value for d in Detail),
        runtime=True,
    ),
    ParamSpec(
        "image_token_budget",
        "int",
        "detail=balanced: image tokens per frame (0 = the profile's).",
        0,
        100_000,
        (),
        True,
    ),
    ParamSpec(
        "thinking_token_budget",
        "int",
        "Max reasoning tokens before the server ends thinking (vLLM thinking_token_budget; "
        "0 = profile default, -1 = don't send).",
        -1,
        1_000_000,
        (),
        True,
    ),
    ParamSpec("model_path", "str", "Local model folder for the transformers backend."),
    ParamSpec("device", "str", "transformers backend device: auto, cpu, cuda or cuda:N."),
    ParamSpec(
        "trust_remote_code", "bool", "transformers backend: run the model folder's own code."
    ),
)

_SPECS: dict[str, ParamSpec] = {s.name: s for s in PARAMETERS}
# Config field name -> parameter name, where they differ.
_FIELD_TO_PARAM = {"endpoints": "endpoint"}
_PARAM_TO_FIELD = {v: k for k, v in _FIELD_TO_PARAM.items()}


def _check(spec: ParamSpec, value: object) -> Any:
    """Type-check and range-check one raw value; returns it in the spec's Python type."""
    name = spec.name
    if spec.type == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected a bool, got {value!r}")
        return value
    if spec.type == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"{name}: expected an integer, got {value!r}")
        if (spec.min is not None and value < spec.min) or (
            spec.max is not None and value > spec.max
        ):
            raise ConfigError(f"{name}: {value} is outside [{spec.min:g}, {spec.max:g}]")
        return value
    if spec.type == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        f = float(value)
        if not math.isfinite(f):
            raise ConfigError(f"{name}: must be finite, got {value!r}")
        if (spec.min is not None and f < spec.min) or (spec.max is not None and f > spec.max):
            raise ConfigError(f"{name}: {f:g} is outside [{spec.min:g}, {spec.max:g}]")
        return f
    if spec.type == "str":
        if isinstance(value, Enum):
            value = value.value
        if not isinstance(value, str):
            raise ConfigError(f"{name}: expected a string, got {value!r}")
        if spec.choices and value not in spec.choices:
            raise ConfigError(f"{name}: {value!r} is not one of {', '.join(spec.choices)}")
        if "\x00" in value:
            raise ConfigError(f"{name}: contains a NUL character")
        return value
    # str_list
    if isinstance(value, str):
        return tuple(split_list(value))
    if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        return tuple(p for v in value for p in split_list(v))
    raise ConfigError(f"{name}: expected a list of strings or a comma separated string")


@dataclass(frozen=True)
class PerceptionConfig:
    """Every parameter of the node, validated. Build with ``from_mapping``."""

    backend: BackendKind = BackendKind.OPENAI
    endpoints: tuple[str, ...] = ("http://localhost:8000/v1",)
    model: str = "stepfun-ai/Step-3.7-Flash"
    api_key_env: str = ""
    api_key_file: str = ""
    tls_verify: bool = True
    model_profile: str = "step3p7"
    task: Task = Task.DETECT
    prompt: str = ""
    rate_hz: float = 1.0
    max_inflight: int = 1
    max_frame_age_s: float = 2.0
    max_image_side: int = 728
    max_pixels: int = 0
    jpeg_quality: int = 85
    image_transport: ImageTransportKind = ImageTransportKind.RAW
    use_depth: bool = False
    reliability: Reliability = Reliability.BEST_EFFORT
    request_timeout_s: float = 10.0
    allowed_actions: tuple[str, ...] = ("pick", "place", "move_to", "look_at", "stop")
    cassette: str = ""
    cassette_mode: CassetteMode = CassetteMode.OFF
    target_frame: str = ""  # "" = positions stay in the image's frame_id
    publish_debug_image: bool = False
    autostart: bool = True
    max_objects: int = 32
    reasoning_effort: str = ""  # "" = profile default, "none" = don't send
    use_response_format: bool | None = None  # None = profile default
    max_tokens: int = 0  # 0 = profile default
    thinking_token_budget: int = 0  # 0 = profile default, -1 = don't send
    detail: Detail = Detail.HIGH
    image_token_budget: int = 0  # 0 = profile default
    model_path: str = ""
    device: str = "auto"
    trust_remote_code: bool = False

    def __post_init__(self) -> None:
        self._validate()

    @classmethod
    def from_mapping(
        cls, values: Mapping[str, object], *, ignore_unknown: bool = False
    ) -> PerceptionConfig:
        """Validate raw values (parameter names, e.g. ``endpoint``) into a config.

        Missing keys take the defaults. Unknown keys raise ``ConfigError``
        unless ``ignore_unknown`` (the ROS node passes its other parameters
        too). Field names (``endpoints``) are accepted as well.
        """
        kwargs: dict[str, Any] = {}
        for key, raw in values.items():
            pname = _FIELD_TO_PARAM.get(key, key)
            spec = _SPECS.get(pname)
            if spec is None:
                if ignore_unknown:
                    continue
                raise ConfigError(f"{key}: unknown parameter")
            fname = _PARAM_TO_FIELD.get(pname, pname)
            kwargs[fname] = _convert(spec, raw)
        return cls(**kwargs)

    def with_updates(self, **changes: object) -> PerceptionConfig:
        """Return a copy with ``changes`` applied (parameter or field names), revalidated."""
        current: dict[str, object] = {f.name: getattr(self, f.name) for f in _FIELDS}
        for key, value in changes.items():
            fname = _PARAM_TO_FIELD.get(key, key)
            if fname not in current:
                raise ConfigError(f"{key}: unknown parameter")
            current[fname] = value
        return PerceptionConfig.from_mapping(current)

    def summary(self) -> str:
        """One log line: what the node was configured with (no key, no endpoint)."""
        return (
            f"model={self.model} profile={self.model_profile} task={self.task.value} "
            f"rate_hz={self.rate_hz:g} max_image_side={self.max_image_side} "
            f"input={self.image_transport.value}/{self.reliability.value} "
            f"use_depth={self.use_depth}"
        )

    def as_parameters(self) -> dict[str, bool | int | float | str | list[str]]:
        """Return the config as ROS-parameter-typed values, keyed by parameter name."""
        out: dict[str, bool | int | float | str | list[str]] = {}
        for f in _FIELDS:
            value = getattr(self, f.name)
            pname = _FIELD_TO_PARAM.get(f.name, f.name)
            if isinstance(value, Enum):
                out[pname] = str(value.value)
            elif isinstance(value, tuple):
                out[pname] = list(value)
            elif f.name == "use_response_format":
                out[pname] = "auto" if value is None else ("true" if value else "false")
            else:
                out[pname] = value
        return out

    def _validate(self) -> None:
        """Per-field and cross-field checks (run on every construction, direct ones too)."""
        # Direct construction (PerceptionConfig(rate_hz=0)) gets the same type, range and enum
        # checks as from_mapping; values are normalised to the field's type in place.
        for spec in PARAMETERS:
            fname = _PARAM_TO_FIELD.get(spec.name, spec.name)
            object.__setattr__(self, fname, _convert(spec, getattr(self, fname)))
        if not self.endpoints and self.backend is BackendKind.OPENAI:
            raise ConfigError("endpoint: at least one endpoint is needed for backend openai")
        if not self.model.strip():
            raise ConfigError("model: must not be empty")
        get_profile(self.model_profile)
        if self.target_frame != self.target_frame.strip() or " " in self.target_frame:
            raise ConfigError(f"target_frame: {self.target_frame!r} is not a frame name")
        check_env_var_name(self.api_key_env)
        for action in self.allowed_actions:
            if not _ACTION_RE.fullmatch(action):
                raise ConfigError(
                    f"allowed_actions: {action!r} must be a lowercase identifier ([a-z][a-z0-9_]*)"
                )
        if self.max_pixels and self.max_pixels < 1024:
            raise ConfigError("max_pixels: must be 0 (off) or at least 1024")
        if self.cassette_mode is not CassetteMode.OFF and not self.cassette:
            raise ConfigError(f"cassette: needed when cassette_mode is {self.cassette_mode.value}")
        if self.backend is BackendKind.REPLAY and not self.cassette:
            raise ConfigError("cassette: needed for backend replay")

    @property
    def max_frame_age_ns(self) -> int:
        """``max_frame_age_s`` in nanoseconds."""
        return round(self.max_frame_age_s * 1e9)


_FIELDS = fields(PerceptionConfig)


def _convert(spec: ParamSpec, raw: object) -> Any:
    """Raw value -> the config field's type (enums, tuples, optional bool)."""
    name = spec.name
    if name == "endpoint":
        return parse_endpoints(raw)
    if name == "use_response_format":
        if raw is None or isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in ("auto", "", "true", "false"):
            s = raw.strip().lower()
            return None if s in ("auto", "") else s == "true"
        raise ConfigError(f"use_response_format: expected auto, true or false, got {raw!r}")
    if name == "reasoning_effort" and isinstance(raw, str):
        raw = raw.strip().lower()
    if name == "allowed_actions":
        actions = _check(spec, raw)
        return tuple(dict.fromkeys(a.strip().lower() for a in actions))
    value = _check(spec, raw)
    enum_types: dict[str, type[Enum]] = {
        "backend": BackendKind,
        "task": Task,
        "image_transport": ImageTransportKind,
        "reliability": Reliability,
        "cassette_mode": CassetteMode,
        "detail": Detail,
    }
    if name in enum_types:
        return enum_types[name](value)
    return value
