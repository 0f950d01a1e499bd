"""Depth pairing, held frames and the clock-jump check (core/sync.py), with injected clocks."""

import random

import pytest
from step_perception.core.errors import ConfigError
from step_perception.core.sync import ClockJump, DepthSync

MS = 1_000_000
PERIOD = 33_333_333  # [ns] 30 fps


class Monotonic:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_exact_stamps_pair():
    sync = DepthSync(Monotonic())
    for i in range(3):
        sync.add_depth(i * PERIOD, f"d{i}")
    assert [sync.match(i * PERIOD) for i in range(3)] == ["d0", "d1", "d2"]


def test_fixed_offset_pairs_each_colour_with_its_own_depth():
    sync = DepthSync(Monotonic(), keep=4)
    offset = 12 * MS  # depth stamped 12 ms after colour, every frame
    for i in range(10):
        sync.add_depth(i * PERIOD + offset, i)
        assert sync.match(i * PERIOD) == i
    assert sync.match(20 * PERIOD) is None  # nothing within 25 ms


def test_jitter_pairs_with_the_nearest_depth_and_never_a_neighbour():
    rng = random.Random(7)
    sync = DepthSync(Monotonic(), keep=4)
    for i in range(200):
        jitter = rng.randint(-8 * MS, 8 * MS)
        sync.add_depth(i * PERIOD + jitter, i)
        assert sync.match(i * PERIOD) == i  # the neighbours are 25..41 ms away
        if i >= 1:
            assert sync.match(i * PERIOD - PERIOD // 2) in (i - 1, i)


def test_tolerance_is_inclusive_and_keep_bounds_the_memory():
    sync = DepthSync(Monotonic(), keep=2, tolerance_ns=5 * MS)
    sync.add_depth(0, "a")
    assert sync.match(5 * MS) == "a"
    assert sync.match(5 * MS + 1) is None
    sync.add_depth(10 * MS, "b")
    sync.add_depth(20 * MS, "c")
    assert sync.match(0) is None  # "a" fell out of the two kept frames


def test_held_frame_is_released_by_its_depth():
    clock = Monotonic()
    sync = DepthSync(clock, wait_s=0.5)
    sync.hold(1000 * MS, "colour", generation=3)
    assert sync.held is not None and sync.held.stamp_ns == 1000 * MS
    assert sync.add_depth(900 * MS, "old depth") is None  # too far
    held = sync.add_depth(1010 * MS, "depth")
    assert held is not None and (held.payload, held.generation) == ("colour", 3)
    assert sync.held is None
    assert sync.match(1000 * MS) == "depth"


def test_held_frame_expires_on_the_injected_clock():
    clock = Monotonic()
    sync = DepthSync(clock, wait_s=0.5)
    sync.hold(0, "colour", generation=0)
    clock.now += 0.49
    assert sync.expired() is None
    clock.now += 0.02
    held = sync.expired()
    assert held is not None and held.payload == "colour"
    assert sync.expired() is None and sync.held is None


def test_a_newer_hold_replaces_the_older_and_clear_forgets_everything():
    sync = DepthSync(Monotonic())
    sync.hold(0, "a", 0)
    sync.hold(PERIOD, "b", 0)
    held = sync.held
    assert held is not None and held.payload == "b"
    sync.add_depth(5 * PERIOD, "d")
    sync.drop_held()
    assert sync.held is None and sync.match(5 * PERIOD) == "d"
    sync.hold(0, "c", 0)
    sync.clear()
    assert sync.held is None and sync.match(5 * PERIOD) is None


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="keep"):
        DepthSync(Monotonic(), keep=0)
    with pytest.raises(ConfigError, match="tolerance"):
        DepthSync(Monotonic(), tolerance_ns=-1)
    with pytest.raises(ConfigError, match="wait"):
        DepthSync(Monotonic(), wait_s=float("nan"))
    with pytest.raises(ConfigError, match="threshold"):
        ClockJump(-1)


def test_clock_jump_only_when_back_by_more_than_the_threshold():
    jump = ClockJump(threshold_ns=1_000 * MS)
    assert jump.jumped_back(50_000 * MS) is False  # the first reading
    assert jump.jumped_back(49_500 * MS) is False  # back by 0.5 s: jitter, not a loop
    assert jump.jumped_back(60_000 * MS) is False
    assert jump.jumped_back(10_000 * MS) is True  # a bag restarted
    assert jump.jumped_back(10_100 * MS) is False  # measured from the new reading
