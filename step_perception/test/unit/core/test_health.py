"""core.health: the diagnostics level and its transitions (OK -> WARN -> ERROR -> OK)."""

from __future__ import annotations

import pytest
from step_perception.core.health import HealthVerdict, Level, ResultWatch, assess, stall_after_s

STALL = stall_after_s(rate_hz=2.0, request_timeout_s=1.0)  # max(1.5, 2.0) = 2.0 s


def _level(watch: ResultWatch, now: float, *, failures: int = 0, unhealthy: str | None = None,
           running: bool = True) -> Level:  # fmt: skip
    return assess(
        watch, now, STALL, running=running, new_failures=failures, backend_unhealthy=unhealthy
    ).level


def _stream(start: float, end: float, fps: float = 10.0, watch: ResultWatch | None = None,
            results_every: float | None = None) -> ResultWatch:  # fmt: skip
    """Frames from ``start`` to ``end``; a result every ``results_every`` seconds if given."""
    w = watch or ResultWatch()
    n = round((end - start) * fps)
    next_result = start + results_every if results_every else None
    for i in range(n + 1):
        t = start + i / fps
        w = w.frame(t, STALL)
        if next_result is not None and t >= next_result:
            w = w.result(t)
            next_result += results_every  # type: ignore[operator]
    return w


def test_stall_bound_is_the_larger_of_three_periods_and_two_timeouts() -> None:
    assert stall_after_s(1.0, 10.0) == 20.0  # the node's defaults: two request timeouts
    assert stall_after_s(0.1, 1.0) == pytest.approx(30.0)  # slow rate: three periods
    assert stall_after_s(2.0, 1.0) == 2.0
    with pytest.raises(ValueError, match="must be > 0"):
        stall_after_s(0.0, 1.0)


def test_ok_while_results_keep_coming() -> None:
    w = _stream(0.0, 30.0, results_every=0.5)
    assert _level(w, 30.0) is Level.OK
    assert (
        assess(w, 30.0, STALL, running=True, new_failures=0, backend_unhealthy=None).problems == ()
    )


def test_isolated_failures_warn_and_clear_at_the_next_report() -> None:
    w = _stream(0.0, 10.0, results_every=0.5)
    verdict = assess(w, 10.0, STALL, running=True, new_failures=2)
    assert verdict.level is Level.WARN
    assert verdict.problems == ("2 frame(s) failed since the last report",)
    assert _level(w, 10.0, failures=0) is Level.OK


def test_frames_without_results_go_from_warn_to_error_at_the_bound() -> None:
    w = _stream(0.0, 5.0, results_every=0.5)  # last result at 5.0
    w = _stream(5.1, 5.0 + STALL - 0.1, watch=w)  # frames keep arriving, nothing answered
    assert _level(w, 5.0 + STALL - 0.1, failures=3) is Level.WARN
    w = _stream(5.0 + STALL - 0.1, 5.0 + STALL + 0.5, watch=w)
    verdict = assess(w, 5.0 + STALL + 0.5, STALL, running=True, new_failures=3,
)  # fmt: skip
    assert verdict.level is Level.ERROR
    assert verdict.problems[0] == "no result for 2.5 s while frames arrive"


def test_error_clears_with_the_first_result() -> None:
    w = _stream(0.0, 10.0)  # never answered
    assert _level(w, 10.0) is Level.ERROR
    w = w.result(10.05)
    assert _level(w, 10.1) is Level.OK


def test_a_fresh_stream_gets_the_whole_bound() -> None:
    w = _stream(0.0, STALL - 0.2)  # first frame at 0, nothing answered yet
    assert _level(w, STALL - 0.2) is Level.OK
    assert _level(_stream(STALL - 0.2, STALL + 0.2, watch=w), STALL + 0.2) is Level.ERROR


def test_no_frames_is_no_error() -> None:
    """A camera that stopped is not a model failure: no result is owed without frames."""
    w = _stream(0.0, 5.0, results_every=0.5)
    assert _level(w, 5.0 + STALL + 10.0) is Level.OK
    # When it comes back after the gap, the bound starts again at its first frame.
    w = _stream(20.0, 21.0, watch=w)
    assert _level(w, 21.0) is Level.OK


def test_not_running_owes_nothing() -> None:
    w = _stream(0.0, 10.0)
    assert _level(w, 10.0, running=False) is Level.OK
    # Activated again: the stream is forgotten, the bound starts at the next frame.
    w = _stream(10.1, 11.0, watch=w.reset())
    assert _level(w, 11.0) is Level.OK


def test_unhealthy_backend_is_an_error_at_once_and_clears_with_it() -> None:
    w = _stream(0.0, 1.0, results_every=0.2)
    verdict = assess(w, 1.0, STALL, running=True, new_failures=0, backend_unhealthy="open: 500")
    assert verdict == HealthVerdict(Level.ERROR, ("backend unhealthy (open: 500)",))
    assert _level(w, 1.0) is Level.OK


def test_a_filtered_stream_whose_requests_time_out_reaches_error() -> None:
    """Behind a content filter the only frames are those the node admits, one per request.

    Every request times out after 2.5 s (longer than the 2 s bound): the node sees one frame,
    silence while it is in flight, the end without a result, the next frame. The silence is
    the node's own; the stream must neither restart nor look stopped.
    """
    w = _stream(0.0, 2.0, results_every=0.5)  # last result at 2.0
    t = 2.0
    for _ in range(3):
        w = w.frame(t + 0.1, STALL)  # the filter lets one frame through; a request is sent
        in_flight = t + 0.1 + STALL + 0.2  # still waiting for the backend, no frame for 2.2 s
        assert _level_in_flight(w, in_flight) is Level.ERROR
        assert _level(w, in_flight) is Level.OK  # what the node said before: no frames, no debt
        t += 2.6
        w = w.unanswered(t)  # timed out: the filter opens again
        assert _level(w, t) is Level.ERROR
    w = w.result(t + 0.2)
    assert _level(w, t + 0.3) is Level.OK


def test_an_unanswered_request_starts_the_debt_of_a_fresh_stream() -> None:
    w = ResultWatch().unanswered(1.0)
    assert w.owed_since_s == 1.0 and w.last_frame_s == 1.0
    assert _level(w, 1.0 + STALL - 0.1) is Level.OK
    assert _level_in_flight(w, 1.0 + STALL) is Level.ERROR


def test_a_camera_that_stopped_owes_nothing_once_no_request_is_in_flight() -> None:
    w = _stream(0.0, 5.0, results_every=0.5).frame(5.1, STALL)  # the last frame is sent
    assert _level_in_flight(w, 5.1 + STALL + 1.0) is Level.ERROR  # still not answered
    w = w.result(5.1 + STALL + 1.2)
    assert _level(w, 5.1 + STALL + 10.0) is Level.OK


def _level_in_flight(watch: ResultWatch, now: float) -> Level:
    return assess(watch, now, STALL, running=True, new_failures=0, in_flight=True).level
