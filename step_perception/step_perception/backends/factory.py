"""Build any backend by kind name from plain settings (parameters, YAML, CLI flags).

Nothing heavy is imported here: each backend module (and torch/transformers
or the openai SDK behind it) is imported only when that kind is built.

    make_backend("openai", endpoints="http://gpu-a:8000/v1, http://gpu-b:8000/v1",
                 api_key_env="STEP_API_KEY")
    make_backend("transformers", model="models/tiny", device="cpu")
    make_backend("record", cassette="run.jsonl", live="openai", endpoints=[...])
    make_backend("replay", cassette="run.jsonl")
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from step_perception.core.backend import Backend
from step_perception.core.config import BackendKind, CassetteMode, PerceptionConfig
from step_perception.core.endpoints import parse_endpoints
from step_perception.core.errors import ConfigError

__all__ = ["BACKEND_KINDS", "LIVE_KINDS", "backend_from_config", "make_backend"]

#: Backends that answer from a model.
LIVE_KINDS = ("openai", "transformers")
#: Every kind ``make_backend`` builds.
BACKEND_KINDS = (*LIVE_KINDS, "record", "replay")

_T = TypeVar("_T")


def _build_config(cls: type[_T], settings: Mapping[str, Any], kind: str) -> _T:
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(settings) - names)
    if unknown:
        raise ConfigError(
            f"unknown settings for the {kind} backend: {unknown}; known: {sorted(names)}"
        )
    try:
        return cls(**settings)
    except TypeError as err:  # a missing required field
        raise ConfigError(f"{kind} backend settings are incomplete: {err}") from err


def _live(kind: str, settings: dict[str, Any]) -> Backend:
    if kind == "openai":
        from step_perception.backends.openai import OpenAIBackend, OpenAIBackendConfig

        if "endpoints" in settings:
            settings["endpoints"] = parse_endpoints(settings["endpoints"])
        return OpenAIBackend(_build_config(OpenAIBackendConfig, settings, kind))
    if kind == "transformers":
        from step_perception.backends.transformers_backend import (
            TransformersBackend,
            TransformersBackendConfig,
        )

        return TransformersBackend(_build_config(TransformersBackendConfig, settings, kind))
    raise ConfigError(f"unknown live backend kind {kind!r}; choose one of {LIVE_KINDS}")


def make_backend(kind: str, /, **settings: Any) -> Backend:
    """Build the backend ``kind`` from ``settings``; ConfigError when they don't fit.

    * ``openai``: the fields of ``OpenAIBackendConfig``; ``endpoints`` may be
      one string (comma/whitespace separated) or a list.
    * ``transformers``: the fields of ``TransformersBackendConfig``.
    * ``replay``: ``cassette`` (path).
    * ``record``: ``cassette``, ``live`` (``openai`` or ``transformers``) and
      that backend's settings.
    """
    if kind in LIVE_KINDS:
        return _live(kind, dict(settings))
    if kind in ("record", "replay"):
        from step_perception.backends.cassette import CassetteBackend

        rest = dict(settings)
        cassette = rest.pop("cassette", None)
        if not isinstance(cassette, (str, Path)) or not str(cassette):
            raise ConfigError(f"the {kind} backend needs a cassette path")
        if kind == "replay":
            if rest:
                raise ConfigError(f"unknown settings for the replay backend: {sorted(rest)}")
            return CassetteBackend.replaying(Path(cassette))
        live_kind = rest.pop("live", None)
        if live_kind not in LIVE_KINDS:
            raise ConfigError(f"the record backend needs live= one of {LIVE_KINDS}")
        live = _live(live_kind, rest)
        try:
            return CassetteBackend.recording(Path(cassette), live)
        except ConfigError:
            live.close()
            raise
    raise ConfigError(f"unknown backend kind {kind!r}; choose one of {BACKEND_KINDS}")


def backend_from_config(config: PerceptionConfig) -> Backend:
    """Build the backend the node's validated config names (the node and offline tools share it).

    ``cassette_mode`` wraps it: ``record`` stores every answer of the live backend,
    ``replay`` (or ``backend: replay``) answers from the cassette alone.
    """
    if config.backend is BackendKind.REPLAY or config.cassette_mode is CassetteMode.REPLAY:
        return make_backend("replay", cassette=config.cassette)
    settings: dict[str, Any]
    if config.backend is BackendKind.TRANSFORMERS:
        kind = "transformers"
        settings = {
            "model": config.model_path or config.model,
            "device": config.device,
            "trust_remote_code": config.trust_remote_code,
        }
    else:
        kind = "openai"
        settings = {
            "endpoints": config.endpoints,
            "model": config.model,
            "api_key_env": config.api_key_env,
            "api_key_file": config.api_key_file,
            "request_timeout_s": config.request_timeout_s,
            "max_workers": max(4, 2 * config.max_inflight),
        }
    if config.cassette_mode is CassetteMode.RECORD:
        return make_backend("record", cassette=config.cassette, live=kind, **settings)
    return make_backend(kind, **settings)
