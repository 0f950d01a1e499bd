"""OpenAI-compatible HTTP backend: the production path to a GPU workstation.

Talks to vLLM, SGLang, llama.cpp's server, StepFun's API or ``transformers
serve`` through the ``openai`` SDK, with what a robot's loop needs around it:

* ``submit`` returns a future at once; requests run on the backend's own pool;
* an explicit short timeout per attempt (the SDK's 600 s default is wrong
  here) and the SDK's own retries off: this module retries, with exponential
  backoff and jitter, on connect errors, timeouts, broken responses, 5xx and
  429 (honouring ``Retry-After``), and never past ``request.deadline``;
* one circuit breaker per endpoint (closed -> open after ``breaker_threshold``
  consecutive failures -> a cheap ``GET {base}/models`` probe after
  ``breaker_cooldown_s`` -> half-open trial -> closed);
* several endpoints: failover when one is down, least-in-flight with a
  round-robin tie break when several are up;
* the API key comes from an environment variable or a file, is sent as the
  bearer header and appears in no repr, log line or error message.
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import openai

from step_perception.core.config import ENV_VAR_NAME, REASONING_EFFORTS
from step_perception.core.endpoints import normalise_endpoint, redact_url
from step_perception.core.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigError,
)
from step_perception.core.parsing import strip_reasoning
from step_perception.core.types import BackendHealth, ModelReply, ModelRequest, TokenUsage

__all__ = [
    "NO_API_KEY",
    "BreakerState",
    "OpenAIBackend",
    "OpenAIBackendConfig",
]

_log = logging.getLogger(__name__)

#: Key sent when none is configured (local servers need none, the SDK wants one).
NO_API_KEY = "EMPTY"

#: An attempt with less time than this left before the deadline is not sent [s].
_MIN_ATTEMPT_S = 0.01


class BreakerState(str, Enum):
    """Circuit-breaker state of one endpoint."""

    CLOSED = "closed"  # traffic flows
    OPEN = "open"  # failing: no traffic until the cooldown passed and a probe succeeded
    HALF_OPEN = "half_open"  # probe passed: one trial request decides


@dataclass(frozen=True)
class OpenAIBackendConfig:
    """Settings of the OpenAI-compatible backend, validated on creation.

    ``endpoints`` are OpenAI base URLs (``http://host:8000/v1``); a URL with no
    path gets ``/v1``. ``model`` is sent when a request names none.
    ``reasoning_effort`` overrides the request's ``sampling.reasoning_effort``
    when set. The key is read from the environment variable named by
    ``api_key_env``, else from ``api_key_file``; with neither, ``"EMPTY"``.
    """

    endpoints: tuple[str, ...]
    model: str = ""
    api_key_env: str = ""
    api_key_file: str = ""
    request_timeout_s: float = 10.0  # [s] per attempt (capped by the request deadline)
    connect_timeout_s: float = 2.0  # [s]
    max_retries: int = 2  # retries after the first attempt (connect-error failovers are free)
    backoff_base_s: float = 0.25  # [s] first backoff; doubles per retry
    backoff_cap_s: float = 4.0  # [s]
    retry_after_cap_s: float = 10.0  # [s] a longer Retry-After is not waited for
    breaker_threshold: int = 3  # consecutive failures that open an endpoint's breaker
    breaker_cooldown_s: float = 5.0  # [s] before the health probe may close it again
    probe_timeout_s: float = 1.0  # [s] for GET {base}/models
    reasoning_effort: str | None = None
    max_workers: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.endpoints, str):
            raise ConfigError("endpoints must be a tuple of URLs, not one string")
        if not self.endpoints:
            raise ConfigError("at least one endpoint URL is required")
        urls = tuple(normalise_endpoint(u) for u in self.endpoints)
        if len(set(urls)) != len(urls):
            raise ConfigError(f"duplicate endpoints: {[redact_url(u) for u in urls]}")
        object.__setattr__(self, "endpoints", urls)
        for name in (
            "request_timeout_s",
            "connect_timeout_s",
            "backoff_cap_s",
            "breaker_cooldown_s",
            "probe_timeout_s",
        ):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive number, got {value!r}")
        for name in ("backoff_base_s", "retry_after_cap_s"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a number >= 0, got {value!r}")
        if not isinstance(self.max_retries, int) or self.max_retries < 0:
            raise ConfigError(f"max_retries must be an int >= 0, got {self.max_retries!r}")
        if not isinstance(self.breaker_threshold, int) or self.breaker_threshold < 1:
            raise ConfigError(
                f"breaker_threshold must be an int >= 1, got {self.breaker_threshold!r}"
            )
        if not isinstance(self.max_workers, int) or self.max_workers < 1:
            raise ConfigError(f"max_workers must be an int >= 1, got {self.max_workers!r}")
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise ConfigError(
                f"reasoning_effort must be one of {REASONING_EFFORTS} or None, "
                f"got {self.reasoning_effort!r}"
            )
        if self.api_key_env and not ENV_VAR_NAME.fullmatch(self.api_key_env):
            raise ConfigError(
                f"api_key_env must name an environment variable, got {self.api_key_env!r}"
            )


def _read_api_key(config: OpenAIBackendConfig) -> str:
    if config.api_key_env:
        value = os.environ.get(config.api_key_env, "").strip()
        if value:
            return value
    if config.api_key_file:
        path = Path(config.api_key_file).expanduser()
        try:
            value = path.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise ConfigError(f"cannot read api_key_file {str(path)!r}: {err.strerror}") from err
        if not value:
            raise ConfigError(f"api_key_file {str(path)!r} is empty")
        return value
    if config.api_key_env:
        _log.warning("environment variable %s is not set; sending no API key", config.api_key_env)
    return NO_API_KEY


class _Kind(str, Enum):
    """How one attempt failed (decides retry, breaker and the error type)."""

    CONNECT = "connect"  # request provably not delivered
    TIMEOUT = "timeout"
    BROKEN = "broken"  # connection broke mid-response (truncated body, closed after headers)
    SERVER = "server"  # 5xx
    OVERLOADED = "overloaded"  # 503
    RATE_LIMITED = "rate_limited"  # 429
    CLIENT = "client"  # other 4xx
    GARBAGE = "garbage"  # 2xx with an unusable body


_RETRYABLE = {
    _Kind.CONNECT,
    _Kind.TIMEOUT,
    _Kind.BROKEN,
    _Kind.SERVER,
    _Kind.OVERLOADED,
    _Kind.RATE_LIMITED,
}
_BREAKER_FAILURES = {_Kind.CONNECT, _Kind.TIMEOUT, _Kind.BROKEN, _Kind.SERVER, _Kind.OVERLOADED}


class _AttemptError(Exception):
    def __init__(self, kind: _Kind, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_connect_failure(err: BaseException) -> bool:
    """Tell whether the cause chain shows the connection was never established."""
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            return False
        # httpx and httpx2 (the SDK's transport) name these alike.
        if isinstance(seen, ConnectionRefusedError) or type(seen).__name__ in (
            "ConnectError",
            "ConnectTimeout",
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _classify(err: Exception) -> _AttemptError:
    if isinstance(err, openai.APITimeoutError):
        if _is_connect_failure(err):
            return _AttemptError(_Kind.CONNECT, "connect timed out")
        return _AttemptError(_Kind.TIMEOUT, "timed out waiting for the answer")
    if isinstance(err, openai.APIConnectionError):
        if _is_connect_failure(err):
            return _AttemptError(_Kind.CONNECT, "connection refused or unreachable")
        cause = err.__cause__ or err.__context__
        detail = type(cause).__name__ if cause is not None else "connection error"
        return _AttemptError(_Kind.BROKEN, f"connection broke during the answer ({detail})")
    if isinstance(err, openai.APIStatusError):
        status = err.status_code
        retry_after = _parse_retry_after(err.response.headers.get("retry-after"))
        text = re.sub(r"^Error code: \d+ - ", "", str(err.message))
        message = f"HTTP {status}: {_short(text)}"
        if status == 429:
            return _AttemptError(_Kind.RATE_LIMITED, message, retry_after)
        if status == 503:
            return _AttemptError(_Kind.OVERLOADED, message, retry_after)
        if status >= 500:
            return _AttemptError(_Kind.SERVER, message, retry_after)
        return _AttemptError(_Kind.CLIENT, message)
    # Invalid JSON in a 2xx answer, or a body the SDK could not make sense of.
    return _AttemptError(
        _Kind.GARBAGE, f"unusable answer ({type(err).__name__}: {_short(str(err))})"
    )


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Endpoint:
    """One server: its client and breaker state (guarded by the backend's lock)."""

    def __init__(self, index: int, url: str, client: openai.OpenAI) -> None:
        self.index = index
        self.url = url
        self.display = redact_url(url)
        self.client = client
        self.state = BreakerState.CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.in_flight = 0
        self.probing = False
        self.send_reasoning_effort = True
        self.send_thinking_budget = True


def _error_type(kind: _Kind) -> type[BackendError]:
    if kind is _Kind.TIMEOUT:
        return BackendTimeoutError
    if kind in (_Kind.CONNECT, _Kind.OVERLOADED):
        return BackendUnavailableError
    return BackendError


class OpenAIBackend:
    """Backend over one or more OpenAI-compatible servers (see the module doc)."""

    def __init__(self, config: OpenAIBackendConfig) -> None:
        self._config = config
        api_key = _read_api_key(config)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._rr = 0
        timeout = openai.Timeout(config.request_timeout_s, connect=config.connect_timeout_s)
        self._endpoints = [
            _Endpoint(
                i,
                url,
                openai.OpenAI(
                    base_url=url,
                    api_key=api_key,
                    timeout=timeout,
                    max_retries=0,  # we retry ourselves, with breaker and deadline
                ),
            )
            for i, url in enumerate(config.endpoints)
        ]
        self._pool = ThreadPoolExecutor(
            max_workers=config.max_workers, thread_name_prefix="openai-backend"
        )

    def __repr__(self) -> str:
        return f"OpenAIBackend(endpoints={[e.display for e in self._endpoints]})"

    @property
    def name(self) -> str:
        """``openai`` (the endpoint that answered is in each reply)."""
        return "openai"

    @property
    def config(self) -> OpenAIBackendConfig:
        """The validated settings (holds no secret: only where the key comes from)."""
        return self._config

    def submit(self, request: ModelRequest) -> Future[ModelReply]:
        """Queue ``request`` on the backend's pool; returns at once."""
        started = time.monotonic()
        if self._closed.is_set():
            failed: Future[ModelReply] = Future()
            failed.set_exception(BackendUnavailableError("openai backend is closed"))
            return failed
        try:
            return self._pool.submit(self._run, request, started)
        except RuntimeError:  # pool shut down between the check and submit
            failed = Future()
            failed.set_exception(BackendUnavailableError("openai backend is closed"))
            return failed

    def health(self) -> BackendHealth:
        """Breaker states of all endpoints (no network)."""
        with self._lock:
            states = [e.state for e in self._endpoints]
            detail = self._describe_endpoints()
        if self._closed.is_set():
            return BackendHealth(False, "closed_backend", "backend closed")
        if BreakerState.CLOSED in states:
            state = BreakerState.CLOSED
        elif BreakerState.HALF_OPEN in states:
            state = BreakerState.HALF_OPEN
        else:
            state = BreakerState.OPEN
        return BackendHealth(state is not BreakerState.OPEN, state.value, detail)

    def close(self) -> None:
        """Stop the pool (queued requests fail with BackendUnavailableError) and close clients."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._pool.shutdown(wait=False)
        for e in self._endpoints:
            e.client.close()

    # -- one request ---------------------------------------------------------

    def _run(self, request: ModelRequest, started: float) -> ModelReply:
        cfg = self._config
        attempts = 0
        retries = 0
        free_failovers = len(self._endpoints) - 1
        last: _AttemptError | None = None
        last_ep: _Endpoint | None = None
        while True:
            if self._closed.is_set():
                raise BackendUnavailableError("openai backend is closed")
            now = time.monotonic()
            if request.deadline is not None and now >= request.deadline:
                detail = f"; last error: {last.message}" if last else ""
                raise BackendTimeoutError(
                    f"request deadline passed before attempt {attempts + 1}{detail}"
                )
            ep = self._acquire(avoid=last_ep)
            if ep is None:
                raise BackendUnavailableError(self._unavailable_message(last))
            if (
                request.deadline is not None
                and time.monotonic() + _MIN_ATTEMPT_S > request.deadline
            ):
                # The health probe ate the time left: an attempt now could only time out and
                # would be counted against a server that did nothing wrong.
                with self._lock:
                    ep.in_flight -= 1
                raise BackendTimeoutError(
                    f"request deadline passed before attempt {attempts + 1} could be sent"
                )
            attempts += 1
            try:
                text, usage = self._attempt(ep, request)
            except _AttemptError as err:
                self._release(ep, err.kind)
                last, last_ep = err, ep
                where = f"{ep.display} attempt {attempts}"
                if err.kind not in _RETRYABLE:
                    raise _error_type(err.kind)(f"{where}: {err.message}") from None
                if err.kind is _Kind.CONNECT and free_failovers > 0:
                    free_failovers -= 1
                elif retries < cfg.max_retries:
                    retries += 1
                else:
                    raise _error_type(err.kind)(
                        f"{where}: {err.message} (gave up after {attempts} attempts)"
                    ) from None
                delay = self._retry_delay(err, retries, ep)
                if delay is None:
                    raise _error_type(err.kind)(
                        f"{where}: {err.message} (server asked to wait {err.retry_after:.1f} s, "
                        f"more than retry_after_cap_s={cfg.retry_after_cap_s})"
                    ) from None
                if request.deadline is not None and time.monotonic() + delay >= request.deadline:
                    raise _error_type(err.kind)(
                        f"{where}: {err.message} (not retried: the request deadline is nearer "
                        f"than the {delay:.2f} s backoff)"
                    ) from None
                _log.info("%s: %s; retrying in %.2f s", where, err.message, delay)
                if delay > 0 and self._closed.wait(delay):
                    raise BackendUnavailableError("openai backend is closed") from None
                continue
            self._release(ep, None)
            return ModelReply(
                text=text,
                latency_s=time.monotonic() - started,
                endpoint=ep.display,
                usage=usage,
                attempts=attempts,
            )

    def _retry_delay(self, err: _AttemptError, retry: int, ep: _Endpoint) -> float | None:
        """Seconds to wait before the next attempt; None = the server asks too long."""
        cfg = self._config
        if self._has_other_ready(ep):
            return 0.0  # fail over at once; the wait was that endpoint's business
        if err.retry_after is not None:
            if err.retry_after > cfg.retry_after_cap_s:
                return None
            return float(err.retry_after)
        ceiling = min(cfg.backoff_cap_s, cfg.backoff_base_s * 2.0 ** max(0, retry - 1))
        return ceiling / 2 + random.uniform(0.0, ceiling / 2)  # "equal jitter"

    def _attempt(self, ep: _Endpoint, request: ModelRequest) -> tuple[str, TokenUsage | None]:
        cfg = self._config
        timeout_s = cfg.request_timeout_s
        if request.deadline is not None:
            timeout_s = max(0.001, min(timeout_s, request.deadline - time.monotonic()))
        timeout = openai.Timeout(timeout_s, connect=min(cfg.connect_timeout_s, timeout_s))
        messages: list[dict[str, Any]] = []
        if request.system:
            messages.append({"role": "system", "content": request.system})
        messages.append(
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": request.image.data_url()}},
                    {"type": "text", "text": request.user},
                ],
            }
        )
        extra_body: dict[str, Any] = {}
        effort = cfg.reasoning_effort or request.sampling.reasoning_effort
        sent_effort = bool(effort) and ep.send_reasoning_effort
        if sent_effort:
            extra_body["reasoning_effort"] = effort
        budget = request.sampling.thinking_token_budget
        sent_budget = budget is not None and ep.send_thinking_budget
        if sent_budget:
            # vLLM's name (0.32): it closes <think> after this many reasoning tokens.
            extra_body["thinking_token_budget"] = budget
        kwargs: dict[str, Any] = {}
        if request.use_response_format and request.json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "perception_answer", "schema": dict(request.json_schema)},
            }
        try:
            resp = ep.client.chat.completions.create(
                model=request.model or cfg.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=request.sampling.max_tokens,
                temperature=request.sampling.temperature,
                timeout=timeout,
                extra_body=extra_body or None,
                **kwargs,
            )
        except openai.BadRequestError as err:
            text = str(err.message).lower()
            # Checked first: vLLM's refusal of the budget also mentions "reasoning".
            if sent_budget and "thinking_token_budget" in text:
                with self._lock:
                    ep.send_thinking_budget = False
                _log.warning("%s rejects thinking_token_budget; no longer sending it", ep.display)
                return self._attempt(ep, request)
            if sent_effort and "reasoning" in text:
                # A server that rejects the field: stop sending it there, retry at once.
                with self._lock:
                    ep.send_reasoning_effort = False
                _log.warning("%s rejects reasoning_effort; no longer sending it", ep.display)
                return self._attempt(ep, request)
            raise _classify(err) from None
        except Exception as err:
            raise _classify(err) from None
        return _extract(resp)

    # -- endpoint choice and breakers ---------------------------------------

    def _ready(self, e: _Endpoint) -> bool:
        return e.state is BreakerState.CLOSED or (
            e.state is BreakerState.HALF_OPEN and e.in_flight == 0 and not e.probing
        )

    def _has_other_ready(self, ep: _Endpoint) -> bool:
        with self._lock:
            return any(e is not ep and self._ready(e) for e in self._endpoints)

    def _acquire(self, avoid: _Endpoint | None) -> _Endpoint | None:
        """Pick an endpoint and count it in flight; probe due ones when none is ready."""
        n = len(self._endpoints)
        for _ in range(n + 1):
            with self._lock:
                ready = [e for e in self._endpoints if self._ready(e)]
                if avoid is not None and len(ready) > 1:
                    ready = [e for e in ready if e is not avoid]
                if ready:
                    start = self._rr
                    self._rr += 1
                    best = min(ready, key=lambda e: (e.in_flight, (e.index - start) % n))
                    best.in_flight += 1
                    return best
                now = time.monotonic()
                due = [
                    e
                    for e in self._endpoints
                    if e.state is BreakerState.OPEN
                    and not e.probing
                    and now - e.opened_at >= self._config.breaker_cooldown_s
                ]
                if not due:
                    return None
                probe = due[0]
                probe.probing = True
            ok = self._probe(probe)
            with self._lock:
                probe.probing = False
                if ok:
                    probe.state = BreakerState.HALF_OPEN
                else:
                    probe.opened_at = time.monotonic()
            if ok:
                _log.info("%s: health probe passed; half-open", probe.display)
            else:
                _log.info("%s: health probe failed; stays open", probe.display)
        return None

    def _probe(self, ep: _Endpoint) -> bool:
        try:
            ep.client.with_options(timeout=self._config.probe_timeout_s).models.list()
        except Exception:
            return False
        return True

    def _release(self, ep: _Endpoint, failure: _Kind | None) -> None:
        with self._lock:
            ep.in_flight -= 1
            if failure is None:
                if ep.state is not BreakerState.CLOSED:
                    _log.info("%s: breaker closed", ep.display)
                ep.state = BreakerState.CLOSED
                ep.failures = 0
                return
            if failure not in _BREAKER_FAILURES:
                if ep.state is BreakerState.HALF_OPEN:  # it answered: the server is up
                    ep.state = BreakerState.CLOSED
                    ep.failures = 0
                return
            ep.failures += 1
            if ep.state is BreakerState.HALF_OPEN or (
                ep.state is BreakerState.CLOSED and ep.failures >= self._config.breaker_threshold
            ):
                ep.state = BreakerState.OPEN
                ep.opened_at = time.monotonic()
                _log.warning(
                    "%s: breaker open after %d consecutive failures (%s)",
                    ep.display,
                    ep.failures,
                    failure.value,
                )

    def _unavailable_message(self, last: _AttemptError | None) -> str:
        with self._lock:
            endpoints = self._describe_endpoints()
        detail = f"; last error: {last.message}" if last else ""
        return f"no endpoint can take the request: {endpoints}{detail}"

    def _describe_endpoints(self) -> str:
        """One line on every endpoint's breaker (call with the lock held)."""
        now = time.monotonic()
        parts = []
        for e in self._endpoints:
            if e.state is BreakerState.OPEN:
                wait = max(0.0, self._config.breaker_cooldown_s - (now - e.opened_at))
                parts.append(f"{e.display} open (probe in {wait:.1f} s)")
            else:
                parts.append(
                    f"{e.display} {e.state.value} ({e.failures} failures, {e.in_flight} in flight)"
                )
        return "; ".join(parts)


def _extract(resp: object) -> tuple[str, TokenUsage | None]:
    """Text and usage of a chat completion, or a GARBAGE attempt error."""
    choices = getattr(resp, "choices", None)
    if not isinstance(choices, list) or not choices:
        raise _AttemptError(_Kind.GARBAGE, "answer has no choices")
    message = getattr(choices[0], "message", None)
    content = getattr(message, "content", None)
    if not isinstance(content, str):
        finish = getattr(choices[0], "finish_reason", None)
        raise _AttemptError(
            _Kind.GARBAGE,
            f"answer has no text content (finish_reason={finish!r}; only reasoning?)",
        )
    # reasoning_content (vLLM/SGLang's separate field) is ignored on purpose.
    usage = None
    raw_usage = getattr(resp, "usage", None)
    prompt = getattr(raw_usage, "prompt_tokens", None)
    completion = getattr(raw_usage, "completion_tokens", None)
    if isinstance(prompt, int) and isinstance(completion, int):
        usage = TokenUsage(prompt_tokens=prompt, completion_tokens=completion)
    return strip_reasoning(content), usage
