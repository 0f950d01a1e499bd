"""Record/replay backend: recorded answers for deterministic CI.

``record`` mode wraps a live backend and appends each answer, keyed by
``ModelRequest.cache_key()`` (model, profile, prompt, SHA-256 of the image
bytes actually sent), to a JSON-lines cassette (one object per line, flushed
after each, safe from several threads). ``replay`` mode answers from the
cassette alone (no network, no model); a request it does not hold fails with
``CassetteMissError`` naming the key, never with a made-up answer.

Replayed ``ModelReply.text`` is byte-identical to the recorded one, so the
parsed results are identical too.
"""

from __future__ import annotations

import contextlib
import json
import threading
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from step_perception.core.backend import Backend
from step_perception.core.config import CassetteMode
from step_perception.core.errors import (
    BackendError,
    BackendUnavailableError,
    CassetteMissError,
    ConfigError,
)
from step_perception.core.types import BackendHealth, ModelReply, ModelRequest, TokenUsage

__all__ = ["CASSETTE_VERSION", "CassetteBackend", "CassetteEntry", "load_cassette"]

#: Format version written in every cassette line.
CASSETTE_VERSION = 1


@dataclass(frozen=True)
class CassetteEntry:
    """One recorded answer (one cassette line)."""

    key: str
    model: str
    profile: str
    image_sha256: str
    text: str
    latency_s: float
    endpoint: str
    usage: TokenUsage | None
    attempts: int

    def to_json(self) -> str:
        """One JSON line (ASCII-escaped, so any text round-trips exactly)."""
        usage = None
        if self.usage is not None:
            usage = {
                "prompt_tokens": self.usage.prompt_tokens,
                "completion_tokens": self.usage.completion_tokens,
            }
        record = {
            "v": CASSETTE_VERSION,
            "key": self.key,
            "model": self.model,
            "profile": self.profile,
            "image_sha256": self.image_sha256,
            "text": self.text,
            "latency_s": self.latency_s,
            "endpoint": self.endpoint,
            "usage": usage,
            "attempts": self.attempts,
        }
        return json.dumps(record, ensure_ascii=True, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> CassetteEntry:
        """Parse one cassette line; ValueError/KeyError/TypeError when malformed."""
        raw: Any = json.loads(line)
        if not isinstance(raw, dict):
            raise TypeError("a cassette line must be a JSON object")
        if not isinstance(raw["text"], str) or not isinstance(raw["key"], str):
            raise TypeError("key and text must be strings")
        usage_raw = raw.get("usage")
        usage = None
        if usage_raw is not None:
            usage = TokenUsage(
                prompt_tokens=int(usage_raw["prompt_tokens"]),
                completion_tokens=int(usage_raw["completion_tokens"]),
            )
        return cls(
            key=raw["key"],
            model=str(raw.get("model", "")),
            profile=str(raw.get("profile", "")),
            image_sha256=str(raw.get("image_sha256", "")),
            text=raw["text"],
            latency_s=float(raw.get("latency_s", 0.0)),
            endpoint=str(raw.get("endpoint", "")),
            usage=usage,
            attempts=int(raw.get("attempts", 1)),
        )


def load_cassette(path: Path) -> dict[str, CassetteEntry]:
    """All answers of a cassette by key (a later line for a key wins)."""
    entries: dict[str, CassetteEntry] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise ConfigError(f"cannot read cassette {str(path)!r}: {err.strerror}") from err
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = CassetteEntry.from_json(line)
        except (ValueError, KeyError, TypeError) as err:
            raise BackendError(f"cassette {str(path)!r} line {number} is malformed: {err}") from err
        entries[entry.key] = entry
    return entries


class CassetteBackend:
    """Record answers of a live backend to a cassette, or replay them.

    Build with ``CassetteBackend.recording(path, live)`` or
    ``CassetteBackend.replaying(path)``. In record mode ``close`` also closes
    the wrapped backend.
    """

    def __init__(self, path: Path, mode: CassetteMode, live: Backend | None = None) -> None:
        self._path = Path(path)
        self._mode = CassetteMode(mode)
        if self._mode is CassetteMode.OFF:
            raise ConfigError("a cassette backend records or replays: mode off has no cassette")
        self._lock = threading.Lock()
        self._closed = False
        self._live = live
        self._file: IO[str] | None = None
        self._entries: dict[str, CassetteEntry] = {}
        self._recorded = 0
        self._misses = 0
        if self._mode is CassetteMode.RECORD:
            if live is None:
                raise ConfigError("record mode needs a live backend to wrap")
            try:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._file = self._path.open("a", encoding="utf-8")
            except OSError as err:
                raise ConfigError(f"cannot open cassette {str(self._path)!r}: {err}") from err
        else:
            if live is not None:
                raise ConfigError("replay mode takes no live backend")
            self._entries = load_cassette(self._path)

    @classmethod
    def recording(cls, path: Path, live: Backend) -> CassetteBackend:
        """Wrap ``live`` and append each of its answers to ``path``."""
        return cls(path, CassetteMode.RECORD, live)

    @classmethod
    def replaying(cls, path: Path) -> CassetteBackend:
        """Answer from the cassette at ``path`` only."""
        return cls(path, CassetteMode.REPLAY)

    def __repr__(self) -> str:
        return f"CassetteBackend(path={str(self._path)!r}, mode={self._mode.value!r})"

    @property
    def name(self) -> str:
        """``record`` or ``replay``."""
        return self._mode.value

    @property
    def mode(self) -> CassetteMode:
        """Record or replay."""
        return self._mode

    @property
    def path(self) -> Path:
        """The cassette file."""
        return self._path

    def __len__(self) -> int:
        """Answers held (replay) or written so far (record)."""
        return len(self._entries) if self._mode is CassetteMode.REPLAY else self._recorded

    def submit(self, request: ModelRequest) -> Future[ModelReply]:
        """Replay: a completed future at once. Record: the live answer, once stored."""
        out: Future[ModelReply] = Future()
        if self._closed:
            out.set_exception(BackendUnavailableError(f"{self.name} backend is closed"))
            return out
        if self._mode is CassetteMode.REPLAY:
            self._replay(request, out)
            return out
        assert self._live is not None
        live_future = self._live.submit(request)
        live_future.add_done_callback(lambda done: self._store(request, done, out))
        return out

    def health(self) -> BackendHealth:
        """Replay: always healthy while open. Record: the live backend's health."""
        if self._closed:
            return BackendHealth(False, "closed", f"cassette {self._path}")
        if self._mode is CassetteMode.REPLAY:
            detail = f"{len(self._entries)} answers from {self._path}, {self._misses} misses"
            return BackendHealth(True, "replay", detail)
        assert self._live is not None
        live = self._live.health()
        detail = f"{self._recorded} recorded to {self._path}; {live.detail}"
        return BackendHealth(live.healthy, f"record/{live.state}", detail)

    def close(self) -> None:
        """Close the cassette file (and the live backend in record mode). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._file is not None:
                self._file.close()
                self._file = None
        if self._live is not None:
            self._live.close()

    def _replay(self, request: ModelRequest, out: Future[ModelReply]) -> None:
        key = request.cache_key()
        entry = self._entries.get(key)
        if entry is None:
            with self._lock:
                self._misses += 1
            out.set_exception(CassetteMissError(key))
            return
        out.set_result(
            ModelReply(
                text=entry.text,
                latency_s=entry.latency_s,  # as recorded: replay keeps the timing story
                endpoint=f"replay:{entry.endpoint}",
                usage=entry.usage,
                attempts=entry.attempts,
            )
        )

    def _store(
        self, request: ModelRequest, done: Future[ModelReply], out: Future[ModelReply]
    ) -> None:
        # Runs as a done-callback: ``out`` may have been cancelled by its caller meanwhile,
        # and an exception raised here would only be logged by concurrent.futures.
        with contextlib.suppress(InvalidStateError):
            self._store_into(request, done, out)

    def _store_into(
        self, request: ModelRequest, done: Future[ModelReply], out: Future[ModelReply]
    ) -> None:
        try:
            reply = done.result()
        except BaseException as err:  # the live backend's typed error, passed on as is
            out.set_exception(err)
            return
        entry = CassetteEntry(
            key=request.cache_key(),
            model=request.model,
            profile=request.profile,
            image_sha256=request.image.sha256,
            text=reply.text,
            latency_s=reply.latency_s,
            endpoint=reply.endpoint,
            usage=reply.usage,
            attempts=reply.attempts,
        )
        line = entry.to_json() + "\n"
        try:
            with self._lock:
                if self._file is None:
                    raise BackendUnavailableError("record backend closed before the answer came")
                self._file.write(line)
                self._file.flush()
                self._recorded += 1
        except OSError as err:
            out.set_exception(BackendError(f"cannot write cassette {str(self._path)!r}: {err}"))
            return
        except BackendError as err:
            out.set_exception(err)
            return
        out.set_result(reply)
