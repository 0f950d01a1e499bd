"""OpenAI-compatible HTTP backend: the production path to a GPU workstation.

Talks to vLLM, SGLang, llama.cpp's server, StepFun's API or ``transformers
serve`` through the ``openai`` SDK, with what a robot's loop needs around it:

* ``submit`` returns a future at once; requests run on the backend's own pool;
* an explicit short timeout per attempt (the SDK's 600 s default is wrong
  here) and the SDK's own retries off: this module retries, with exponential
  backoff and jitter, on connect errors, timeouts, broken responses, 5xx and
  429 (honouring ``Retry-After``), and never past ``request.deadline``;
* one circuit breaker per endpoint, built so that it can never hold recovery
  back by more than one probe interval (docs/reliability.md, "Recovery"):
  closed -> open after ``breaker_threshold`` consecutive failures; while open,
  the endpoint's own prober thread sends ``GET {base}/models`` every
  ``probe_interval_s`` (one probe at a time, ``probe_timeout_s`` each); a
  passed probe makes it half-open and releases at once a request that is
  waiting for an endpoint (requests wait, up to their deadline, instead of
  failing while every endpoint is open); that one trial request closes it
  again or re-opens it. A failing endpoint so gets at most one probe and one
  chat request per ``probe_interval_s``;
* several endpoints: failover when one is down, least-in-flight with a
  round-robin tie break when several are up;
* answers larger than ``max_response_bytes`` are refused while being read
  (``BackendResponseTooLargeError``), never held in memory whole;
* TLS certificates are verified unless ``tls_verify`` is off (a warning says
  so); an ``http://`` endpoint on a non-loopback host logs one warning;
* the API key comes from an environment variable or a file, is sent as the
  bearer header and appears in no repr, log line or error message (text a
  server sends back is scrubbed of it too).
"""

from __future__ import annotations

import email.utils
import logging
import math
import os
import random
import re
import ssl
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import httpx2
import openai

from step_perception.core.config import REASONING_EFFORTS, check_env_var_name
from step_perception.core.endpoints import (
    parse_endpoints,
    plaintext_remote_endpoints,
    redact_url,
)
from step_perception.core.errors import (
    BackendError,
    BackendResponseTooLargeError,
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
#: What the key is replaced with in any text that came back from a server.
_REDACTED = "<redacted>"


class BreakerState(str, Enum):
    """Circuit-breaker state of one endpoint."""

    CLOSED = "closed"  # traffic flows
    OPEN = "open"  # failing: no chat traffic; probed every probe_interval_s
    HALF_OPEN = "half_open"  # a probe passed: one trial request decides


@dataclass(frozen=True)
class OpenAIBackendConfig:
    """Settings of the OpenAI-compatible backend, validated on creation.

    ``endpoints`` are OpenAI base URLs (``http://host:8000/v1``); a URL with no
    path gets ``/v1``. ``model`` is sent when a request names none.
    ``reasoning_effort`` overrides the request's ``sampling.reasoning_effort``
    when set. The key is read from the environment variable named by
    ``api_key_env``, else from ``api_key_file``; with neither, ``"EMPTY"``.
    ``tls_verify`` false turns certificate checks off (logged as a warning);
    a private CA is better given through ``SSL_CERT_FILE``.
    """

    endpoints: tuple[str, ...]
    model: str = ""
    api_key_env: str = ""
    api_key_file: str = ""
    request_timeout_s: float = 10.0  # [s] per attempt (capped by the request deadline)
    connect_timeout_s: float = 2.0  # [s]
    max_retries: int = 2  # retries after the first attempt (connect-error failovers are free)
    backoff_base_s: float = 0.25  # [s] first backoff; doubles per retry
    backoff_cap_s: float = 0.5  # [s] (kept <= probe_interval_s: a retry never waits longer)
    retry_after_cap_s: float = 10.0  # [s] a longer Retry-After is not waited for
    breaker_threshold: int = 3  # consecutive failures that open an endpoint's breaker
    probe_interval_s: float = 0.5  # [s] an open endpoint is probed this often
    probe_timeout_s: float = 1.0  # [s] for GET {base}/models
    reasoning_effort: str | None = None
    max_workers: int = 4
    max_response_bytes: int = 2 * 1024 * 1024  # [bytes] a larger answer is refused
    tls_verify: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.endpoints, str):
            raise ConfigError("endpoints must be a tuple of URLs, not one string")
        if not self.endpoints:
            raise ConfigError("at least one endpoint URL is required")
        # The one endpoint rule (core.endpoints): each URL normalised, duplicates dropped.
        object.__setattr__(self, "endpoints", parse_endpoints(self.endpoints))
        for name in (
            "request_timeout_s",
            "connect_timeout_s",
            "backoff_cap_s",
            "probe_interval_s",
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
        if (
            isinstance(self.max_response_bytes, bool)
            or not isinstance(self.max_response_bytes, int)
            or self.max_response_bytes < 1024
        ):
            raise ConfigError(
                f"max_response_bytes must be an int >= 1024, got {self.max_response_bytes!r}"
            )
        if not isinstance(self.tls_verify, bool):
            raise ConfigError(f"tls_verify must be a bool, got {self.tls_verify!r}")
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise ConfigError(
                f"reasoning_effort must be one of {REASONING_EFFORTS} or None, "
                f"got {self.reasoning_effort!r}"
            )
        check_env_var_name(self.api_key_env)


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
    TOO_LARGE = "too_large"  # over max_response_bytes (or compressed against our ask)
    TLS = "tls"  # certificate not trusted, handshake refused: retrying cannot help


_RETRYABLE = {
    _Kind.CONNECT,
    _Kind.TIMEOUT,
    _Kind.BROKEN,
    _Kind.SERVER,
    _Kind.OVERLOADED,
    _Kind.RATE_LIMITED,
}
_BREAKER_FAILURES = {
    _Kind.CONNECT,
    _Kind.TIMEOUT,
    _Kind.BROKEN,
    _Kind.SERVER,
    _Kind.OVERLOADED,
    _Kind.TLS,
}


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


class _BodyRefusedError(Exception):
    """Raised while reading an answer that is over the size limit (never leaves this module)."""


class _CappedStream(httpx2.SyncByteStream):
    """The response body, counted as it is read; past ``cap`` bytes it raises."""

    def __init__(self, inner: httpx2.SyncByteStream, cap: int) -> None:
        self._inner = inner
        self._cap = cap

    def __iter__(self) -> Any:
        total = 0
        for chunk in self._inner:
            total += len(chunk)
            if total > self._cap:
                raise _BodyRefusedError(f"the answer is over max_response_bytes={self._cap}")
            yield chunk

    def close(self) -> None:
        self._inner.close()

    @property
    def elapsed(self) -> Any:
        """What httpx2's own stream measured (``Response.elapsed`` reads it)."""
        return getattr(self._inner, "elapsed", None)


def _body_limit_hook(cap: int) -> Any:
    """Return an httpx2 response hook that refuses a body over ``cap`` (before or while read)."""

    def hook(response: httpx2.Response) -> None:
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            # A compressed body's size says nothing about what it inflates to.
            raise _BodyRefusedError(f"the answer is {encoding}-compressed (identity was asked for)")
        length = response.headers.get("content-length", "").strip()
        if length.isdigit() and int(length) > cap:
            raise _BodyRefusedError(
                f"the answer is {int(length)} bytes, over max_response_bytes={cap}"
            )
        response.stream = _CappedStream(response.stream, cap)  # type: ignore[arg-type]

    return hook


def _find_cause(err: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: BaseException | None = err
    for _ in range(8):
        if seen is None:
            return None
        if isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


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
    refused = _find_cause(err, _BodyRefusedError)
    if refused is not None:
        return _AttemptError(_Kind.TOO_LARGE, f"answer refused: {refused}")
    tls = _find_cause(err, ssl.SSLError)
    if tls is not None:
        reason = getattr(tls, "verify_message", None) or getattr(tls, "reason", None)
        return _AttemptError(
            _Kind.TLS,
            f"TLS failed ({type(tls).__name__}: {reason or 'handshake'}); check the server's "
            "certificate, SSL_CERT_FILE, or tls_verify",
        )
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
        self.next_probe_at = 0.0  # monotonic time the prober may probe it (while open)
        self.in_flight = 0
        self.probing = False
        self.send_reasoning_effort = True
        self.prober: threading.Thread | None = None
        self.send_thinking_budget = True


def _error_type(kind: _Kind) -> type[BackendError]:
    if kind is _Kind.TIMEOUT:
        return BackendTimeoutError
    if kind is _Kind.TOO_LARGE:
        return BackendResponseTooLargeError
    if kind in (_Kind.CONNECT, _Kind.OVERLOADED):
        return BackendUnavailableError
    return BackendError


class OpenAIBackend:
    """Backend over one or more OpenAI-compatible servers (see the module doc)."""

    def __init__(self, config: OpenAIBackendConfig) -> None:
        self._config = config
        api_key = _read_api_key(config)
        # Text that came back from a server (an error page echoing the Authorization header)
        # is scrubbed of the key before it reaches a message, a log line or diagnostics.
        self._secret = api_key if api_key != NO_API_KEY and len(api_key) >= 4 else ""
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # breaker states, closing
        self._closed = threading.Event()
        self._rr = 0
        timeout = openai.Timeout(config.request_timeout_s, connect=config.connect_timeout_s)
        if not config.tls_verify:
            _log.warning(
                "tls_verify is off: the certificates of %s are not checked, so anyone on the "
                "path can read the images and the API key",
                ", ".join(redact_url(u) for u in config.endpoints),
            )
        plaintext = plaintext_remote_endpoints(config.endpoints)
        if plaintext:
            _log.warning(
                "%s: http:// to a host that is not this machine sends the images and the API "
                "key unencrypted; use https:// (or a tunnel) off a trusted network",
                ", ".join(plaintext),
            )
        self._endpoints = [
            _Endpoint(
                i,
                url,
                openai.OpenAI(
                    base_url=url,
                    api_key=api_key,
                    timeout=timeout,
                    max_retries=0,  # we retry ourselves, with breaker and deadline
                    # Identity: the body limit counts the bytes that will be held.
                    default_headers={"Accept-Encoding": "identity"},
                    http_client=openai.DefaultHttpxClient(
                        timeout=timeout,
                        verify=config.tls_verify,
                        event_hooks={"response": [_body_limit_hook(config.max_response_bytes)]},
                    ),
                ),
            )
            for i, url in enumerate(config.endpoints)
        ]
        self._pool = ThreadPoolExecutor(
            max_workers=config.max_workers, thread_name_prefix="openai-backend"
        )
        for e in self._endpoints:
            e.prober = threading.Thread(
                target=self._probe_loop, args=(e,), name=f"openai-probe-{e.index}", daemon=True
            )
            e.prober.start()

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
        """Stop the pool and the probers (queued requests fail typed) and close the clients."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._changed:
            self._changed.notify_all()  # waiting requests and idle probers return now
        self._pool.shutdown(wait=False)
        for e in self._endpoints:
            if e.prober is not None and e.prober is not threading.current_thread():
                e.prober.join(timeout=self._config.probe_timeout_s + 1.0)
            e.client.close()

    # -- one request ---------------------------------------------------------

    def _run(self, request: ModelRequest, started: float) -> ModelReply:
        cfg = self._config
        attempts = 0
        retries = 0
        free_failovers = len(self._endpoints) - 1
        last: _AttemptError | None = None
        last_ep: _Endpoint | None = None
        # How long a request may wait for a breaker to let it through: its deadline, or one
        # attempt's timeout when it has none.
        wait_until = (
            request.deadline if request.deadline is not None else started + cfg.request_timeout_s
        )
        while True:
            if self._closed.is_set():
                raise BackendUnavailableError("openai backend is closed")
            now = time.monotonic()
            if request.deadline is not None and now >= request.deadline:
                detail = f"; last error: {last.message}" if last else ""
                raise BackendTimeoutError(
                    f"request deadline passed before attempt {attempts + 1}{detail}"
                )
            ep = self._acquire(avoid=last_ep, wait_until=wait_until)
            if ep is None:
                if self._closed.is_set():
                    raise BackendUnavailableError("openai backend is closed")
                raise BackendUnavailableError(self._unavailable_message(last))
            if (
                request.deadline is not None
                and time.monotonic() + _MIN_ATTEMPT_S > request.deadline
            ):
                # The wait for a breaker ate the time left: an attempt now could only time out
                # and would be counted against a server that did nothing wrong.
                self._release(ep, None, attempted=False)
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
            raise self._scrubbed(_classify(err)) from None
        except Exception as err:
            raise self._scrubbed(_classify(err)) from None
        try:
            return _extract(resp)
        except _AttemptError as err:
            raise self._scrubbed(err) from None

    def _scrubbed(self, err: _AttemptError) -> _AttemptError:
        """``err`` with the API key cut out of its message (servers may echo it back)."""
        if self._secret and self._secret in err.message:
            return _AttemptError(
                err.kind, err.message.replace(self._secret, _REDACTED), err.retry_after
            )
        return err

    # -- endpoint choice and breakers ---------------------------------------

    def _ready(self, e: _Endpoint) -> bool:
        return e.state is BreakerState.CLOSED or (
            e.state is BreakerState.HALF_OPEN and e.in_flight == 0
        )

    def _has_other_ready(self, ep: _Endpoint) -> bool:
        with self._lock:
            return any(e is not ep and self._ready(e) for e in self._endpoints)

    def _acquire(self, avoid: _Endpoint | None, wait_until: float) -> _Endpoint | None:
        """Pick an endpoint and count it in flight; wait (to ``wait_until``) while none is ready.

        The wait ends the moment a prober finds an endpoint healthy again (or the trial
        request closes it), so a request rides on the first passed probe.
        """
        n = len(self._endpoints)
        with self._changed:
            while True:
                ready = [e for e in self._endpoints if self._ready(e)]
                if avoid is not None and len(ready) > 1:
                    ready = [e for e in ready if e is not avoid]
                if ready:
                    start = self._rr
                    self._rr += 1
                    best = min(ready, key=lambda e: (e.in_flight, (e.index - start) % n))
                    best.in_flight += 1
                    return best
                left = wait_until - time.monotonic()
                if left <= 0 or self._closed.is_set():
                    return None
                self._changed.wait(left)

    def _probe_loop(self, ep: _Endpoint) -> None:
        """Probe ``ep`` while it is open, one probe per ``probe_interval_s`` (its own thread)."""
        interval = self._config.probe_interval_s
        while True:
            with self._changed:
                while not self._closed.is_set():
                    if ep.state is BreakerState.OPEN:
                        left = ep.next_probe_at - time.monotonic()
                        if left <= 0:
                            break
                        self._changed.wait(left)
                    else:
                        self._changed.wait()
                if self._closed.is_set():
                    return
                ep.probing = True
                started = time.monotonic()
            ok = self._probe(ep)
            with self._changed:
                ep.probing = False
                if ep.state is not BreakerState.OPEN:
                    continue  # a request closed it meanwhile
                if ok:
                    ep.state = BreakerState.HALF_OPEN
                    self._changed.notify_all()  # a waiting request is the trial
                else:
                    # Probe starts stay >= interval apart, also when one took long.
                    ep.next_probe_at = started + interval
            _log.info(
                "%s: health probe %s", ep.display, "passed; half-open" if ok else "failed; open"
            )

    def _probe(self, ep: _Endpoint) -> bool:
        if self._closed.is_set():
            return False
        try:
            ep.client.with_options(timeout=self._config.probe_timeout_s).models.list()
        except Exception:
            return False
        return True

    def _release(self, ep: _Endpoint, failure: _Kind | None, *, attempted: bool = True) -> None:
        with self._changed:
            ep.in_flight -= 1
            self._changed.notify_all()  # a half-open endpoint may be free for the next trial
            if not attempted:
                return
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
                ep.next_probe_at = time.monotonic() + self._config.probe_interval_s
                _log.warning(
                    "%s: breaker open after %d consecutive failures (%s); probing every %.2f s",
                    ep.display,
                    ep.failures,
                    failure.value,
                    self._config.probe_interval_s,
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
                if e.probing:
                    parts.append(f"{e.display} open (probing)")
                else:
                    wait = max(0.0, e.next_probe_at - now)
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
    # The reasoning a server's reasoning parser separated is ignored on purpose, whatever the
    # field is called: vLLM 0.32 puts it in message.reasoning, SGLang (and vLLM before the
    # rename) in message.reasoning_content. Only content is parsed; a server without a reasoning
    # parser leaves <think>...</think> in it, which strip_reasoning removes.
    usage = None
    raw_usage = getattr(resp, "usage", None)
    prompt = getattr(raw_usage, "prompt_tokens", None)
    completion = getattr(raw_usage, "completion_tokens", None)
    if isinstance(prompt, int) and isinstance(completion, int):
        usage = TokenUsage(prompt_tokens=prompt, completion_tokens=completion)
    return strip_reasoning(content), usage
