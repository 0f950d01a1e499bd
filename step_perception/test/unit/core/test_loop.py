"""The node's frame path without ROS (core/loop.py): gate, depth pairing, holds, clock jumps."""

import threading
from concurrent.futures import Future

from manual_clock import Clock
from step_perception.core.frames import Decision, FilterBounds, FrameGate
from step_perception.core.loop import FrameLoop
from step_perception.core.sync import ClockJump, DepthSync

MS = 1_000_000
S = 1_000_000_000


def make(*, use_depth, rate_hz=10.0, max_inflight=1, on_complete=lambda: None):
    ros_now, mono = Clock(100 * S), Clock(50.0)
    gate = FrameGate(ros_now, rate_hz=rate_hz, max_inflight=max_inflight, max_frame_age_s=2.0)
    sync = DepthSync(mono, keep=4, wait_s=0.5)
    loop = FrameLoop(gate, sync, ClockJump(S), use_depth=use_depth, on_complete=on_complete)
    return loop, ros_now, mono


def test_without_depth_an_admitted_frame_goes_at_once():
    loop, _ros, _mono = make(use_depth=False)
    decision, d = loop.offer(100 * S, "c0")
    assert decision is Decision.SEND_NOW
    assert d is not None and (d.payload, d.stamp_ns, d.depth, d.generation) == (
        "c0",
        100 * S,
        None,
        0,
    )
    assert loop.offer(100 * S + 10 * MS, "c1") == (Decision.DROPPED_RATE, None)
    assert loop.depth_for(100 * S) is None


def test_with_depth_a_frame_waits_for_its_depth_then_goes_with_it():
    loop, _ros, _mono = make(use_depth=True)
    decision, d = loop.offer(100 * S, "c0")
    assert decision is Decision.SEND_NOW and d is None  # held: no depth yet
    bounds = loop.filter_bounds(enabled=True, query_waiting=False, latest_stamp_ns=100 * S)
    assert bounds == FilterBounds(colour=None, depth=100 * S)  # only its depth may come
    d = loop.add_depth(100 * S + 3 * MS, "d0")
    assert d is not None and (d.payload, d.depth) == ("c0", "d0")


def test_depth_that_came_first_is_paired_at_once():
    loop, _ros, _mono = make(use_depth=True)
    assert loop.add_depth(100 * S - 2 * MS, "d0") is None  # nothing held
    _, d = loop.offer(100 * S, "c0")
    assert d is not None and d.depth == "d0"


def test_a_held_frame_goes_without_depth_after_the_wait():
    loop, _ros, mono = make(use_depth=True)
    loop.offer(100 * S, "c0")
    assert loop.expired() is None
    mono.now += 0.6
    d = loop.expired()
    assert d is not None and (d.payload, d.depth) == ("c0", None)


def test_done_frees_the_slot_and_routes_the_waiting_frame():
    loop, _ros, _mono = make(use_depth=False, rate_hz=1000.0)
    _, first = loop.offer(100 * S, "c0")
    assert first is not None
    assert loop.offer(100 * S + 5 * MS, "c1") == (Decision.QUEUED, None)
    finished = loop.done(first.generation)
    assert finished.current and finished.next is not None and finished.next.payload == "c1"


def test_a_clock_jump_resets_and_the_old_request_no_longer_counts():
    loop, ros, _mono = make(use_depth=True)
    assert loop.check_clock(ros.now) is False
    loop.offer(100 * S, "c0")  # held for depth, holds the slot
    ros.now = 10 * S  # the bag looped
    assert loop.check_clock(ros.now) is True
    assert loop.expired() is None and loop.add_depth(100 * S, "d0") is None  # hold dropped
    finished = loop.done(0)  # the request from before the reset
    assert not finished.current and finished.next is None
    _, d = loop.offer(10 * S, "c-after")
    assert d is None  # admitted again (held for its depth): the gate was reset
    assert loop.gate.counters().sent == 2


def test_a_late_older_reply_is_dropped_and_counted():
    loop, _ros, _mono = make(use_depth=False, rate_hz=1000.0, max_inflight=2)
    _, a = loop.offer(100 * S, "c0")
    _, b = loop.offer(100 * S + 5 * MS, "c1")
    assert a is not None and b is not None  # two requests in flight
    newer = loop.done(b.generation, b.stamp_ns)  # the newer frame's answer comes first
    assert newer.current and not newer.late
    older = loop.done(a.generation, a.stamp_ns)  # then the older one: never published
    assert older.late and not older.current
    assert loop.order_counters().dropped_out_of_order == 1
    assert loop.order_counters().published == 1
    assert loop.gate.inflight == 0  # both slots freed all the same


def test_after_a_reset_an_older_stamp_is_current_again():
    loop, ros, _mono = make(use_depth=False, rate_hz=1000.0)
    assert loop.check_clock(ros.now) is False
    _, a = loop.offer(100 * S, "c0")
    assert a is not None and loop.done(a.generation, a.stamp_ns).current
    ros.now = 10 * S  # the bag looped: stamps start over
    assert loop.check_clock(ros.now)
    _, b = loop.offer(10 * S, "c-after")
    assert b is not None and loop.done(b.generation, b.stamp_ns).current


def test_a_tracked_answer_is_queued_and_wakes_the_caller_on_completion():
    wakes = []
    loop, _ros, _mono = make(use_depth=False, rate_hz=1000.0, on_complete=lambda: wakes.append(1))
    _, d = loop.offer(100 * S, "c0")
    assert d is not None
    answer = Future()
    loop.track(d, answer)
    assert loop.take_completed() == [] and wakes == []  # nothing until it completes
    assert loop.offer(100 * S + 5 * MS, "c1") == (Decision.QUEUED, None)  # the slot is taken
    done = threading.Thread(target=answer.set_result, args=("r0",))  # a worker thread answers
    done.start()
    done.join()
    assert wakes == [1]
    (completed,) = loop.take_completed()
    assert completed.sent is d and completed.answer is answer and completed.publish
    assert completed.answer.result() == "r0"
    assert completed.next is not None and completed.next.payload == "c1"  # the freed slot's frame
    assert loop.gate.inflight == 1 and loop.take_completed() == []  # taken once


def test_completed_requests_come_oldest_first_and_a_late_older_one_is_not_published():
    loop, _ros, _mono = make(use_depth=False, rate_hz=1000.0, max_inflight=2)
    _, a = loop.offer(100 * S, "c0")
    _, b = loop.offer(100 * S + 5 * MS, "c1")
    assert a is not None and b is not None
    fa, fb = Future(), Future()
    loop.track(a, fa)
    loop.track(b, fb)
    fb.set_result("rb")  # the newer frame's answer completes first
    fa.set_exception(TimeoutError("late"))
    first, second = loop.take_completed()
    assert (first.sent.payload, first.publish) == ("c1", True)
    assert (second.sent.payload, second.publish) == ("c0", False)  # older than what is out
    assert isinstance(second.answer.exception(), TimeoutError)
    assert loop.gate.inflight == 0 and loop.order_counters().dropped_out_of_order == 1


def test_an_answer_from_before_a_reset_is_not_published():
    loop, _ros, _mono = make(use_depth=False, rate_hz=1000.0)
    _, d = loop.offer(100 * S, "c0")
    assert d is not None
    answer = Future()
    loop.track(d, answer)
    loop.reset()  # deactivated while the request was in flight
    answer.set_result("r0")
    (completed,) = loop.take_completed()
    assert not completed.publish and completed.next is None


def test_clear_depth_forgets_the_held_frame_and_the_kept_depth():
    loop, _ros, _mono = make(use_depth=True)
    loop.add_depth(100 * S, "d0")
    loop.clear_depth()  # unsubscribed
    assert loop.depth_for(100 * S) is None
    loop.offer(100 * S, "c0")  # held: its depth was forgotten
    loop.clear_depth()
    assert loop.add_depth(100 * S, "d0") is None  # nothing held any more
