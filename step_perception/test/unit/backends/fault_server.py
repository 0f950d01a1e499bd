"""A real OpenAI-shaped HTTP server on 127.0.0.1 that misbehaves on purpose.

Each hit of ``POST .../chat/completions`` plays the next behaviour of a script
(then the default one); ``GET .../models`` answers the health probe. The
server counts hits, keeps the times and headers and bodies it received, so
tests can assert retry counts, Retry-After spacing and what went over the wire.

``outage(kind, seconds)`` makes the whole server (chat and probe route alike)
misbehave for a while and then come back, for recovery tests: ``5xx`` (HTTP
500), ``hang`` (hold every request unanswered; when the server returns it
drops them, like a restarted process), ``down`` (the port refuses connections,
open keep-alive connections are reset), ``flap`` (down and up in turns of
``period_s``, ending up), ``slow`` (answers take ``slow_s``; requests still
pending when it returns are answered then) and ``reset`` (the connection is
reset after the request was read). ``returned_at`` is the monotonic time the
server was back.
"""

from __future__ import annotations

import contextlib
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

__all__ = ["OUTAGES", "Behaviour", "FaultServer", "closed_port", "completion_body"]

#: The kinds of ``FaultServer.outage``.
OUTAGES = ("5xx", "hang", "down", "flap", "slow", "reset")


def completion_body(
    content: str | None, *, reasoning: str | None = None, reasoning_field: str = "reasoning_content"
) -> dict[str, Any]:
    """A valid chat.completion answer with usage (reasoning under ``reasoning_field``)."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message[reasoning_field] = reasoning
    return {
        "id": "chatcmpl-fault",
        "object": "chat.completion",
        "created": 0,
        "model": "fault-model",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


@dataclass(frozen=True)
class Behaviour:
    """What the server does for one chat request.

    kind: ``ok``, ``status`` (answer ``status`` with a JSON error), ``sleep``
    (sleep ``delay_s`` then answer ok), ``truncated`` (Content-Length larger than
    the body, then close), ``invalid_json``, ``close_after_headers``, ``big``
    (a valid answer whose text is ``size`` bytes, with a Content-Length, or
    chunked when ``chunked``), ``echo_key`` (answer ``status`` with an error
    message quoting the request's Authorization header, as careless servers do).
    """

    kind: str = "ok"
    status: int = 200
    delay_s: float = 0.0
    retry_after: str | None = None
    content: str | None = '{"objects": []}'
    reasoning: str | None = None
    # Where the reasoning goes: vLLM >= 0.1x says ``reasoning``, SGLang and older vLLM
    # ``reasoning_content``.
    reasoning_field: str = "reasoning_content"
    message: str = ""  # error message of a ``status`` answer
    size: int = 0  # bytes of a ``big`` answer's text
    chunked: bool = False  # ``big`` without a Content-Length


OK = Behaviour()


@dataclass
class _State:
    script: list[Behaviour]
    default: Behaviour
    models_status: int = 200
    models_delay_s: float = 0.0  # a slow health probe
    chat_hits: int = 0
    models_hits: int = 0
    hit_times: list[float] = field(default_factory=list)
    models_times: list[float] = field(default_factory=list)  # every probe that arrived
    chat_times: list[float] = field(default_factory=list)  # every chat request that arrived
    headers: list[dict[str, str]] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    outage: str = ""  # the timed fault playing now ("" = none)
    outage_until: float = 0.0  # monotonic end of a timed fault
    down: bool = False  # the listener is closed (down / flap)
    slow_s: float = 3.0
    big_bytes_sent: int = 0  # of ``big`` answers, as far as the client took them

    def fault(self) -> str:
        with self.lock:
            if self.down:
                return "down"
            return self.outage if time.monotonic() < self.outage_until else ""


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass

    def _send_json(self, status: int, payload: object, extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), as a crashing server does."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _outage(self) -> bool:
        """Play the timed fault, if one is on; True when the request is done with."""
        state = self.server.state
        fault = state.fault()
        if not fault:
            return False
        arrived = time.monotonic()
        if fault == "5xx":
            self._send_json(500, {"error": {"message": "outage", "type": "server_error"}})
        elif fault in ("down", "reset"):
            self._reset()
        elif fault == "hang":
            while state.fault() == "hang":
                time.sleep(0.01)
            self._reset()  # the returned server has forgotten what it held
        elif fault == "slow":
            while state.fault() == "slow" and time.monotonic() < arrived + state.slow_s:
                time.sleep(0.01)
            return False  # then answered as usual
        return True

    def do_GET(self) -> None:
        state = self.server.state
        if self.path.rstrip("/").endswith("/models"):
            with state.lock:
                state.models_times.append(time.monotonic())
            if self._outage():
                return
            with state.lock:
                state.models_hits += 1
                status = state.models_status
                delay = state.models_delay_s
            time.sleep(delay)
            if status == 200:
                model = {"id": "fault-model", "object": "model", "created": 0, "owned_by": "test"}
                self._send_json(200, {"object": "list", "data": [model]})
            else:
                self._send_json(
                    status, {"error": {"message": "probe refused", "type": "server_error"}}
                )
            return
        self._send_json(404, {"error": {"message": "not found"}})

    def do_POST(self) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(length)
        if not self.path.rstrip("/").endswith("/chat/completions"):
            self._send_json(404, {"error": {"message": "not found"}})
            return
        with state.lock:
            state.chat_times.append(time.monotonic())
        if self._outage():
            return
        with state.lock:
            state.chat_hits += 1
            state.hit_times.append(time.monotonic())
            state.headers.append({k.lower(): v for k, v in self.headers.items()})
            state.bodies.append(json.loads(raw or b"{}"))
            b = state.script.pop(0) if state.script else state.default
        self._play(b)

    def _play(self, b: Behaviour) -> None:
        if b.kind == "ok":
            self._send_json(
                200,
                completion_body(
                    b.content, reasoning=b.reasoning, reasoning_field=b.reasoning_field
                ),
            )
        elif b.kind == "sleep":
            time.sleep(b.delay_s)
            with contextlib.suppress(OSError):  # the client may have given up first
                self._send_json(200, completion_body(b.content))
        elif b.kind == "status":
            extra = {"Retry-After": b.retry_after} if b.retry_after is not None else None
            message = b.message or f"fault {b.status}"
            self._send_json(b.status, {"error": {"message": message, "type": "error"}}, extra)
        elif b.kind == "truncated":
            data = json.dumps(completion_body(b.content)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif b.kind == "invalid_json":
            data = b'{"id": "x", "choices": [ this is not json'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif b.kind == "big":
            self._play_big(b)
        elif b.kind == "echo_key":
            auth = self.headers.get("Authorization", "")
            message = f"invalid credentials: {auth}"
            self._send_json(b.status, {"error": {"message": message, "type": "auth_error"}})
        elif b.kind == "close_after_headers":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "512")
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        else:
            raise ValueError(f"unknown behaviour {b.kind}")

    def _play_big(self, b: Behaviour) -> None:
        head, tail = json.dumps(completion_body("@")).encode().split(b"@")
        total = len(head) + b.size + len(tail)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        if b.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.send_header("Content-Length", str(total))
        self.end_headers()
        chunk = b"x" * 65536
        parts = [head]
        parts += [chunk] * (b.size // len(chunk)) + [b"x" * (b.size % len(chunk))]
        parts.append(tail)
        try:
            for part in parts:
                data = b"%x\r\n%s\r\n" % (len(part), part) if b.chunked else part
                self.wfile.write(data)
                with self.server.state.lock:
                    self.server.state.big_bytes_sent += len(part)
            if b.chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client stopped reading and closed: what the limit should do
            self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, state: _State, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state
        if tls is not None:
            self.socket = tls.wrap_socket(self.socket, server_side=True)

    def handle_error(self, request: object, client_address: object) -> None:
        """Stay quiet: clients that gave up (broken pipes) are what these tests provoke."""


class FaultServer:
    """Context manager running the misbehaving server in a thread."""

    def __init__(
        self,
        script: Iterable[Behaviour] = (),
        default: Behaviour = OK,
        *,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.state = _State(script=list(script), default=default)
        self._tls = tls
        self._server = _Server(self.state, tls=tls)
        self._port = int(self._server.server_address[1])
        self._thread = self._serve_thread()
        self._controller: threading.Thread | None = None
        self.returned_at: float | None = None  # when the last outage ended (monotonic)

    def _serve_thread(self) -> threading.Thread:
        return threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def base_url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        return f"{scheme}://127.0.0.1:{self._port}/v1"

    def outage(self, kind: str, seconds: float, *, period_s: float = 1.0) -> None:
        """Misbehave as ``kind`` (see the module doc) for ``seconds``, then come back.

        Returns at once; ``wait_returned`` blocks until the server is back.
        """
        if kind not in OUTAGES:
            raise ValueError(f"unknown outage {kind!r}")
        self.returned_at = None
        if kind in ("down", "flap"):
            self._controller = threading.Thread(
                target=self._downtime, args=(kind, seconds, period_s), daemon=True
            )
            self._controller.start()
            return
        with self.state.lock:
            self.state.outage = kind
            self.state.outage_until = time.monotonic() + seconds
            self.returned_at = self.state.outage_until

    def wait_returned(self, timeout: float = 60.0) -> float:
        """Block until the outage is over; the monotonic time the server came back."""
        if self._controller is not None:
            self._controller.join(timeout)
        assert self.returned_at is not None
        time.sleep(max(0.0, self.returned_at - time.monotonic()))
        return self.returned_at

    def _downtime(self, kind: str, seconds: float, period_s: float) -> None:
        end = time.monotonic() + seconds
        while True:
            self._go_down()
            time.sleep(period_s if kind == "flap" else seconds)
            self._come_up()
            if kind == "down" or time.monotonic() + period_s >= end:
                break
            time.sleep(period_s)
        self.returned_at = time.monotonic()

    def _go_down(self) -> None:
        with self.state.lock:
            self.state.down = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _come_up(self) -> None:
        # The same port: the client keeps its URL.
        self._server = _Server(self.state, self._port, self._tls)
        self._thread = self._serve_thread()
        self._thread.start()
        with self.state.lock:
            self.state.down = False

    def set(self, script: Iterable[Behaviour] = (), default: Behaviour | None = None) -> None:
        """Replace the script (and optionally the default behaviour)."""
        with self.state.lock:
            self.state.script = list(script)
            if default is not None:
                self.state.default = default

    @property
    def chat_hits(self) -> int:
        with self.state.lock:
            return self.state.chat_hits

    @property
    def models_hits(self) -> int:
        with self.state.lock:
            return self.state.models_hits

    def __enter__(self) -> FaultServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._controller is not None:
            self._controller.join(timeout=30)
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (connections are refused)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
