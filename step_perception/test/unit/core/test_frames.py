import threading

import pytest
from manual_clock import Clock
from step_perception.core.errors import ConfigError
from step_perception.core.frames import Decision, FrameGate

MS = 1_000_000
S = 1_000_000_000


def make(rate_hz=1.0, max_inflight=1, max_frame_age_s=2.0, now=0):
    clock = Clock(now)
    return FrameGate(
        clock, rate_hz=rate_hz, max_inflight=max_inflight, max_frame_age_s=max_frame_age_s
    ), clock


def test_first_frame_is_sent_and_next_bound_follows_the_rate():
    gate, _clock = make(rate_hz=2.0)
    assert gate.next_accept_stamp_ns() == 0
    assert gate.offer(10 * S, "a") is Decision.SEND_NOW
    assert gate.next_accept_stamp_ns() is None  # busy: the node closes its content filter
    assert gate.done() is None
    assert gate.next_accept_stamp_ns() == 10 * S + 500 * MS
    assert gate.offer(10 * S + 400 * MS, "b") is Decision.DROPPED_RATE
    assert gate.offer(10 * S + 500 * MS, "c") is Decision.SEND_NOW


def test_newest_frame_wins_while_busy():
    gate, clock = make(rate_hz=100.0)
    clock.now = 0
    assert gate.offer(0, "f0") is Decision.SEND_NOW
    for i in range(1, 6):
        clock.now = i * 33 * MS
        assert gate.offer(i * 33 * MS, f"f{i}") is Decision.QUEUED
    nxt = gate.done()
    assert nxt is not None and nxt.payload == "f5" and nxt.stamp_ns == 5 * 33 * MS
    c = gate.counters()
    assert c.replaced == 4 and c.queued == 5 and c.sent == 2
    assert gate.inflight == 1


def test_pending_frame_that_became_stale_is_dropped():
    gate, clock = make(rate_hz=100.0, max_frame_age_s=0.5)
    assert gate.offer(0, "a") is Decision.SEND_NOW
    clock.now = 100 * MS
    assert gate.offer(100 * MS, "b") is Decision.QUEUED
    clock.now = 700 * MS  # request took long; b is 600 ms old
    assert gate.done() is None
    assert gate.counters().dropped_stale == 1
    assert gate.inflight == 0


def test_stale_and_older_frames_are_dropped_at_offer():
    gate, _clock = make(max_frame_age_s=1.0, now=10 * S)
    assert gate.offer(8 * S, "old") is Decision.DROPPED_STALE
    assert gate.offer(10 * S, "ok") is Decision.SEND_NOW
    gate.done()
    assert gate.offer(10 * S, "dup") is Decision.DROPPED_OLDER
    assert gate.offer(9 * S + 500 * MS, "back") is Decision.DROPPED_OLDER
    c = gate.counters()
    assert (c.dropped_stale, c.dropped_older, c.offered) == (1, 2, 4)
    assert c.dropped == 3


def test_future_stamps_are_not_stale():
    gate, _ = make(now=0)
    assert gate.offer(5 * S, "ahead") is Decision.SEND_NOW


def test_rate_grid_gives_the_rate_not_less_under_30fps():
    # 30 fps with jittered stamps throttled to 10 Hz: 10 frames per second, never more.
    gate, clock = make(rate_hz=10.0)
    sent = []
    for i in range(300):
        stamp = round(i * 1e9 / 30) + (i % 3) * 100_000
        clock.now = stamp
        if gate.offer(stamp, i) is Decision.SEND_NOW:
            sent.append(stamp)
            gate.done()
    assert 99 <= len(sent) <= 101
    for a, b in zip(sent, sent[10:], strict=False):  # any 10 consecutive span >= ~0.9 s
        assert b - a >= 900 * MS


def test_rate_bound_holds_for_any_window():
    gate, clock = make(rate_hz=5.0)
    sent = []
    stamp = 0
    for i in range(2000):
        stamp += (i * 7919) % 97 * MS  # irregular arrivals
        clock.now = stamp
        if gate.offer(stamp, i) is Decision.SEND_NOW:
            sent.append(stamp)
            gate.done()
    for i, a in enumerate(sent):
        in_window = sum(1 for b in sent[i:] if b - a < S)
        assert in_window <= 5 + 1


def test_max_inflight_allows_parallel_requests():
    gate, _clock = make(rate_hz=1000.0, max_inflight=2)
    assert gate.offer(1 * MS, "a") is Decision.SEND_NOW
    assert gate.next_accept_stamp_ns() is not None
    assert gate.offer(2 * MS, "b") is Decision.SEND_NOW
    assert gate.next_accept_stamp_ns() is None
    assert gate.offer(3 * MS, "c") is Decision.QUEUED
    got = gate.done()
    assert got is not None and got.payload == "c"


def test_raising_max_inflight_frees_a_slot_and_reconfigure_validation():
    gate, _clock = make(rate_hz=1000.0)
    assert gate.offer(1 * MS, "a") is Decision.SEND_NOW
    assert gate.offer(2 * MS, "b") is Decision.QUEUED
    assert gate.next_accept_stamp_ns() is None  # no free slot
    gate.reconfigure(max_inflight=2)
    assert gate.next_accept_stamp_ns() == 2 * MS + 1
    got = gate.done()  # "a" finished: the waiting "b" goes out
    assert got is not None and got.payload == "b"
    assert gate.inflight == 1
    with pytest.raises(ConfigError, match="rate_hz"):
        gate.reconfigure(rate_hz=0)
    with pytest.raises(ConfigError, match="max_inflight"):
        gate.reconfigure(max_inflight=0)


def test_reset_forgets_frames():
    gate, clock = make()
    gate.offer(5 * S, "a")
    gate.reset()
    clock.now = 1 * S
    assert gate.offer(1 * S, "after clock jump") is Decision.SEND_NOW


def test_a_request_from_before_reset_frees_no_slot_of_a_newer_one():
    gate, clock = make(rate_hz=1000.0)
    assert gate.offer(1 * MS, "old") is Decision.SEND_NOW
    old_gen = gate.generation
    gate.reset()  # e.g. the bag looped: the clock jumped back
    clock.now = 0
    assert gate.offer(0, "new") is Decision.SEND_NOW
    new_gen = gate.generation
    assert new_gen != old_gen
    assert gate.offer(2 * MS, "waiting") is Decision.QUEUED
    assert gate.done(old_gen) is None  # the old request finishing late changes nothing
    assert gate.inflight == 1 and gate.next_accept_stamp_ns() is None
    nxt = gate.done(new_gen)
    assert nxt is not None and nxt.payload == "waiting" and nxt.generation == new_gen
    assert gate.inflight == 1


def test_concurrent_offer_and_done_keep_invariants():
    gate, clock = make(rate_hz=1e3, max_inflight=1, max_frame_age_s=1e6)
    stop = threading.Event()
    sent = []

    def finisher():
        while not stop.is_set():
            if gate.inflight:
                nxt = gate.done()
                if nxt is not None:
                    sent.append(nxt.stamp_ns)

    t = threading.Thread(target=finisher)
    t.start()
    for i in range(1, 5001):
        stamp = i * 2 * MS
        clock.now = stamp
        if gate.offer(stamp, i) is Decision.SEND_NOW:
            sent.append(stamp)
    stop.set()
    t.join()
    assert gate.inflight <= 1
    assert sent == sorted(sent) and len(set(sent)) == len(sent)
    c = gate.counters()
    assert c.offered == 5000
    assert c.sent == len(sent)


# -- the content-filter policy --------------------------------------------------------------


def bounds(next_accept_ns, *, enabled=True, waiting=False, latest=None, held=None):
    from step_perception.core.frames import content_filter_bounds

    b = content_filter_bounds(
        next_accept_ns,
        enabled=enabled,
        query_waiting=waiting,
        latest_stamp_ns=latest,
        held_stamp_ns=held,
    )
    return b.colour, b.depth


def test_filter_follows_the_gate():
    gate, _clock = make(rate_hz=2.0, now=10 * S)
    assert bounds(gate.next_accept_stamp_ns()) == (0, 0)
    gate.offer(10 * S, "a")
    assert bounds(gate.next_accept_stamp_ns()) == (None, None)  # busy: nothing through
    gate.done()
    assert bounds(gate.next_accept_stamp_ns()) == (10 * S + 500 * MS, 10 * S + 500 * MS)


def test_filter_closed_when_disabled_and_opened_for_a_waiting_query():
    assert bounds(7, enabled=False) == (None, None)
    assert bounds(None, enabled=False, waiting=True, latest=41) == (42, 42)
    assert bounds(None, waiting=True) == (0, 0)  # nothing received yet: anything


def test_held_frame_closes_colour_and_lets_its_depth_through():
    assert bounds(7, held=5 * S) == (None, 5 * S)
    assert bounds(7, waiting=True, latest=9, held=5 * S) == (10, 5 * S)  # the query still wins
