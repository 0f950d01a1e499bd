"""Results leave in stamp order: a reply older than one already published is dropped.

With ``max_inflight`` > 1 several requests run at once, and a slower request for an
older frame can finish after a newer one. Publishing it then would move a consumer's
view of the world backwards in time, so the node asks ``StampOrder.admit`` before
publishing and drops (and counts) what comes too late.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

__all__ = ["OrderCounters", "StampOrder"]


@dataclass(frozen=True)
class OrderCounters:
    """Counts since the last ``reset``."""

    published: int = 0
    dropped_out_of_order: int = 0  # finished after a newer frame's result was published


class StampOrder:
    """Admits results whose stamp is newer than every result admitted before (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ns: int | None = None
        self._published = 0
        self._dropped = 0

    def admit(self, stamp_ns: int) -> bool:
        """Say whether to publish a result: ``False`` when it is late (then it is counted).

        An equal stamp is late too: that frame's result (or a retry's) is already out.
        """
        with self._lock:
            if self._last_ns is not None and stamp_ns <= self._last_ns:
                self._dropped += 1
                return False
            self._last_ns = stamp_ns
            self._published += 1
            return True

    def reset(self) -> None:
        """Forget the last stamp (deactivate, clock jumped back); counters are kept."""
        with self._lock:
            self._last_ns = None

    def counters(self) -> OrderCounters:
        """Return the counts so far."""
        with self._lock:
            return OrderCounters(published=self._published, dropped_out_of_order=self._dropped)
