"""Building backends by kind name from plain settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import make_request
from fault_server import FaultServer
from step_perception.backends.cassette import CassetteBackend
from step_perception.backends.factory import BACKEND_KINDS, make_backend
from step_perception.backends.openai import OpenAIBackend
from step_perception.backends.transformers_backend import TransformersBackend
from step_perception.core.errors import ConfigError

PACKAGE_ROOT = Path(__file__).resolve().parents[3]


def test_import_is_light() -> None:
    code = (
        "import sys, step_perception.backends.factory as f;"
        "print(sorted(m for m in ('torch', 'transformers', 'openai') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PACKAGE_ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert out.stdout.strip() == "[]"


def test_endpoints_setting_takes_a_string_or_a_list() -> None:
    one = make_backend("openai", endpoints="http://a:1/v1, http://b:2  http://a:1/v1/")
    many = make_backend("openai", endpoints=["http://a:1/v1", "http://b:2/v1,http://c/v1"])
    try:
        assert isinstance(one, OpenAIBackend) and isinstance(many, OpenAIBackend)
        assert one.config.endpoints == ("http://a:1/v1", "http://b:2/v1")
        assert many.config.endpoints == ("http://a:1/v1", "http://b:2/v1", "http://c/v1")
    finally:
        one.close()
        many.close()


def test_openai_from_settings() -> None:
    with FaultServer() as srv:
        backend = make_backend(
            "openai", endpoints=f"{srv.base_url}, http://127.0.0.1:9/v1", request_timeout_s=2.0
        )
        try:
            assert isinstance(backend, OpenAIBackend)
            assert backend.config.endpoints == (srv.base_url, "http://127.0.0.1:9/v1")
            assert backend.submit(make_request()).result(timeout=10).text == '{"objects": []}'
        finally:
            backend.close()


def test_transformers_from_settings(tiny_model_dir: Path) -> None:
    backend = make_backend("transformers", model=str(tiny_model_dir), device="cpu")
    try:
        assert isinstance(backend, TransformersBackend)
        backend.wait_loaded(timeout=60)
        assert backend.health().state == "loaded"
    finally:
        backend.close()


def test_record_then_replay_from_settings(tmp_path: Path) -> None:
    cassette = tmp_path / "f.jsonl"
    request = make_request()
    with FaultServer() as srv:
        recorder = make_backend(
            "record", cassette=str(cassette), live="openai", endpoints=srv.base_url
        )
        assert isinstance(recorder, CassetteBackend)
        recorded = recorder.submit(request).result(timeout=10)
        recorder.close()
    replayer = make_backend("replay", cassette=cassette)
    assert replayer.submit(request).result(timeout=1).text == recorded.text


@pytest.mark.parametrize(
    ("kind", "settings", "message"),
    [
        ("vllm", {}, "unknown backend kind"),
        ("openai", {}, "incomplete"),
        ("openai", {"endpoints": "http://a/v1", "api_key": "sk-x"}, "unknown settings"),
        ("openai", {"endpoints": ""}, "at least one endpoint"),
        ("transformers", {"model": "m", "quantization": "2bit"}, "quantization"),
        ("replay", {}, "needs a cassette"),
        ("replay", {"cassette": "x.jsonl", "live": "openai"}, "unknown settings"),
        ("record", {"cassette": "x.jsonl"}, "needs live="),
    ],
)
def test_bad_settings_are_config_errors(
    kind: str, settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_backend(kind, **settings)
    assert kind in BACKEND_KINDS or message == "unknown backend kind"


def test_backend_from_config_builds_each_kind(tmp_path: Path) -> None:
    from step_perception.backends.cassette import CassetteBackend
    from step_perception.backends.factory import backend_from_config
    from step_perception.backends.openai import OpenAIBackend
    from step_perception.core.config import PerceptionConfig

    live = backend_from_config(
        PerceptionConfig.from_mapping({"endpoint": "http://127.0.0.1:9/v1", "model": "m"})
    )
    try:
        assert isinstance(live, OpenAIBackend)
    finally:
        live.close()

    cassette = tmp_path / "c.jsonl"
    recording = backend_from_config(
        PerceptionConfig.from_mapping(
            {
                "endpoint": "http://127.0.0.1:9/v1",
                "cassette": str(cassette),
                "cassette_mode": "record",
            }
        )
    )
    try:
        assert isinstance(recording, CassetteBackend)
    finally:
        recording.close()
    assert cassette.exists()

    replaying = backend_from_config(
        PerceptionConfig.from_mapping({"backend": "replay", "cassette": str(cassette)})
    )
    try:
        assert isinstance(replaying, CassetteBackend)
        assert replaying.health().healthy
    finally:
        replaying.close()


def test_backend_from_config_rejects_missing_cassette(tmp_path: Path) -> None:
    from step_perception.backends.factory import backend_from_config
    from step_perception.core.config import PerceptionConfig

    cfg = PerceptionConfig.from_mapping(
        {"backend": "replay", "cassette": str(tmp_path / "missing.jsonl")}
    )
    with pytest.raises(ConfigError, match=r"missing\.jsonl"):
        backend_from_config(cfg)
