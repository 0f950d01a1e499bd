"""The openai backend against a real local HTTP server that misbehaves on purpose."""

from __future__ import annotations

import base64
import logging
import threading
import time
from typing import Any

import pytest
from conftest import make_request
from fault_server import Behaviour, FaultServer, closed_port
from step_perception.backends.openai import (
    NO_API_KEY,
    OpenAIBackend,
    OpenAIBackendConfig,
)
from step_perception.core.backend import Backend
from step_perception.core.endpoints import parse_endpoints, redact_url
from step_perception.core.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigError,
)
from step_perception.core.parsing import strip_reasoning

FAST: dict[str, Any] = {
    "request_timeout_s": 0.4,
    "connect_timeout_s": 0.3,
    "max_retries": 2,
    "backoff_base_s": 0.01,
    "backoff_cap_s": 0.05,
    "breaker_threshold": 3,
    "probe_interval_s": 0.3,
    "probe_timeout_s": 0.5,
}


def backend(*urls: str, **over: Any) -> OpenAIBackend:
    return OpenAIBackend(OpenAIBackendConfig(endpoints=tuple(urls), **{**FAST, **over}))


def result(b: OpenAIBackend, **req: Any) -> Any:
    return b.submit(make_request(**req)).result(timeout=30)


def failure(b: OpenAIBackend, **req: Any) -> BackendError:
    with pytest.raises(BackendError) as info:
        result(b, **req)
    return info.value


def test_reply_fields_and_wire_format() -> None:
    with FaultServer() as srv:
        b = backend(srv.base_url)
        try:
            assert isinstance(b, Backend)
            req = make_request()
            reply = b.submit(req).result(timeout=10)
        finally:
            b.close()
    assert reply.text == '{"objects": []}'
    assert reply.endpoint == srv.base_url
    assert reply.attempts == 1
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (11, 7)
    assert reply.latency_s > 0
    body = srv.state.bodies[0]
    assert body["model"] == "fault-model"
    assert body["max_tokens"] == 16
    assert body["reasoning_effort"] == "low"
    assert "response_format" not in body
    system, user = body["messages"]
    assert system == {"role": "system", "content": req.system}
    image_part, text_part = user["content"]
    url = image_part["image_url"]["url"]
    assert url.startswith("data:image/png;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == req.image.data
    assert text_part == {"type": "text", "text": req.user}


def test_response_format_only_when_asked() -> None:
    schema = {"type": "object", "properties": {"objects": {"type": "array"}}}
    with FaultServer() as srv:
        b = backend(srv.base_url, reasoning_effort="high")
        try:
            result(b, json_schema=schema, use_response_format=True)
            result(b, json_schema=schema, use_response_format=False)
        finally:
            b.close()
    asked, not_asked = srv.state.bodies
    assert asked["response_format"]["type"] == "json_schema"
    assert asked["response_format"]["json_schema"]["schema"] == schema
    assert "response_format" not in not_asked
    assert asked["reasoning_effort"] == "high"  # the config overrides the request's "low"


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])  # vLLM 0.32, SGLang
def test_reasoning_is_stripped_and_the_reasoning_field_ignored(field: str) -> None:
    think = Behaviour(
        content='<think>the cube is red</think>\n{"objects": [1]}',
        reasoning="long",
        reasoning_field=field,
    )
    with FaultServer(default=think) as srv:
        b = backend(srv.base_url)
        try:
            assert result(b).text == '{"objects": [1]}'
        finally:
            b.close()


def test_strip_reasoning_forms() -> None:
    assert strip_reasoning("<think>a</think><think>b</think> {} ") == "{}"
    assert strip_reasoning("<THINK>a</Think>{}<think>b") == "{}"
    assert strip_reasoning("reasoning without opening tag</think>{}") == "{}"
    assert strip_reasoning('{"a": 1}<think>cut off by max_tok') == '{"a": 1}'
    assert strip_reasoning("plain") == "plain"


def test_connection_refused_is_unavailable() -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    b = backend(url)
    try:
        err = failure(b)
    finally:
        b.close()
    assert isinstance(err, BackendUnavailableError)
    assert "refused" in str(err) and "3 attempts" in str(err)


def test_timeout_is_retried_then_typed() -> None:
    with FaultServer(default=Behaviour("sleep", delay_s=1.5)) as srv:
        b = backend(srv.base_url, request_timeout_s=0.3, max_retries=1)
        try:
            t0 = time.monotonic()
            err = failure(b)
            elapsed = time.monotonic() - t0
        finally:
            b.close()
        assert srv.chat_hits == 2
    assert isinstance(err, BackendTimeoutError)
    assert "timed out" in str(err)
    assert elapsed < 1.4  # two 0.3 s attempts, not the server's 1.5 s sleep


def test_500_is_retried_then_backend_error() -> None:
    with FaultServer(default=Behaviour("status", status=500)) as srv:
        b = backend(srv.base_url)
        try:
            err = failure(b)
        finally:
            b.close()
        assert srv.chat_hits == 3  # 1 + max_retries
    assert type(err) is BackendError
    assert "HTTP 500" in str(err) and "gave up after 3 attempts" in str(err)


def test_503_twice_then_recovers() -> None:
    s503 = Behaviour("status", status=503)
    with FaultServer(script=[s503, s503]) as srv:
        b = backend(srv.base_url)
        try:
            reply = result(b)
        finally:
            b.close()
        assert srv.chat_hits == 3
    assert reply.attempts == 3
    assert reply.text == '{"objects": []}'


def test_503_exhausted_is_unavailable() -> None:
    with FaultServer(default=Behaviour("status", status=503)) as srv:
        b = backend(srv.base_url, max_retries=1)
        try:
            err = failure(b)
        finally:
            b.close()
        assert srv.chat_hits == 2
    assert isinstance(err, BackendUnavailableError)
    assert "HTTP 503" in str(err)


def test_429_honours_retry_after() -> None:
    with FaultServer(script=[Behaviour("status", status=429, retry_after="0.4")]) as srv:
        b = backend(srv.base_url)
        try:
            reply = result(b)
        finally:
            b.close()
        first, second = srv.state.hit_times
    assert reply.attempts == 2
    assert second - first >= 0.4  # backoff alone would be <= 0.05 s


def test_429_with_too_long_retry_after_is_not_waited() -> None:
    with FaultServer(default=Behaviour("status", status=429, retry_after="120")) as srv:
        b = backend(srv.base_url, retry_after_cap_s=5.0)
        try:
            t0 = time.monotonic()
            err = failure(b)
        finally:
            b.close()
        assert srv.chat_hits == 1
    assert time.monotonic() - t0 < 2.0
    assert "HTTP 429" in str(err) and "asked to wait 120.0 s" in str(err)


def test_truncated_body_is_retried() -> None:
    with FaultServer(script=[Behaviour("truncated")]) as srv:
        b = backend(srv.base_url)
        try:
            reply = result(b)
            assert reply.attempts == 2
            srv.set(default=Behaviour("truncated"))
            err = failure(b)
        finally:
            b.close()
        assert srv.chat_hits == 2 + 3
    assert type(err) is BackendError
    assert "connection broke during the answer" in str(err)


def test_close_after_headers_is_retried_then_backend_error() -> None:
    with FaultServer(default=Behaviour("close_after_headers")) as srv:
        b = backend(srv.base_url)
        try:
            err = failure(b)
        finally:
            b.close()
        assert srv.chat_hits == 3
    assert type(err) is BackendError
    assert "connection broke" in str(err)


def test_invalid_json_is_not_retried() -> None:
    with FaultServer(default=Behaviour("invalid_json")) as srv:
        b = backend(srv.base_url)
        try:
            err = failure(b)
        finally:
            b.close()
        assert srv.chat_hits == 1
    assert type(err) is BackendError
    assert "unusable answer" in str(err)


def test_missing_content_is_backend_error() -> None:
    with FaultServer(default=Behaviour(content=None, reasoning="only thoughts")) as srv:
        b = backend(srv.base_url)
        try:
            err = failure(b)
        finally:
            b.close()
        assert srv.chat_hits == 1
    assert "no text content" in str(err)


def test_400_is_not_retried() -> None:
    with FaultServer(default=Behaviour("status", status=400, message="bad image")) as srv:
        b = backend(srv.base_url)
        try:
            err = failure(b)
        finally:
            b.close()
        assert srv.chat_hits == 1
    assert type(err) is BackendError
    assert "HTTP 400" in str(err) and "bad image" in str(err)


def test_server_rejecting_reasoning_effort_gets_requests_without_it() -> None:
    reject = Behaviour("status", status=400, message="unknown field: reasoning_effort")
    with FaultServer(script=[reject]) as srv:
        b = backend(srv.base_url)
        try:
            reply = result(b)
            result(b)
        finally:
            b.close()
    assert reply.text == '{"objects": []}'
    first, second, third = srv.state.bodies
    assert "reasoning_effort" in first
    assert "reasoning_effort" not in second and "reasoning_effort" not in third


def test_deadline_prevents_retry() -> None:
    with FaultServer(default=Behaviour("status", status=500)) as srv:
        # Backoff is 2..4 s (equal jitter), the deadline 1.5 s away: no retry may be sent,
        # and the first attempt has ample time even on a loaded machine.
        b = backend(srv.base_url, backoff_base_s=4.0, backoff_cap_s=4.0)
        try:
            err = failure(b, deadline=time.monotonic() + 1.5)
        finally:
            b.close()
        assert srv.chat_hits == 1
    assert "not retried: the request deadline is nearer" in str(err)


def test_expired_deadline_sends_nothing() -> None:
    with FaultServer() as srv:
        b = backend(srv.base_url)
        try:
            err = failure(b, deadline=time.monotonic() - 0.01)
        finally:
            b.close()
        assert srv.chat_hits == 0
    assert isinstance(err, BackendTimeoutError)
    assert "deadline passed" in str(err)


def test_deadline_caps_the_attempt_timeout() -> None:
    with FaultServer(default=Behaviour("sleep", delay_s=2.0)) as srv:
        b = backend(srv.base_url, request_timeout_s=5.0, max_retries=0)
        try:
            t0 = time.monotonic()
            err = failure(b, deadline=time.monotonic() + 0.3)
        finally:
            b.close()
    assert isinstance(err, BackendTimeoutError)
    assert time.monotonic() - t0 < 1.5


def test_breaker_opens_then_a_waiting_request_rides_the_first_passed_probe() -> None:
    with FaultServer(default=Behaviour("status", status=503)) as srv:
        b = backend(srv.base_url, breaker_threshold=2, max_retries=1, probe_interval_s=0.3)
        try:
            assert isinstance(failure(b), BackendUnavailableError)
            assert srv.chat_hits == 2
            health = b.health()
            assert (health.healthy, health.state) == (False, "open")
            assert "probe in" in health.detail
            # Open: a request whose deadline comes before the first probe is refused, and
            # nothing is sent; the probe route answers fine, but no probe is due yet.
            err = failure(b, deadline=time.monotonic() + 0.05)
            assert isinstance(err, BackendUnavailableError)
            assert "no endpoint can take the request" in str(err)
            assert (srv.chat_hits, srv.models_hits) == (2, 0)
            srv.set(default=Behaviour())
            # A request with time to spare waits for the probe and is the half-open trial.
            reply = result(b, deadline=time.monotonic() + 5.0)
            assert (srv.chat_hits, srv.models_hits) == (3, 1)
            assert reply.attempts == 1
            assert b.health().state == "closed"
        finally:
            b.close()


def test_breaker_stays_open_while_probes_fail_and_probes_keep_their_interval() -> None:
    with FaultServer(default=Behaviour("status", status=500)) as srv:
        srv.state.models_status = 500
        b = backend(srv.base_url, breaker_threshold=1, max_retries=0, probe_interval_s=0.2)
        try:
            failure(b)
            srv.set(default=Behaviour())
            err = failure(b, deadline=time.monotonic() + 1.0)
            assert isinstance(err, BackendUnavailableError)
            assert srv.chat_hits == 1
            assert b.health().state == "open"
        finally:
            b.close()
        probes = srv.state.models_times
    assert 2 <= len(probes) <= 1.0 / 0.2 + 2, probes
    # Probe starts are >= probe_interval_s apart (arrivals may jitter by the loaded machine).
    assert (probes[-1] - probes[0]) >= (len(probes) - 1) * 0.2 - 0.1, probes


def test_half_open_trial_failure_reopens() -> None:
    with FaultServer(default=Behaviour("status", status=500)) as srv:
        b = backend(srv.base_url, breaker_threshold=2, max_retries=1, probe_interval_s=0.2)
        try:
            failure(b)  # two failures: open
            # The probe passes (GET /models is fine), the trial fails: open again.
            err = failure(b, deadline=time.monotonic() + 0.35)
            assert "HTTP 500" in str(err)
            assert srv.chat_hits == 3 and srv.models_hits >= 1
            assert b.health().state == "open"
        finally:
            b.close()


def test_slow_probe_past_the_deadline_sends_nothing_and_blames_no_one() -> None:
    with FaultServer(default=Behaviour("status", status=500)) as srv:
        b = backend(
            srv.base_url,
            breaker_threshold=1,
            max_retries=0,
            probe_interval_s=0.2,
            probe_timeout_s=5.0,
        )
        try:
            failure(b)  # open
            srv.set(default=Behaviour())
            srv.state.models_delay_s = 1.0  # the probe passes, but slowly
            err = failure(b, deadline=time.monotonic() + 0.5)
            assert isinstance(err, BackendUnavailableError)
            assert "open (probing)" in str(err)
            # Nothing was sent while the probe ran, and the healthy server is not re-opened.
            assert srv.chat_hits == 1
            assert result(b, deadline=time.monotonic() + 5.0).attempts == 1  # rides the probe
            assert b.health().state == "closed"
        finally:
            b.close()


def test_failover_to_second_endpoint() -> None:
    down = f"http://127.0.0.1:{closed_port()}/v1"
    with FaultServer() as srv:
        b = backend(down, srv.base_url, max_retries=0, breaker_threshold=1)
        try:
            first = result(b)
            second = result(b)
            health = b.health()
        finally:
            b.close()
        assert srv.chat_hits == 2
    assert first.endpoint == srv.base_url and first.attempts == 2  # refused, then the other
    assert second.endpoint == srv.base_url and second.attempts == 1  # breaker keeps it away
    assert health.healthy and health.state == "closed"
    assert f"{down} open" in health.detail


def test_failover_on_5xx() -> None:
    with FaultServer(default=Behaviour("status", status=500)) as bad, FaultServer() as good:
        b = backend(bad.base_url, good.base_url, max_retries=1)
        try:
            replies = [result(b) for _ in range(2)]
        finally:
            b.close()
    assert all(r.endpoint == good.base_url for r in replies)
    assert bad.chat_hits >= 1


def test_load_spreads_over_healthy_endpoints() -> None:
    with FaultServer() as a, FaultServer() as c:
        b = backend(a.base_url, c.base_url)
        try:
            endpoints = [result(b).endpoint for _ in range(4)]
            assert sorted(endpoints) == sorted([a.base_url, c.base_url] * 2)
            a.set(default=Behaviour("sleep", delay_s=0.3))
            c.set(default=Behaviour("sleep", delay_s=0.3))
            futures = [b.submit(make_request(seed=i)) for i in range(4)]
            concurrent = [f.result(timeout=10).endpoint for f in futures]
        finally:
            b.close()
    assert concurrent.count(a.base_url) == 2 and concurrent.count(c.base_url) == 2


def test_submit_returns_at_once() -> None:
    with FaultServer(default=Behaviour("sleep", delay_s=0.5)) as srv:
        b = backend(srv.base_url, request_timeout_s=2.0)
        try:
            t0 = time.monotonic()
            future = b.submit(make_request())
            assert time.monotonic() - t0 < 0.05
            assert not future.done()
            reply = future.result(timeout=5)
        finally:
            b.close()
    assert reply.latency_s >= 0.5


def test_closed_backend_fails_typed_and_close_is_idempotent() -> None:
    with FaultServer() as srv:
        b = backend(srv.base_url)
        b.close()
        b.close()
        with pytest.raises(BackendUnavailableError, match="closed"):
            b.submit(make_request()).result(timeout=5)
        assert not b.health().healthy
        assert srv.chat_hits == 0


def test_api_key_sent_but_never_logged_or_shown(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-4c1d-very-secret"
    monkeypatch.setenv("STEP_PERCEPTION_TEST_KEY", secret)
    caplog.set_level(logging.DEBUG)
    with FaultServer(script=[Behaviour("status", status=500)]) as srv:
        b = backend(srv.base_url, api_key_env="STEP_PERCEPTION_TEST_KEY")
        try:
            reply = result(b)
            srv.set(default=Behaviour("status", status=401, message="bad key"))
            err = failure(b)
            shown = [repr(b), repr(b.config), str(b.config), str(b.health()), str(err), repr(reply)]
        finally:
            b.close()
    assert all(h["authorization"] == f"Bearer {secret}" for h in srv.state.headers)
    assert caplog.records, "the SDK's debug logging should have been captured"
    assert secret not in caplog.text
    assert not any(secret in s for s in shown)


def test_api_key_from_file_and_placeholder(tmp_path: Any) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("file-key-123\n")
    with FaultServer() as srv:
        for cfg, expected in (({"api_key_file": str(key_file)}, "file-key-123"), ({}, NO_API_KEY)):
            b = backend(srv.base_url, **cfg)
            try:
                result(b)
            finally:
                b.close()
            assert srv.state.headers[-1]["authorization"] == f"Bearer {expected}"
    with pytest.raises(ConfigError, match="cannot read api_key_file"):
        backend(srv.base_url, api_key_file=str(tmp_path / "missing"))


def test_config_validation_and_url_handling() -> None:
    with pytest.raises(ConfigError):
        OpenAIBackendConfig(endpoints=())
    with pytest.raises(ConfigError):
        OpenAIBackendConfig(endpoints=("ftp://x",))
    with pytest.raises(ConfigError):
        OpenAIBackendConfig(endpoints=("http://a:1/v1",), request_timeout_s=0)
    with pytest.raises(ConfigError):
        OpenAIBackendConfig(endpoints=("http://a:1/v1",), reasoning_effort="maximal")
    # One endpoint rule (core.endpoints.parse_endpoints), as for the node's parameter: the same
    # URL twice is one endpoint, order kept.
    twice = OpenAIBackendConfig(endpoints=("http://a:1/v1", "http://b:1", "http://a:1/v1/"))
    assert twice.endpoints == ("http://a:1/v1", "http://b:1/v1")
    assert twice.endpoints == parse_endpoints("http://a:1/v1, http://b:1, http://a:1/v1/")
    for url in (
        "http://user:sk-secret@host/v1",
        "http://host/v1?api_key=sk-secret",
        "http://h:0x/v1",
    ):
        with pytest.raises(ConfigError) as info:
            OpenAIBackendConfig(endpoints=(url,))
        assert "sk-secret" not in str(info.value)
    cfg = OpenAIBackendConfig(endpoints=("http://gpu-a:8000", "https://gpu-b/v1/"))
    assert cfg.endpoints == ("http://gpu-a:8000/v1", "https://gpu-b/v1")
    assert redact_url("http://user:pw@host:8000/v1?key=abc") == "http://host:8000/v1"


def test_concurrent_submits_from_many_threads() -> None:
    with FaultServer() as srv:
        b = backend(srv.base_url, max_workers=3)
        replies: list[Any] = []
        lock = threading.Lock()

        def worker(i: int) -> None:
            r = b.submit(make_request(seed=i)).result(timeout=10)
            with lock:
                replies.append(r)

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(timeout=15)
        finally:
            b.close()
        assert srv.chat_hits == 6
    assert len(replies) == 6 and all(r.attempts == 1 for r in replies)
