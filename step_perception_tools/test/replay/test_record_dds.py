"""`step-perception record` writes what the node publishes, bytes unchanged, to an MCAP bag that
rosbags reads back, logged at the receive time (wall clock, or /clock with --use-sim-time)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

rclpy = pytest.importorskip("rclpy")
msgs = pytest.importorskip("step_perception_msgs.msg")

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus  # noqa: E402
from geometry_msgs.msg import Point  # noqa: E402
from rclpy.qos import QoSProfile, ReliabilityPolicy  # noqa: E402
from replay_support import start_cli  # noqa: E402
from rosbags.rosbag2 import Reader  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from step_perception.ros.messages import stamp_ns  # noqa: E402
from step_perception_tools.record import OUTPUT_TOPICS  # noqa: E402
from visualization_msgs.msg import Marker, MarkerArray  # noqa: E402

from step_perception_tools import bags  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.slow]

RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
T0 = 1_767_225_600 * 1_000_000_000


class Talker:
    """Publishes the node's output topics (under /robot) in its own context."""

    def __init__(self) -> None:
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("fake_perception", namespace="/robot", context=self.context)
        types = {"detections": msgs.ObjectDetectionArray, "scene": msgs.SceneDescription,
                 "command": String, "debug_image": Image, "markers": MarkerArray}  # fmt: skip
        self.pubs = {t: self.node.create_publisher(types[t], t, RELIABLE) for t in OUTPUT_TOPICS}
        self.pubs["/diagnostics"] = self.node.create_publisher(
            DiagnosticArray, "/diagnostics", RELIABLE
        )
        self.clock = self.node.create_publisher(Clock, "/clock", RELIABLE)

    def wait_matched(self, timeout: float = 30.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if all(p.get_subscription_count() > 0 for p in self.pubs.values()):
                time.sleep(1.0)  # let the large-data transport connect too
                return
            time.sleep(0.05)
        raise AssertionError("the recorder never subscribed")

    def close(self) -> None:
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


def _array(i: int) -> msgs.ObjectDetectionArray:
    m = msgs.ObjectDetectionArray()
    m.header.frame_id = "camera_color_optical_frame"
    m.header.stamp.sec, m.header.stamp.nanosec = divmod(T0 + i * 100_000_000, 1_000_000_000)
    m.image_width, m.image_height = 1280, 720
    d = msgs.ObjectDetection(id="0", label=f"red cube {i}", score=0.5, has_position=True)
    d.bbox = msgs.BoundingBox2D(center_x=10.0 + i, center_y=20.0, size_x=4.0, size_y=6.0)
    d.position = Point(x=0.1, y=0.2, z=1.0 + i)
    m.detections = [d]
    return m


def _publish_all(talker: Talker, n: int) -> None:
    for i in range(n):
        arr = _array(i)
        talker.pubs["detections"].publish(arr)
        talker.pubs["scene"].publish(msgs.SceneDescription(header=arr.header, summary=f"s{i}"))
        talker.pubs["command"].publish(String(data=f'pick target="red cube" id={i}'))
        img = Image(header=arr.header, height=2, width=2, encoding="rgb8", step=6)
        img.data = bytes(range(12))
        talker.pubs["debug_image"].publish(img)
        talker.pubs["markers"].publish(MarkerArray(markers=[Marker(header=arr.header, id=i)]))
        talker.pubs["/diagnostics"].publish(
            DiagnosticArray(header=arr.header, status=[DiagnosticStatus(name="x", message=str(i))])
        )
        time.sleep(0.02)


def _read(bag: Path) -> dict[str, list[tuple[int, object]]]:
    store = bags.typestore()
    out: dict[str, list[tuple[int, object]]] = {}
    with Reader(bag) as reader:
        for conn, log_ns, raw in reader.messages():
            out.setdefault(conn.topic, []).append(
                (log_ns, store.deserialize_cdr(raw, conn.msgtype))
            )
        defs = {c.topic: c.msgdef.data for c in reader.connections}
    assert "MSG: step_perception_msgs/ObjectDetection" in defs["/robot/detections"]
    return out


def test_records_outputs_until_sigint(tmp_path: Path):
    bag = tmp_path / "run"
    talker = Talker()
    try:
        proc = start_cli("record", str(bag), "--namespace", "robot")
        talker.wait_matched()
        before = time.time_ns()
        _publish_all(talker, 5)
        time.sleep(1.0)
        after = time.time_ns()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        talker.close()
    assert (bag / "run.mcap").is_file() and (bag / "metadata.yaml").is_file()
    got = _read(bag)
    assert sorted(got) == sorted([*(f"/robot/{t}" for t in OUTPUT_TOPICS), "/diagnostics"])
    assert [m.markers[0].id for _, m in got["/robot/markers"]] == list(range(5))
    dets = got["/robot/detections"]
    assert [m.detections[0].label for _, m in dets] == [f"red cube {i}" for i in range(5)]
    assert [stamp_ns(m.header.stamp) for _, m in dets] == [T0 + i * 100_000_000 for i in range(5)]
    assert all(before <= log <= after for log, _ in dets)  # receive time on the wall clock
    assert [m.summary for _, m in got["/robot/scene"]] == [f"s{i}" for i in range(5)]
    assert got["/robot/command"][0][1].data == 'pick target="red cube" id=0'
    assert bytes(got["/robot/debug_image"][4][1].data) == bytes(range(12))
    # eval's reader finds the one detections topic by type
    assert len(bags.read_detections(bag)) == 5
    _check_with_independent_mcap_reader(bag / "run.mcap")


def _check_with_independent_mcap_reader(path: Path) -> None:
    """Foxglove's Python MCAP tools decode the recorded bytes from the embedded schemas alone."""
    mcap_reader = pytest.importorskip("mcap.reader")
    mcap_ros2 = pytest.importorskip("mcap_ros2.decoder")
    with path.open("rb") as fh:
        reader = mcap_reader.make_reader(fh, decoder_factories=[mcap_ros2.DecoderFactory()])
        labels = [
            msg.detections[0].label
            for _, _, _, msg in reader.iter_decoded_messages(topics=["/robot/detections"])
        ]
    assert labels == [f"red cube {i}" for i in range(5)]


def test_sim_time_log_times_follow_clock(tmp_path: Path):
    bag = tmp_path / "run"
    talker = Talker()
    try:
        proc = start_cli("record", str(bag), "--namespace", "/robot", "--use-sim-time",
                         "--duration", "25", "--topics", "detections")  # fmt: skip
        end = time.monotonic() + 30
        while talker.pubs["detections"].get_subscription_count() == 0:
            assert time.monotonic() < end
            time.sleep(0.05)
        time.sleep(1.0)
        for i in range(3):
            clock_ns = T0 + i * 100_000_000 + 40_000_000  # 40 ms after the frame's stamp
            talker.clock.publish(Clock(clock=rclpy.time.Time(nanoseconds=clock_ns).to_msg()))
            time.sleep(0.3)
            talker.pubs["detections"].publish(_array(i))
            time.sleep(0.3)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        talker.close()
    got = _read(bag)
    assert sorted(got) == ["/diagnostics", "/robot/detections"] or sorted(got) == [
        "/robot/detections"
    ]
    logs = [log for log, _ in got["/robot/detections"]]
    assert logs == [T0 + i * 100_000_000 + 40_000_000 for i in range(3)]
