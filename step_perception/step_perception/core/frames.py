"""Frame intake: a newest-frame-wins slot with a stamp-time rate limit.

The gate decides from a frame's stamp alone (integer nanoseconds from its
header), before the payload is converted, so a throttled frame costs almost
nothing. "Now" comes from an injected clock (the node passes the ROS clock, so
``use_sim_time`` and bag replay behave); the wall clock is never read here.

Life of a frame:

* ``offer`` -> ``SEND_NOW``: a request slot was reserved for it; the caller
  sends that payload and calls ``done()`` when the request finishes.
* ``offer`` -> ``QUEUED``: all slots are busy; it waits in the single pending
  slot, replacing an older waiting frame (the replaced one is counted).
* ``done()`` frees a slot and hands back the waiting frame if it is still
  fresh enough (else it is dropped as stale and counted).

``reset()`` forgets frames and slots (deactivate, clock jumped back). A request
admitted before it may still finish later: pass the ``generation`` it was
admitted under to ``done`` so it cannot free a slot of a newer request.

``next_accept_stamp_ns()`` is the smallest stamp the gate will accept next, or
``None`` while every slot is busy: the node pushes it into a DDS content filter
so unwanted frames never reach the process. A frame that slips through while
the filter is being updated is still judged here. ``content_filter_bounds`` is
the whole policy: from the gate's next accepted stamp and what else waits (a
query, a colour frame held for its depth), the bounds of the colour and the
depth filters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Generic, TypeVar

from step_perception.core.errors import ConfigError

__all__ = [
    "Admitted",
    "Decision",
    "FilterBounds",
    "FrameGate",
    "GateCounters",
    "content_filter_bounds",
]

T = TypeVar("T")


class Decision(str, Enum):
    """What the gate did with an offered frame."""

    SEND_NOW = "send_now"  # a slot is reserved: send it, then call done()
    QUEUED = "queued"  # held in the pending slot until a slot frees
    DROPPED_RATE = "dropped_rate"  # earlier than rate_hz allows
    DROPPED_STALE = "dropped_stale"  # older than max_frame_age_s already
    DROPPED_OLDER = "dropped_older"  # not newer than the last accepted frame


@dataclass(frozen=True)
class Admitted(Generic[T]):
    """A frame the caller must now send (a slot is reserved for it)."""

    stamp_ns: int
    payload: T
    generation: int = 0  # the gate's generation when it was admitted (see FrameGate.done)


@dataclass(frozen=True)
class GateCounters:
    """Counts since the gate was created."""

    offered: int = 0
    sent: int = 0  # admitted for sending (SEND_NOW, or handed back by done)
    queued: int = 0
    dropped_rate: int = 0
    dropped_stale: int = 0  # at offer, or while waiting in the pending slot
    dropped_older: int = 0
    replaced: int = 0  # a waiting frame superseded by a newer one

    @property
    def dropped(self) -> int:
        """All frames that will never be sent."""
        return self.dropped_rate + self.dropped_stale + self.dropped_older + self.replaced


class FrameGate(Generic[T]):
    """Newest-frame-wins slot with ``rate_hz``, ``max_inflight`` and ``max_frame_age_s``.

    Thread-safe: ``offer`` runs on the executor thread, ``done`` on a backend
    thread. The rate limit runs on a grid of stamp time: after a frame with
    stamp ``s`` is admitted, the next is due at ``due + 1/rate_hz`` (or
    ``s + 1/rate_hz`` when ``s`` was late by a whole period), so a 30 fps
    camera throttled to 10 Hz yields 10 Hz, not 7.5 Hz, and no window of
    stamp time ``T`` holds more than ``T * rate_hz + 1`` admitted frames.
    """

    def __init__(
        self,
        clock_ns: Callable[[], int],
        *,
        rate_hz: float,
        max_inflight: int = 1,
        max_frame_age_s: float = 2.0,
    ) -> None:
        self._clock_ns = clock_ns
        self._lock = threading.Lock()
        self._interval_ns = 0
        self._max_inflight = 1
        self._max_age_ns = 0
        self.reconfigure(
            rate_hz=rate_hz, max_inflight=max_inflight, max_frame_age_s=max_frame_age_s
        )
        self._inflight = 0
        self._due_ns: int | None = None  # earliest stamp the rate allows next
        self._last_stamp_ns: int | None = None  # newest stamp accepted (sent or queued)
        self._pending: Admitted[T] | None = None
        self._generation = 0
        self._c: dict[str, int] = dict.fromkeys(GateCounters.__dataclass_fields__, 0)

    def reconfigure(
        self,
        *,
        rate_hz: float | None = None,
        max_inflight: int | None = None,
        max_frame_age_s: float | None = None,
    ) -> None:
        """Change limits at run time (``None`` keeps a value). ``ConfigError`` on bad ones."""
        if rate_hz is not None and not rate_hz > 0:
            raise ConfigError(f"rate_hz: must be > 0, got {rate_hz}")
        if max_inflight is not None and max_inflight < 1:
            raise ConfigError(f"max_inflight: must be >= 1, got {max_inflight}")
        if max_frame_age_s is not None and not max_frame_age_s > 0:
            raise ConfigError(f"max_frame_age_s: must be > 0, got {max_frame_age_s}")
        with self._lock:
            if rate_hz is not None:
                self._interval_ns = round(1e9 / rate_hz)
            if max_inflight is not None:
                self._max_inflight = max_inflight
            if max_frame_age_s is not None:
                self._max_age_ns = round(max_frame_age_s * 1e9)

    def offer(self, stamp_ns: int, payload: T) -> Decision:
        """Judge a frame by its stamp; see the module docstring for the outcomes."""
        with self._lock:
            self._c["offered"] += 1
            if self._last_stamp_ns is not None and stamp_ns <= self._last_stamp_ns:
                self._c["dropped_older"] += 1
                return Decision.DROPPED_OLDER
            if self._due_ns is not None and stamp_ns < self._due_ns:
                self._c["dropped_rate"] += 1
                return Decision.DROPPED_RATE
            if self._clock_ns() - stamp_ns > self._max_age_ns:
                self._c["dropped_stale"] += 1
                return Decision.DROPPED_STALE
            self._last_stamp_ns = stamp_ns
            if self._inflight < self._max_inflight:
                # A slot is free, so nothing can be waiting: send this one.
                self._admit(stamp_ns)
                return Decision.SEND_NOW
            if self._pending is not None:
                self._c["replaced"] += 1
            self._pending = Admitted(stamp_ns, payload, self._generation)
            self._c["queued"] += 1
            return Decision.QUEUED

    def done(self, generation: int | None = None) -> Admitted[T] | None:
        """Free the slot of a finished request; return the waiting frame to send next, if any.

        ``generation`` is the one the request was admitted under (``generation``
        right after a ``SEND_NOW``, or ``Admitted.generation``). A request from
        before the last ``reset()`` holds no slot any more: it frees nothing and
        gets nothing. ``None`` trusts the caller (the pre-generation behaviour).
        """
        with self._lock:
            if generation is not None and generation != self._generation:
                return None
            if self._inflight > 0:
                self._inflight -= 1
            return self._take_locked()

    def next_accept_stamp_ns(self) -> int | None:
        """Smallest stamp the gate will accept next; ``None`` while every slot is busy."""
        with self._lock:
            if self._inflight >= self._max_inflight:
                return None
            bound = 0 if self._due_ns is None else self._due_ns
            if self._last_stamp_ns is not None:
                bound = max(bound, self._last_stamp_ns + 1)
            return bound

    @property
    def generation(self) -> int:
        """Counts ``reset()`` calls; a request admitted now belongs to this generation."""
        with self._lock:
            return self._generation

    @property
    def inflight(self) -> int:
        """Requests currently holding a slot."""
        with self._lock:
            return self._inflight

    def counters(self) -> GateCounters:
        """Snapshot of the counters."""
        with self._lock:
            return GateCounters(**self._c)

    def reset(self) -> None:
        """Forget frames and slots (on deactivate, or when the clock jumps back)."""
        with self._lock:
            self._generation += 1
            self._inflight = 0
            self._due_ns = None
            self._last_stamp_ns = None
            self._pending = None

    def _admit(self, stamp_ns: int) -> None:
        self._inflight += 1
        self._c["sent"] += 1
        due = self._due_ns
        if due is not None and stamp_ns < due + self._interval_ns:
            self._due_ns = due + self._interval_ns
        else:
            self._due_ns = stamp_ns + self._interval_ns

    def _take_locked(self) -> Admitted[T] | None:
        pending = self._pending
        if pending is None or self._inflight >= self._max_inflight:
            return None
        self._pending = None
        if self._clock_ns() - pending.stamp_ns > self._max_age_ns:
            self._c["dropped_stale"] += 1
            return None
        if self._due_ns is not None and pending.stamp_ns < self._due_ns:
            # Only possible after a rate change while it waited.
            self._c["dropped_rate"] += 1
            return None
        self._admit(pending.stamp_ns)
        return pending


@dataclass(frozen=True)
class FilterBounds:
    """Smallest stamp each content filter lets through; ``None`` = let nothing through."""

    colour: int | None
    depth: int | None


def content_filter_bounds(
    next_accept_ns: int | None,
    *,
    enabled: bool,
    query_waiting: bool,
    latest_stamp_ns: int | None,
    held_stamp_ns: int | None,
) -> FilterBounds:
    """Where the colour and depth content filters go, from the gate's state.

    ``next_accept_ns`` is ``FrameGate.next_accept_stamp_ns()``. A waiting query
    takes the next colour frame whatever the throttle says; a disabled loop
    takes none; a colour frame held for its depth needs no other colour frame,
    but the depth filter must let that frame's depth through.
    """
    colour: int | None
    if query_waiting:
        colour = 0 if latest_stamp_ns is None else latest_stamp_ns + 1
    elif not enabled:
        colour = None
    else:
        colour = next_accept_ns
    if held_stamp_ns is not None and not query_waiting:
        colour = None
    depth = held_stamp_ns if held_stamp_ns is not None else colour
    return FilterBounds(colour=colour, depth=depth)
