"""The report composition (ros/diagnostics.py): node counters joined with the session status."""

import math

from manual_clock import Clock
from step_perception.core.frames import GateCounters
from step_perception.core.pipeline import PerceiverStats
from step_perception.core.session import SessionStatus
from step_perception.core.types import BackendHealth
from step_perception.ros.diagnostics import Diagnostics


def test_a_snapshot_joins_the_node_counters_and_the_session_status():
    clock = Clock(10.0)
    diag = Diagnostics("n: perception", "cam", window_s=5.0, clock=clock)
    clock.now = 12.0
    diag.frame()
    diag.frame()
    diag.drop("disabled")
    status = SessionStatus(
        rate_limit_hz=2.0,
        gate=GateCounters(offered=2, sent=1),
        out_of_order=3,
        stats=PerceiverStats(completed=1),
        health=BackendHealth(True, "ok"),
        backend_name="openai",
        stall_after_s=7.0,
    )
    snap = diag.snapshot(status, lifecycle_state="active", enabled=False, input_path="plain")
    assert (snap.lifecycle_state, snap.enabled, snap.input_path) == ("active", False, "plain")
    assert snap.input_rate_hz == 1.0 and snap.processed_rate_hz == 0.0  # 2 frames in 2 s
    assert snap.node_drops == {"disabled": 1, "out_of_order": 3}
    assert (snap.rate_limit_hz, snap.gate, snap.stats) == (2.0, status.gate, status.stats)
    assert (snap.health, snap.backend_name, snap.stall_after_s) == (status.health, "openai", 7.0)


def test_unconfigured_the_report_has_no_backend_and_never_stalls():
    diag = Diagnostics("n: perception", "cam")
    snap = diag.snapshot(
        SessionStatus(), lifecycle_state="unconfigured", enabled=True, input_path="plain"
    )
    assert math.isnan(snap.rate_limit_hz) and snap.stall_after_s == math.inf
    assert snap.health is None and snap.node_drops == {"out_of_order": 0}
    level = diag.status(snap).level
    assert level == bytes([1])  # WARN: lifecycle state unconfigured


def test_an_unanswered_request_keeps_the_debt_and_one_in_flight_counts_as_frames():
    """The content-filter path: frames stop while a request waits; the level still says ERROR."""
    clock = Clock(0.0)
    diag = Diagnostics("n: perception", "cam", window_s=5.0, clock=clock)

    def level(inflight: int) -> bytes:
        status = SessionStatus(
            rate_limit_hz=5.0, stats=PerceiverStats(inflight=inflight), stall_after_s=3.0
        )
        snap = diag.snapshot(status, lifecycle_state="active", enabled=True, input_path="x")
        return bytes(diag.status(snap).level)

    assert level(0) == bytes([1])  # no images yet: WARN, stall bound now known
    diag.frame()  # t = 0: the one frame the filter let through, sent
    clock.now = 3.5  # silence: the filter is closed while the request waits
    assert level(1) == bytes([2])
    clock.now = 5.0
    diag.unanswered()  # timed out, no result
    clock.now = 5.1
    diag.frame()  # the filter let the next frame through: not a fresh stream
    assert level(1) == bytes([2])
    diag.result()
    assert level(0) == bytes([0])
