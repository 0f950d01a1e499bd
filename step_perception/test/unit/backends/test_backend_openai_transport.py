"""Body size limit, TLS, plaintext warnings and the API key's secrecy (issue 13, items 5 and 6)."""

from __future__ import annotations

import logging
import ssl
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
import trustme
from conftest import make_request
from fault_server import Behaviour, FaultServer, closed_port
from step_perception.backends.factory import make_backend
from step_perception.backends.openai import OpenAIBackend, OpenAIBackendConfig
from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import (
    BackendError,
    BackendResponseTooLargeError,
    ConfigError,
)

FAST: dict[str, Any] = {"request_timeout_s": 2.0, "backoff_base_s": 0.01, "backoff_cap_s": 0.02}
SECRET = "sk-live-7f3a9c-never-shown"


def backend(*urls: str, **over: Any) -> OpenAIBackend:
    return OpenAIBackend(OpenAIBackendConfig(endpoints=tuple(urls), **{**FAST, **over}))


def failure(b: OpenAIBackend) -> BackendError:
    with pytest.raises(BackendError) as info:
        b.submit(make_request()).result(timeout=30)
    return info.value


# -- answer size -----------------------------------------------------------------------------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_5mb_answer_is_refused_typed_without_being_held(chunked: bool) -> None:
    cap = 1024 * 1024
    big = Behaviour("big", size=5_000_000, chunked=chunked)
    with FaultServer(script=[Behaviour()], default=big) as srv:
        b = backend(srv.base_url, max_response_bytes=cap)
        try:
            b.submit(make_request()).result(timeout=30)  # warm: the SDK's lazy imports
            tracemalloc.start()
            try:
                err = failure(b)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert srv.chat_hits == 2  # refused, not retried: a retry would get the same
            assert b.health().state == "closed"  # the server is fine, the answer was not
        finally:
            b.close()
    assert isinstance(err, BackendResponseTooLargeError)
    assert "max_response_bytes=1048576" in str(err)
    # Reading it would hold >= 5 MB (bytes, then the decoded text); the limit stops at 1 MiB.
    assert peak < 3_000_000, peak


def test_an_answer_under_the_limit_passes() -> None:
    with FaultServer(default=Behaviour("big", size=100_000)) as srv:
        b = backend(srv.base_url, max_response_bytes=1024 * 1024)
        try:
            reply = b.submit(make_request()).result(timeout=30)
        finally:
            b.close()
    assert len(reply.text) == 100_000
    assert srv.state.headers[0]["accept-encoding"] == "identity"


def test_max_response_bytes_is_validated() -> None:
    for bad in (0, 100, True, 2.5):
        with pytest.raises(ConfigError, match="max_response_bytes"):
            OpenAIBackendConfig(endpoints=("http://a:1/v1",), max_response_bytes=bad)  # type: ignore[arg-type]


# -- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls() -> tuple[trustme.CA, ssl.SSLContext]:
    ca = trustme.CA()
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
    return ca, ctx


def test_tls_is_verified_by_default(tls: tuple[trustme.CA, ssl.SSLContext]) -> None:
    with FaultServer(tls=tls[1]) as srv:
        b = backend(srv.base_url)
        try:
            err = failure(b)
        finally:
            b.close()
        assert srv.chat_hits == 0  # the handshake failed: nothing was sent
    assert "TLS failed" in str(err) and "gave up" not in str(err)  # not retried


def test_turning_tls_verification_off_works_and_warns(
    tls: tuple[trustme.CA, ssl.SSLContext], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="step_perception.backends.openai")
    with FaultServer(tls=tls[1]) as srv:
        b = backend(srv.base_url, tls_verify=False)
        try:
            reply = b.submit(make_request()).result(timeout=30)
        finally:
            b.close()
    assert reply.endpoint.startswith("https://")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "tls_verify is off" in warnings[0].getMessage()


def test_tls_verify_is_a_node_parameter_defaulting_on() -> None:
    assert PerceptionConfig().tls_verify is True
    assert PerceptionConfig.from_mapping({"tls_verify": False}).tls_verify is False
    with pytest.raises(ConfigError, match="tls_verify"):
        PerceptionConfig.from_mapping({"tls_verify": "no"})


# -- plaintext to another host ---------------------------------------------------------------


def test_http_to_a_remote_host_logs_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="step_perception.backends.openai")
    b = backend(
        "http://gpu-ws:8000/v1",
        "http://10.0.0.5:8000/v1",
        "http://127.0.0.1:8000/v1",
        "http://localhost:8001/v1",
        "http://[::1]:8000/v1",
        "https://api.example.com/v1",
    )
    b.close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1, warnings
    assert "http://gpu-ws:8000/v1" in warnings[0] and "http://10.0.0.5:8000/v1" in warnings[0]
    for local in ("127.0.0.1", "localhost", "::1", "example.com"):
        assert local not in warnings[0]
    caplog.clear()
    backend("http://127.0.0.1:8000/v1", "https://api.example.com/v1").close()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


# -- the API key -----------------------------------------------------------------------------


@pytest.fixture(params=["env", "file"])
def key_settings(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> dict[str, str]:
    if request.param == "env":
        monkeypatch.setenv("STEP_PERCEPTION_TEST_SECRET", SECRET)
        return {"api_key_env": "STEP_PERCEPTION_TEST_SECRET"}
    path = tmp_path / "key"
    path.write_text(SECRET + "\n")
    return {"api_key_file": str(path)}


def test_a_server_echoing_the_key_never_gets_it_into_errors_or_logs(
    key_settings: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # the SDK's and httpx's debug logging too
    shown: list[str] = []
    with FaultServer(default=Behaviour("echo_key", status=500)) as srv:
        b = backend(srv.base_url, breaker_threshold=2, **key_settings)
        try:
            for status in (500, 401):  # retried (logged per retry), then not retried
                srv.set(default=Behaviour("echo_key", status=status))
                err = failure(b)
                shown += [str(err), repr(err), str(err.args)]
            shown += [repr(b), repr(b.config), str(b.health())]
        finally:
            b.close()
    assert srv.state.headers[0]["authorization"] == f"Bearer {SECRET}"  # it was sent
    assert "<redacted>" in shown[0]  # the server's text is kept, the key cut out
    assert SECRET not in caplog.text
    assert not [s for s in shown if SECRET in s]


def test_credentials_in_endpoint_or_proxy_urls_never_show(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"http://admin:{SECRET}@127.0.0.1:{closed_port()}/v1"
    errors: list[str] = []
    for build in (
        lambda: OpenAIBackendConfig(endpoints=(url,)),
        lambda: make_backend("openai", endpoints=url),
        lambda: PerceptionConfig.from_mapping({"endpoint": url}),
    ):
        with pytest.raises(ConfigError) as info:
            build()
        errors.append(str(info.value))
    # A proxy with credentials (from the environment) that refuses the connection.
    monkeypatch.setenv("HTTP_PROXY", f"http://admin:{SECRET}@127.0.0.1:{closed_port()}")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    b = backend("http://gpu-ws.invalid:8000/v1", max_retries=1)
    try:
        err = failure(b)
        errors += [str(err), str(b.health())]
    finally:
        b.close()
    assert "refused" in errors[-2] or "connect" in errors[-2], errors[-2]
    assert not [e for e in errors if SECRET in e], errors
    assert SECRET not in caplog.text
