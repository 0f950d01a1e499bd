"""The node's loop over real DDS: throttle, newest frame, parameters, services, lifecycle, time."""

from __future__ import annotations

import itertools
import statistics
import time
from typing import Any

import pytest
from ros_harness import Camera, Collector, diag_values, qos, running, stamp_of, wait_for

pytestmark = [pytest.mark.ros]

NS_PER_S = 1_000_000_000


def _msgs() -> Any:
    from step_perception_msgs import msg

    return msg


# Reliable camera QoS here: on this machine best-effort 640x480 frames at 30 fps arrive at only
# ~5 fps (lost fragments), which would make the counts below measure the transport, not the node.
def _replay(cassette: Any, **params: object) -> dict[str, object]:
    return {
        "backend": "replay",
        "cassette": str(cassette),
        "model": "test-model",
        "reliability": "reliable",
        **params,
    }


def _live(server: Any, delay_ms: int = 0, **params: object) -> dict[str, object]:
    return {
        "backend": "openai",
        "endpoint": server.url(delay_ms),
        "model": "test-model",
        "reliability": "reliable",
        **params,
    }


def _gaps_s(arrays: list[Any]) -> list[float]:
    stamps = sorted(stamp_of(a) for a in arrays)
    return [(b - a) / NS_PER_S for a, b in itertools.pairwise(stamps)]


def _assert_rate_bound(arrays: list[Any], rate_hz: float) -> None:
    """Results k apart are at least (k - 1) periods apart in stamp time.

    The gate admits on a grid of stamp time (due += 1/rate_hz), so after a late
    frame the next may come up to one period early, never more.
    """
    stamps = sorted(stamp_of(a) for a in arrays)
    for i in range(len(stamps)):
        for j in range(i + 1, len(stamps)):
            window_s = (stamps[j] - stamps[i]) / NS_PER_S
            assert window_s > (j - i - 1) / rate_hz, (i, j, window_s)


def _set_params(ros: Any, node: Any, target: str, **values: object) -> list[Any]:
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    req = SetParameters.Request()
    req.parameters = [Parameter(k, value=v).to_parameter_msg() for k, v in values.items()]
    return list(ros.call(node, SetParameters, f"{target}/set_parameters", req).results)


def test_throttles_30fps_to_rate_hz(tester: Any, launch: Any, model_server: Any) -> None:
    """30 fps in, rate_hz 3 out (by stamp time), drops reported on /diagnostics.

    Small frames (160x120): the throttle is under test, not DDS bandwidth. With 640x480 reliable
    frames at 30 fps this 2-core machine itself stalled for 1-3 s at random (a CI run failed on it).
    """
    from diagnostic_msgs.msg import DiagnosticArray

    msg = _msgs()
    ns = "/it_throttle"
    dets = Collector(tester, msg.ObjectDetectionArray, f"{ns}/detections")
    diags = Collector(tester, DiagnosticArray, "/diagnostics")
    # The plain path, where the gate sees every frame (on Kilted ``auto`` filters in DDS, and
    # test_content_filter.py covers that path).
    node = launch(ns, _live(model_server, rate_hz=3.0, content_filter="off"))
    camera = Camera(tester, f"{ns}/image_raw", fps=30.0, reliable=True, width=160, height=120)
    # Warm up first: a node's first request (lazy imports, thread pools, first JPEG encode) took
    # about 2 s in a fresh CI clone, which showed as one long gap in the window measured below.
    assert camera.wait_matched()
    camera.publish_one()
    assert dets.wait(1, 15.0), "warm-up frame not answered"
    dets.clear()
    camera.sent.clear()
    # 8 s, not 4: one 1.6 s host stall in a 4 s window (a CI run of 2026-12-02: gaps 0.27, 0.37,
    # 0.87, 1.58, 0.35 s) left 6 results where the count bound below wanted 6.0004.
    with running(camera):
        time.sleep(8.0)
    sent = camera.sent
    span_s = (sent[-1][1] - sent[0][1]) / NS_PER_S
    got = dets.wait(1, 2.0)
    assert len(sent) >= 180, len(sent)
    report = (len(got), span_s, _gaps_s(got), diag_values(diags, node.name))
    # At most rate * span + 1 results in any span of stamp time (the throttle).
    assert len(got) <= 3 * span_s + 1, report
    _assert_rate_bound(got, 3.0)
    # And not fewer: results come on the 1/3 s grid of stamp time. A request that takes longer
    # than the period lets that slot pass (max_inflight 1), which on a loaded 2-core machine
    # happened to 4 of 12 slots (a no-rerun CI loop failed on "at least rate * span - 3"), and a
    # host stall loses every slot it covers. So the median gap carries the rate: most gaps are one
    # period (a throttle at half the rate would make the median two), and at least 40 % of the
    # slots were answered (a throttle at a third of the rate would answer at most 1/3 + 1).
    gaps = _gaps_s(got)
    assert len(got) >= 1.2 * span_s, report
    assert 0.28 <= statistics.median(gaps) <= 0.40, report
    assert wait_for(lambda: int(diag_values(diags, node.name).get("drops_rate", "0")) > 20, 3.0)
    values = diag_values(diags, node.name)
    assert float(values["input_rate_hz"]) > 5.0, values
    assert float(values["processed_rate_hz"]) > 0.0, values
    assert values["input_path"] == "plain"
    assert values["latency_p50_s"] != "nan" and values["backend_healthy"] == "true"


def test_the_newest_frame_is_the_one_sent(tester: Any, launch: Any, model_server: Any) -> None:
    """With a 400 ms model and 30 fps, each request takes the frame newest when the slot freed."""
    msg = _msgs()
    ns = "/it_newest"
    dets = Collector(tester, msg.ObjectDetectionArray, f"{ns}/detections")
    launch(ns, _live(model_server, 400, rate_hz=100.0, max_frame_age_s=5.0))
    camera = Camera(tester, f"{ns}/image_raw", fps=30.0, reliable=True)
    with running(camera):
        dets.wait(6, 8.0)
    timed = dets.timed
    assert len(timed) >= 4, len(timed)
    for (t_prev, _), (_, arr) in itertools.pairwise(timed):
        # The frame sent after a result was published after that result was computed: the
        # camera's newest at the time, not the oldest one waiting (which would be >= 0.37 s
        # older: 0.4 s of model time less one frame period). t_prev is when the test received
        # the result, up to ~0.2 s after the node published it on a loaded 2-core machine
        # (0.156 s seen in a full run of 2026-12-02), hence 0.25 s.
        sent_at = next(t for t, s, _ in camera.sent if s == stamp_of(arr))
        assert sent_at >= t_prev - 0.25, (sent_at, t_prev)
    assert min(_gaps_s([a for _, a in timed])) >= 0.3


def test_runtime_parameter_change(ros: Any, tester: Any, launch: Any, cassette: Any) -> None:
    """rate_hz changes while running; bad values and read-only ones are refused with a reason."""
    from rcl_interfaces.srv import GetParameters

    msg = _msgs()
    ns = "/it_params"
    dets = Collector(tester, msg.ObjectDetectionArray, f"{ns}/detections")
    node = launch(ns, _replay(cassette, rate_hz=1.0))
    camera = Camera(tester, f"{ns}/image_raw", fps=30.0, reliable=True)
    with running(camera):
        time.sleep(2.5)
        slow = dets.msgs
        results = _set_params(ros, tester, node.name, rate_hz=6.0)
        assert results[0].successful, results[0].reason
        time.sleep(1.0)  # the slot already due under 1 Hz passes first
        dets.clear()
        time.sleep(2.5)
        fast = dets.msgs
    assert 1 <= len(slow) <= 4, len(slow)
    _assert_rate_bound(slow, 1.0)
    # Stamp-time rate after the change: well above 1 Hz (frames may be lost under load).
    assert len(fast) >= 5, len(fast)
    assert (len(fast) - 1) / sum(_gaps_s(fast)) > 3.0, _gaps_s(fast)
    _assert_rate_bound(fast, 6.0)

    bad = _set_params(ros, tester, node.name, rate_hz=-1.0)
    assert not bad[0].successful and "rate_hz" in bad[0].reason
    bad = _set_params(ros, tester, node.name, task="dance")
    assert not bad[0].successful and "task" in bad[0].reason
    ro = _set_params(ros, tester, node.name, max_inflight=4)
    assert not ro[0].successful and "read-only" in ro[0].reason
    req = GetParameters.Request(names=["rate_hz", "max_inflight", "task"])
    got = ros.call(tester, GetParameters, f"{node.name}/get_parameters", req).values
    assert (got[0].double_value, got[1].integer_value, got[2].string_value) == (6.0, 1, "detect")
    assert node.alive()


def test_query_service_while_the_loop_runs(
    ros: Any, tester: Any, launch: Any, model_server: Any
) -> None:
    """A query is answered about a fresh frame while the periodic loop keeps publishing."""
    msg = _msgs()
    from step_perception_msgs.srv import Query

    ns = "/it_query"
    dets = Collector(tester, msg.ObjectDetectionArray, f"{ns}/detections")
    node = launch(ns, _live(model_server, 300, rate_hz=5.0))
    camera = Camera(tester, f"{ns}/image_raw", fps=30.0, reliable=True)
    with running(camera):
        dets.wait(2, 5.0)
        before = len(dets.msgs)
        t_call = time.monotonic()
        answers = []
        for prompt in ("the white cube on the left", ""):
            req = Query.Request(prompt=prompt, timeout_s=5.0)
            answers.append(ros.call(tester, Query, f"{ns}/query", req, timeout=10.0))
        after = len(dets.msgs)
    assert after > before, "the loop stopped while queries ran"
    for res in answers:
        assert res.success, res.message
        assert res.detections.detections, res
        assert res.detections.header == res.scene.header
        sent_at = next(t for t, s, _ in camera.sent if s == stamp_of(res.detections))
        assert sent_at >= t_call - 0.5  # a fresh frame, not an old one
        assert res.answer.endswith("white cube(s)")
    users = [s.user for s in model_server.seen()]
    assert any("Request: the white cube on the left" in u for u in users)
    timeout = ros.call(tester, Query, f"{ns}/query", Query.Request(timeout_s=0.05))
    assert not timeout.success and timeout.message
    assert node.alive()


def test_enable_and_disable(ros: Any, tester: Any, launch: Any, cassette: Any) -> None:
    """enable=false stops the loop (frames counted as dropped), enable=true resumes it."""
    from std_srvs.srv import SetBool

    msg = _msgs()
    ns = "/it_enable"
    dets = Collector(tester, msg.ObjectDetectionArray, f"{ns}/detections")
    launch(ns, _replay(cassette, rate_hz=5.0))
    camera = Camera(tester, f"{ns}/image_raw", fps=30.0, reliable=True)
    with running(camera):
        assert dets.wait(2, 5.0)
        off = ros.call(tester, SetBool, f"{ns}/enable", SetBool.Request(data=False))
        assert off.success and "disabled" in off.message
        time.sleep(0.5)  # a request in flight may still land
        dets.clear()
        time.sleep(1.5)
        assert dets.msgs == []
        on = ros.call(tester, SetBool, f"{ns}/enable", SetBool.Request(data=True))
        assert on.success
        assert len(dets.wait(3, 5.0)) >= 3


def test_lifecycle_transitions(ros: Any, tester: Any, launch: Any, cassette: Any) -> None:
    """autostart off: unconfigured -> configure -> activate -> deactivate -> cleanup -> again."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    msg = _msgs()
    ns = "/it_lifecycle"
    dets = Collector(tester, msg.ObjectDetectionArray, f"{ns}/detections")
    node = launch(ns, _replay(cassette, rate_hz=5.0, autostart=False), wait_active=False)
    name = node.name

    def state() -> str:
        res = ros.call(tester, GetState, f"{name}/get_state", GetState.Request(), idempotent=True)
        return str(res.current_state.label)

    def change(transition: int) -> bool:
        req = ChangeState.Request(transition=Transition(id=transition))
        return bool(ros.call(tester, ChangeState, f"{name}/change_state", req).success)

    assert wait_for(lambda: node.alive() and state() == "unconfigured", 20.0), node.log()
    camera = Camera(tester, f"{ns}/image_raw", fps=30.0, reliable=True)
    with running(camera):
        time.sleep(0.5)
        assert camera.pub.get_subscription_count() == 0  # nothing subscribed before activate
        assert change(Transition.TRANSITION_CONFIGURE) and state() == "inactive"
        time.sleep(0.5)
        assert camera.pub.get_subscription_count() == 0
        assert change(Transition.TRANSITION_ACTIVATE) and state() == "active"
        assert len(dets.wait(2, 5.0)) >= 2
        assert change(Transition.TRANSITION_DEACTIVATE) and state() == "inactive"
        assert wait_for(lambda: camera.pub.get_subscription_count() == 0, 5.0)
        time.sleep(0.5)
        dets.clear()
        time.sleep(1.0)
        assert dets.msgs == []
        assert change(Transition.TRANSITION_CLEANUP) and state() == "unconfigured"
        assert change(Transition.TRANSITION_CONFIGURE) and change(Transition.TRANSITION_ACTIVATE)
        assert len(dets.wait(2, 5.0)) >= 2
        assert change(Transition.TRANSITION_ACTIVE_SHUTDOWN) and state() == "finalized"
    assert node.alive()
    assert node.stop() == 0


def test_use_sim_time_follows_clock(ros: Any, tester: Any, launch: Any, cassette: Any) -> None:
    """Frames stamped on a /clock a day in the past are fresh in sim time, stale in wall time."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rosgraph_msgs.msg import Clock

    msg = _msgs()
    base = time.time_ns() - 86_400 * NS_PER_S
    t0 = time.monotonic()

    def sim_ns() -> int:
        return base + round((time.monotonic() - t0) * NS_PER_S)

    clock_pub = tester.create_publisher(Clock, "/clock", qos(True, depth=10))
    stop = False

    def tick() -> None:
        clock_pub.publish(Clock(clock=_stamp(sim_ns())))

    timer = tester.create_timer(0.01, lambda: None if stop else tick())
    sim, wall = "/it_simtime", "/it_walltime"
    sim_dets = Collector(tester, msg.ObjectDetectionArray, f"{sim}/detections")
    wall_dets = Collector(tester, msg.ObjectDetectionArray, f"{wall}/detections")
    diags = Collector(tester, DiagnosticArray, "/diagnostics")
    sim_node = launch(sim, _replay(cassette, rate_hz=2.0, use_sim_time=True))
    wall_node = launch(wall, _replay(cassette, rate_hz=2.0))
    cams = [
        Camera(tester, f"{ns}/image_raw", fps=15.0, reliable=True, stamp_ns=sim_ns)
        for ns in (sim, wall)
    ]
    for cam in cams:
        cam.start()
    try:
        got = sim_dets.wait(3, 6.0)
    finally:
        for cam in cams:
            cam.stop()
        stop = True
        tester.destroy_timer(timer)
    assert len(got) >= 3
    assert all(abs(stamp_of(a) - sim_ns()) < 10 * NS_PER_S for a in got)
    assert wall_dets.msgs == []  # a day old on the system clock: dropped as stale
    stale = lambda: int(diag_values(diags, wall_node.name).get("drops_stale", "0"))  # noqa: E731
    assert wait_for(lambda: stale() > 0, 3.0)
    # The sim node's diagnostics are stamped in sim time, too.
    sim_reports = [a for a in diags.msgs if any(s.name.startswith(sim_node.name) for s in a.status)]
    assert sim_reports and abs(stamp_of(sim_reports[-1]) - sim_ns()) < 10 * NS_PER_S


def _stamp(ns: int) -> Any:
    from builtin_interfaces.msg import Time

    sec, nanosec = divmod(ns, NS_PER_S)
    return Time(sec=sec, nanosec=nanosec)


@pytest.mark.slow
def test_content_filter_path(ros: Any, tester: Any, launch: Any, model_server: Any) -> None:
    """content_filter:=on: the throttle's bound reaches the writer, throttled frames never arrive.

    Small frames (80x60), which Fast DDS 2.x filters correctly. The camera runs in its own
    process: Fast DDS 2.14 writers can crash while a filtered reader updates its filter
    (eProsima/Fast-DDS#4878, reproduced here), and that must not take the test session along.
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.utilities import get_rmw_implementation_identifier
    from ros_harness import child_env
    from step_perception.ros.content_filter import middleware_filters_large_samples

    safe, why = middleware_filters_large_samples(get_rmw_implementation_identifier())
    if not safe and os.environ.get("STEP_PERCEPTION_FORCE_CFT_TEST") != "1":
        # Measured: the camera process segfaults or hangs within seconds, and its leftovers
        # (shared-memory segments) then disturb later tests. STEP_PERCEPTION_FORCE_CFT_TEST=1
        # runs it anyway (it then xfails on a crash).
        pytest.skip(f"content filters unusable on this middleware: {why}")

    msg = _msgs()
    ns = "/it_filter"
    dets = Collector(tester, msg.ObjectDetectionArray, f"{ns}/detections")
    diags = Collector(tester, DiagnosticArray, "/diagnostics")
    node = launch(ns, _live(model_server, 0, rate_hz=2.0, content_filter="on"))
    env = child_env()
    env["PYTHONPATH"] = f"{Path(__file__).parent}:{env['PYTHONPATH']}"
    script = str(Path(__file__).with_name("camera_proc.py"))
    try:
        cam = subprocess.run(
            [sys.executable, script, f"{ns}/image_raw", "30", "4", "80", "60"],
            env=env, capture_output=True, text=True, timeout=20,
        )  # fmt: skip
    except subprocess.TimeoutExpired:  # run() killed it
        pytest.xfail("Fast DDS 2.x writer hung beside a content-filtered reader")
    if cam.returncode < 0:
        pytest.xfail(f"Fast DDS writer died with signal {-cam.returncode} (eProsima/Fast-DDS#4878)")
    assert cam.returncode == 0, cam.stderr
    sent = int(cam.stdout.split()[-1])
    assert "DDS content filter" in node.log(), node.log()
    got = dets.wait(6, 3.0)
    assert 5 <= len(got) <= 2 * 4 + 2, len(got)
    _assert_rate_bound(got, 2.0)
    assert (got[0].image_width, got[0].image_height) == (80, 60)
    path = lambda: diag_values(diags, node.name).get("input_path")  # noqa: E731
    assert wait_for(lambda: path() == "content_filter", 3.0)
    values = diag_values(diags, node.name)
    # The writer skipped the throttled frames: far fewer reached the node than were sent.
    assert int(values["frames_offered"]) < sent / 3, (values, sent)
