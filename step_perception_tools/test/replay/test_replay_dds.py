"""`step-perception replay` publishes a bag over real DDS: bag bytes and stamps, /clock, timing,
remapping, topic filter, loop and a clean stop on SIGINT."""

from __future__ import annotations

import json
import signal
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import QoSProfile, ReliabilityPolicy
from replay_support import finish, start_cli
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image

from step_perception_tools import bags

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
BEST_EFFORT = QoSProfile(depth=50, reliability=ReliabilityPolicy.BEST_EFFORT)


class Listener:
    """Subscribes in its own context and records (receive time, message) per topic."""

    def __init__(self, topics: dict[str, Any], qos: QoSProfile = RELIABLE) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("replay_listener", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.got: dict[str, list[tuple[float, Any]]] = defaultdict(list)
        for topic, cls in topics.items():
            self.node.create_subscription(cls, topic, self._sink(topic), qos)

    def _sink(self, topic: str):
        # one-argument callback: rclpy passes MessageInfo to callbacks taking two
        def on_message(msg: Any) -> None:
            self.got[topic].append((time.monotonic(), msg))

        return on_message

    def spin_while(self, proc, timeout: float = 60.0, extra: float = 0.5) -> None:
        end = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < end:
            self.executor.spin_once(timeout_sec=0.05)
        stop = time.monotonic() + extra
        while time.monotonic() < stop:
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _stamp(msg: Any) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


def test_replay_publishes_bag_frames_with_their_stamps_and_clock(small_scenes: Path):
    frames = list(bags.read_scene_frames(small_scenes))
    listener = Listener(
        {"/camera/image_raw": Image, "/cam1/camera_info": CameraInfo, "/clock": Clock,
         "/camera/depth/image_raw": Image}
    )  # fmt: skip
    try:
        proc = start_cli(
            "replay", str(small_scenes), "--clock", "50", "--rate", "2", "--reliable",
            "--wait-for-subscribers", "20", "--delay", "2",
            "--remap", "/camera/camera_info:=/cam1/camera_info",
            "--topics", "/camera/image_raw", "/camera/camera_info", "--quiet",
        )  # fmt: skip
        listener.spin_while(proc)
        _, err = finish(proc, 10)
        assert proc.returncode == 0, err
        assert "published 16 messages" in err
    finally:
        listener.close()

    images = listener.got["/camera/image_raw"]
    assert [_stamp(m) for _, m in images] == [f.stamp_ns for f in frames]
    for (_, msg), frame in zip(images, frames, strict=True):
        assert msg.header.frame_id == bags.DEFAULT_FRAME_ID
        assert (msg.width, msg.height, msg.encoding) == (320, 240, "rgb8")
        assert bytes(msg.data) == frame.rgb.tobytes()  # the bag's bytes, unchanged
    infos = listener.got["/cam1/camera_info"]
    assert [_stamp(m) for _, m in infos] == [f.stamp_ns for f in frames]
    assert list(infos[0][1].k) == pytest.approx(
        [frames[0].intrinsics.fx, 0, frames[0].intrinsics.cx, 0, frames[0].intrinsics.fy,
         frames[0].intrinsics.cy, 0, 0, 1]
    )  # fmt: skip
    assert not listener.got["/camera/depth/image_raw"]  # filtered out by --topics

    # original timing at rate 2: 7 frame periods of 0.1 s take 0.35 s of wall time
    span = images[-1][0] - images[0][0]
    assert 0.25 < span < 1.5, span
    # /clock carries bag time: non-decreasing, within the bag, reaching the last stamp
    clocks = [c.clock.sec * 1_000_000_000 + c.clock.nanosec for _, c in listener.got["/clock"]]
    assert len(clocks) >= len(frames)
    assert clocks == sorted(clocks)
    assert frames[0].stamp_ns <= clocks[0] and clocks[-1] == frames[-1].stamp_ns
    # between frames, /clock ticks at ~50 Hz wall (rate 2 -> ~40 ms bag time per tick)
    assert len(set(clocks)) > len(frames) + 3


def test_loop_restarts_and_sigint_stops_cleanly(small_scenes: Path):
    listener = Listener({"/camera/image_raw": Image})
    try:
        proc = start_cli(
            "replay", str(small_scenes), "--loop", "--rate", "4", "--reliable",
            "--wait-for-subscribers", "20", "--delay", "0.3", "--topics", "/camera/image_raw",
            "--quiet",
        )  # fmt: skip
        end = time.monotonic() + 60
        while len(listener.got["/camera/image_raw"]) < 20 and time.monotonic() < end:
            listener.executor.spin_once(timeout_sec=0.05)
        proc.send_signal(signal.SIGINT)
        listener.spin_while(proc, timeout=10)
        _, err = finish(proc, 10)
        assert proc.returncode == 0, err
    finally:
        listener.close()
    stamps = [_stamp(m) for _, m in listener.got["/camera/image_raw"]]
    assert len(stamps) >= 20
    first = stamps[0]
    assert stamps[8:16] == stamps[:8] or stamps.count(first) >= 2  # a second pass started over


def test_default_sensor_qos_reaches_a_best_effort_subscriber(small_scenes: Path):
    # Best effort may lose the first frames while FastDDS connects its large-data transport;
    # looping until frames flow shows the default QoS matches a sensor-data subscriber.
    frames = {f.stamp_ns: f for f in bags.read_scene_frames(small_scenes)}
    listener = Listener({"/camera/image_raw": Image}, BEST_EFFORT)
    try:
        proc = start_cli(
            "replay", str(small_scenes), "--loop", "--wait-for-subscribers", "20",
            "--topics", "/camera/image_raw", "--quiet",
        )  # fmt: skip
        end = time.monotonic() + 60
        while len(listener.got["/camera/image_raw"]) < 5 and time.monotonic() < end:
            listener.executor.spin_once(timeout_sec=0.05)
        proc.send_signal(signal.SIGTERM)
        listener.spin_while(proc, timeout=10)
        _, err = finish(proc, 10)
        assert proc.returncode == 0, err
    finally:
        listener.close()
    got = listener.got["/camera/image_raw"]
    assert len(got) >= 5
    for _, msg in got:
        assert bytes(msg.data) == frames[_stamp(msg)].rgb.tobytes()


def test_lockstep_waits_for_each_answer(small_scenes: Path, tmp_path: Path):
    """A slow 'node' (answers 0.3 s after each frame) still gets every frame, one at a time."""
    from std_msgs.msg import Header

    frames = [f.stamp_ns for f in bags.read_scene_frames(small_scenes)]
    listener = Listener({"/camera/image_raw": Image})
    answers = listener.node.create_publisher(Header, "/answers", RELIABLE)
    answered: list[tuple[float, int]] = []
    trips_file = tmp_path / "round_trips.json"
    try:
        proc = start_cli(
            "replay", str(small_scenes), "--reliable", "--rate", "10",
            "--wait-for-subscribers", "20", "--delay", "1", "--topics", "/camera/image_raw",
            "--lockstep", "/answers", "--lockstep-timeout", "20", "--quiet",
            "--lockstep-latency-out", str(trips_file),
        )  # fmt: skip
        end = time.monotonic() + 90
        while proc.poll() is None and time.monotonic() < end:
            listener.executor.spin_once(timeout_sec=0.02)
            got = listener.got["/camera/image_raw"]
            if len(got) > len(answered) and time.monotonic() > got[len(answered)][0] + 0.3:
                msg = got[len(answered)][1]
                answers.publish(msg.header)
                answered.append((time.monotonic(), _stamp(msg)))
        _, err = finish(proc, 10)
        assert proc.returncode == 0, err
        assert "lockstep: 8 answered, 0 failed, 0 unanswered" in err
    finally:
        listener.close()
    got = listener.got["/camera/image_raw"]
    assert [_stamp(m) for _, m in got] == frames
    # frame k+1 only left after the answer to frame k (at rate 10 they would come 10 ms apart)
    for (answer_t, stamp), (next_t, _) in zip(answered, got[1:], strict=False):
        assert next_t > answer_t, stamp
    # the replay measured each frame's round trip: the 'node' answered 0.3 s after receipt
    trips = json.loads(trips_file.read_text())
    assert len(trips) == 8
    assert all(0.3 <= t < 5.0 for t in trips), trips


def test_missing_topic_is_a_clear_error(small_scenes: Path):
    proc = start_cli("replay", str(small_scenes), "--topics", "/nope", "--delay", "0")
    _, err = finish(proc, 60)
    assert proc.returncode == 1
    assert "no topic(s) ['/nope']" in err
