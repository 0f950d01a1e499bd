"""One-shot queries: which frame answers, how long to wait, and the reply's text.

A query (the ``query`` service) is answered from the newest frame. ``FrameMailbox``
records every received frame (its payload and monotonic receipt time) and lets
a query thread wait for the next one:

* when the latest received frame is known to be the newest one (every frame
  reaches the process: no content filter holds frames back) and was received
  within ``max_frame_age_s``, it is used at once;
* otherwise the query waits for the next frame to arrive, until its deadline.

While a query waits, ``waiting`` is true and the node opens the content filter
for it (see ``core.frames.content_filter_bounds``). The monotonic clock is
injected; nothing here reads the ROS clock.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from step_perception.core.errors import ConfigError
from step_perception.core.types import PerceptionResult, Task

__all__ = ["FrameMailbox", "QueryReply", "format_stamp", "query_reply", "query_timeout"]

T = TypeVar("T")


class _Waiter(Generic[T]):
    """A query waiting for the next frame."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.payload: T | None = None


class FrameMailbox(Generic[T]):
    """The latest received frame, and the queries waiting for the next one."""

    def __init__(self, monotonic: Callable[[], float]) -> None:
        self._monotonic = monotonic
        self._lock = threading.Lock()
        self._latest: tuple[T, float] | None = None  # (payload, monotonic receipt)
        self._latest_stamp_ns: int | None = None
        self._waiters: list[_Waiter[T]] = []

    def put(self, stamp_ns: int, payload: T) -> None:
        """Record a received frame and hand it to every waiting query."""
        with self._lock:
            self._latest = (payload, self._monotonic())
            self._latest_stamp_ns = stamp_ns
            waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.payload = payload
            w.event.set()

    @property
    def latest_stamp_ns(self) -> int | None:
        """Stamp of the latest received frame."""
        with self._lock:
            return self._latest_stamp_ns

    @property
    def waiting(self) -> bool:
        """Whether a query waits for the next frame."""
        with self._lock:
            return bool(self._waiters)

    def fresh(self, max_age_s: float) -> T | None:
        """Return the latest frame if it was received within ``max_age_s``, else ``None``."""
        with self._lock:
            latest = self._latest
        if latest is None or self._monotonic() - latest[1] > max_age_s:
            return None
        return latest[0]

    def next_frame(self, deadline: float, on_change: Callable[[], None]) -> T | None:
        """Wait until the next frame arrives or ``deadline`` (monotonic) passes.

        ``on_change`` runs once the query is registered and again when it leaves,
        so the caller can open and close the content filter for it.
        """
        waiter: _Waiter[T] = _Waiter()
        with self._lock:
            self._waiters.append(waiter)
        on_change()
        waiter.event.wait(max(0.0, deadline - self._monotonic()))
        with self._lock:
            if waiter in self._waiters:
                self._waiters.remove(waiter)
        on_change()
        return waiter.payload

    def frame_for_query(
        self,
        deadline: float,
        *,
        max_age_s: float,
        latest_is_newest: bool,
        on_change: Callable[[], None],
    ) -> T | None:
        """Return the frame a query answers from (see the module doc); ``None`` on timeout.

        ``latest_is_newest`` is false when a content filter holds frames back: the
        latest one received is then not the newest, and the next to arrive is.
        """
        if latest_is_newest:
            frame = self.fresh(max_age_s)
            if frame is not None:
                return frame
        return self.next_frame(deadline, on_change)

    def release_waiters(self) -> None:
        """Wake every waiting query with no frame (deactivate, cleanup)."""
        with self._lock:
            waiters, self._waiters = self._waiters, []
        for w in waiters:
            w.event.set()


def query_timeout(requested_s: float, default_s: float) -> float:
    """Return the query time budget: ``requested_s`` when positive, else ``default_s``.

    ``ConfigError`` when it is not finite.
    """
    timeout = float(requested_s) if requested_s > 0 else float(default_s)
    if not math.isfinite(timeout):
        raise ConfigError("timeout_s must be finite")
    return timeout


def format_stamp(stamp_ns: int) -> str:
    """``sec.nanosec`` of a stamp, as ROS prints a header stamp."""
    sec, nanosec = divmod(stamp_ns, 1_000_000_000)
    return f"{sec}.{nanosec:09d}"


@dataclass(frozen=True)
class QueryReply:
    """The text fields of a successful query reply."""

    answer: str  # the command's text for the command task, else the summary
    message: str  # what was found in which frame (and a command rejection)


def query_reply(result: PerceptionResult, stamp_ns: int) -> QueryReply:
    """Compose the reply's text for ``result`` of the frame stamped ``stamp_ns``."""
    if result.task is Task.COMMAND and result.command is not None:
        answer = result.command.text()
    else:
        answer = result.summary
    message = f"{len(result.detections)} object(s) in frame {format_stamp(stamp_ns)}"
    if result.command_rejection:
        message += f"; command rejected: {result.command_rejection}"
    return QueryReply(answer=answer, message=message)
