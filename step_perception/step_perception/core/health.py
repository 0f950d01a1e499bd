"""The level of the node's ``/diagnostics`` report: OK, WARN or ERROR, from what it counted.

A planner watching ``/diagnostics`` acts on the level:

* ``ERROR`` while the backend is unhealthy (breaker open, endpoint down), or when frames keep
  arriving but no result has been published for ``stall_after_s(rate_hz, request_timeout_s)``
  = ``max(3 / rate_hz, 2 x request_timeout_s)``: three missed periods, and never before two
  request timeouts could have passed. A request in flight, or one that ended without a
  result, counts as frames arriving: behind a DDS content filter no other frame reaches the
  node while every slot is busy, and that silence is the node's, not the camera's.
* ``WARN`` for isolated failures (some frames failed since the last report, results still
  coming), and for states that are not failures but mean no output (no images, inactive).
* ``OK`` otherwise.

Pure: times are the caller's monotonic seconds, no clock is read here. ``ResultWatch`` is a
frozen value the node replaces on every frame and result; ``assess`` turns it into a level.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

__all__ = ["HealthVerdict", "Level", "ResultWatch", "assess", "stall_after_s"]


class Level(enum.IntEnum):
    """Report levels, numbered as ``diagnostic_msgs/DiagnosticStatus`` numbers them."""

    OK = 0
    WARN = 1
    ERROR = 2


def stall_after_s(rate_hz: float, request_timeout_s: float) -> float:
    """Seconds without a result, while frames arrive, after which the level is ERROR."""
    if rate_hz <= 0 or request_timeout_s <= 0:
        raise ValueError(
            f"rate_hz and request_timeout_s must be > 0: {rate_hz}, {request_timeout_s}"
        )
    return max(3.0 / rate_hz, 2.0 * request_timeout_s)


@dataclass(frozen=True)
class ResultWatch:
    """When frames and results were last seen, and since when results are owed.

    ``owed_since_s`` is the start of the current run of arriving frames (the first frame after
    a ``reset`` or after a gap longer than the stall bound) or the last result, whichever is
    later: a camera that starts, or starts again, is given the full bound to be answered.
    """

    last_frame_s: float | None = None
    last_result_s: float | None = None
    owed_since_s: float | None = None

    def frame(self, now_s: float, stall_s: float) -> ResultWatch:
        """Return the watch after a frame arrived at ``now_s``."""
        restarted = self.last_frame_s is None or now_s - self.last_frame_s > stall_s
        return self._seen(now_s, restarted=restarted)

    def unanswered(self, now_s: float) -> ResultWatch:
        """Return the watch after a request ended at ``now_s`` without a result.

        Its frame was owed a result and still is: the stream goes on (``last_frame_s`` moves)
        but is never restarted, however long the request took. Without this, a content-filtered
        stream whose every request times out would look like a camera that keeps restarting,
        and never reach ERROR.
        """
        return self._seen(now_s, restarted=False)

    def _seen(self, now_s: float, *, restarted: bool) -> ResultWatch:
        """Return the watch with the stream going on at ``now_s`` (restarted: owed from now)."""
        owed = now_s if restarted or self.owed_since_s is None else self.owed_since_s
        return replace(self, last_frame_s=now_s, owed_since_s=owed)

    def result(self, now_s: float) -> ResultWatch:
        """Return the watch after a result was published at ``now_s``."""
        return replace(self, last_result_s=now_s, owed_since_s=now_s)

    def reset(self) -> ResultWatch:
        """Return the watch with the stream forgotten (the node was activated or enabled again)."""
        return ResultWatch(last_result_s=self.last_result_s)


@dataclass(frozen=True)
class HealthVerdict:
    """The level and the reasons for it (empty when OK)."""

    level: Level
    problems: tuple[str, ...] = ()


def assess(
    watch: ResultWatch,
    now_s: float,
    stall_s: float,
    *,
    running: bool,
    new_failures: int,
    backend_unhealthy: str | None = None,
    in_flight: bool = False,
) -> HealthVerdict:
    """Return the level of one report, with its reasons.

    ``running``: lifecycle active and enabled (otherwise no result is owed);
    ``new_failures``: frames that produced no result since the previous report;
    ``backend_unhealthy``: why the backend says it is unhealthy, None when it is healthy (or
    does not report health); ``in_flight``: a request is waiting for the backend now (its frame
    arrived and is owed a result, whatever arrives meanwhile).
    """
    level, problems = Level.OK, []
    if backend_unhealthy is not None:
        level = Level.ERROR
        problems.append(f"backend unhealthy ({backend_unhealthy})")
    arriving = in_flight or (
        watch.last_frame_s is not None and now_s - watch.last_frame_s <= stall_s
    )
    if running and arriving and watch.owed_since_s is not None:
        waited = now_s - watch.owed_since_s
        if waited >= stall_s:
            level = Level.ERROR
            problems.append(f"no result for {waited:.1f} s while frames arrive")
    if new_failures > 0:
        level = max(level, Level.WARN)
        problems.append(f"{new_failures} frame(s) failed since the last report")
    return HealthVerdict(level, tuple(problems))
