"""Pairing colour frames with aligned depth by stamp, and noticing a clock that jumps back.

``DepthSync`` keeps the last few depth frames and, for a colour frame, picks the
depth frame whose stamp is nearest to the colour stamp, within
``tolerance_ns`` (25 ms by default: less than one frame period at 30 fps, so a
depth frame is never paired with the neighbouring colour frame). When no depth
frame is close enough yet, the caller may ``hold`` the colour frame: a later
``add_depth`` that matches it releases it, and ``expired`` releases it once
``wait_s`` of monotonic time has passed (it then goes out without depth).
Only one colour frame is held: the gate admits at most the rate-limited
frames, and a newer held frame replaces the older.

Relation to ``message_filters``: its ``ExactTime`` policy pairs messages only
when the stamps are equal, and drops the rest. Cameras that stamp colour and
depth from one exposure (RealSense aligned depth, most simulators) meet that,
but drivers that stamp each stream on its own, and bag replays that restamp,
do not. This pairing is the ``ApproximateTime`` idea reduced to two streams
with a hard bound: an exact match is found (distance 0), a fixed offset or
jitter below the tolerance is accepted, anything further is no pair. Unlike
``message_filters`` it never delays the colour stream for depth beyond
``wait_s``, and the colour frame is chosen by the frame gate, not by the
synchroniser.

``ClockJump`` tells when the ROS clock went back by more than a threshold
(a bag restarted in a loop, ``/clock`` reset), so the caller can reset its
gate instead of dropping every frame as "older".

All times are injected: stamps are integer nanoseconds from the headers, the
hold deadline is on the ``monotonic`` clock passed in. Thread-safe: the query
thread calls ``match`` while the executor thread adds depth.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from step_perception.core.errors import ConfigError

__all__ = ["ClockJump", "DepthSync", "Held"]

C = TypeVar("C")  # colour payload
D = TypeVar("D")  # depth payload

#: [ns] default pairing tolerance (see the module docstring).
DEFAULT_TOLERANCE_NS = 25_000_000


@dataclass(frozen=True)
class Held(Generic[C]):
    """A colour frame waiting for its aligned depth."""

    stamp_ns: int
    payload: C
    generation: int  # the frame gate's generation it was admitted under
    deadline: float  # on the injected monotonic clock [s]


class DepthSync(Generic[C, D]):
    """The last ``keep`` depth frames and at most one held colour frame (see the module doc)."""

    def __init__(
        self,
        monotonic: Callable[[], float],
        *,
        keep: int = 4,
        tolerance_ns: int = DEFAULT_TOLERANCE_NS,
        wait_s: float = 0.5,
    ) -> None:
        if keep < 1:
            raise ConfigError(f"depth keep: must be >= 1, got {keep}")
        if tolerance_ns < 0:
            raise ConfigError(f"depth tolerance: must be >= 0 ns, got {tolerance_ns}")
        if not wait_s >= 0:
            raise ConfigError(f"depth wait: must be >= 0 s, got {wait_s}")
        self._monotonic = monotonic
        self._tolerance_ns = tolerance_ns
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._depths: deque[tuple[int, D]] = deque(maxlen=keep)
        self._held: Held[C] | None = None

    @property
    def held(self) -> Held[C] | None:
        """The colour frame waiting for depth, if any."""
        with self._lock:
            return self._held

    def match(self, stamp_ns: int) -> D | None:
        """Return the kept depth frame nearest to ``stamp_ns`` within the tolerance, or ``None``."""
        with self._lock:
            best: D | None = None
            best_dt = self._tolerance_ns + 1
            for depth_ns, depth in self._depths:
                dt = abs(depth_ns - stamp_ns)
                if dt < best_dt:
                    best, best_dt = depth, dt
            return best

    def hold(self, stamp_ns: int, payload: C, generation: int) -> None:
        """Hold a colour frame for its depth until ``wait_s`` from now (replaces a held one)."""
        deadline = self._monotonic() + self._wait_s
        with self._lock:
            self._held = Held(stamp_ns, payload, generation, deadline)

    def add_depth(self, stamp_ns: int, depth: D) -> Held[C] | None:
        """Keep a depth frame; release and return the held frame when this depth matches it."""
        with self._lock:
            self._depths.append((stamp_ns, depth))
            held = self._held
            if held is None or abs(stamp_ns - held.stamp_ns) > self._tolerance_ns:
                return None
            self._held = None
            return held

    def expired(self) -> Held[C] | None:
        """Release and return the held frame once its wait is over (it goes without depth)."""
        now = self._monotonic()
        with self._lock:
            held = self._held
            if held is None or now < held.deadline:
                return None
            self._held = None
            return held

    def drop_held(self) -> None:
        """Forget the held frame (the gate was reset)."""
        with self._lock:
            self._held = None

    def clear(self) -> None:
        """Forget the held frame and every kept depth frame (unsubscribed)."""
        with self._lock:
            self._held = None
            self._depths.clear()


class ClockJump:
    """Tells when a clock reading is more than ``threshold_ns`` before the previous one."""

    def __init__(self, threshold_ns: int = 1_000_000_000) -> None:
        if threshold_ns < 0:
            raise ConfigError(f"clock jump threshold: must be >= 0 ns, got {threshold_ns}")
        self._threshold_ns = threshold_ns
        self._last_ns: int | None = None

    def jumped_back(self, now_ns: int) -> bool:
        """Record ``now_ns``; ``True`` when it is further back than the threshold."""
        last, self._last_ns = self._last_ns, now_ns
        return last is not None and now_ns < last - self._threshold_ns
