"""Every step_perception_msgs message and service round-trips over real DDS (rclpy + FastDDS)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import rclpy
from geometry_msgs.msg import Point
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import Header

import step_perception_msgs.msg as msgs
import step_perception_msgs.srv as srvs

pytestmark = pytest.mark.ros


@pytest.fixture()
def ros_node() -> Iterator[tuple[Node, SingleThreadedExecutor]]:
    context = rclpy.Context()
    rclpy.init(context=context)
    node = Node("interfaces_roundtrip", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    try:
        yield node, executor
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)


def _detection(i: int) -> Any:
    d = msgs.ObjectDetection()
    d.id = str(i)
    d.label = "red cube"
    d.description = "a small red cube"
    d.score = 0.75
    d.bbox = msgs.BoundingBox2D(center_x=640.5, center_y=360.25, size_x=40.0, size_y=30.0)
    d.has_position = True
    d.position = Point(x=0.1, y=-0.2, z=1.25)
    return d


def _header() -> Header:
    h = Header(frame_id="camera_color_optical_frame")
    h.stamp.sec = 1_700_000_000
    h.stamp.nanosec = 123_456_789
    return h


def _samples() -> list[Any]:
    arr = msgs.ObjectDetectionArray(header=_header(), image_width=1280, image_height=720, query="q")
    arr.detections = [_detection(0), _detection(1)]
    rel = msgs.SpatialRelation(
        subject_id="0",
        relation=msgs.SpatialRelation.LEFT_OF,
        object_id="1",
        distance=math.nan,
        source=msgs.SpatialRelation.SOURCE_GEOMETRY,
    )
    scene = msgs.SceneDescription(header=_header(), summary="two cubes", objects=[_detection(0)])
    scene.relations = [rel]
    return [
        msgs.BoundingBox2D(center_x=1.0, center_y=2.0, size_x=3.0, size_y=4.0),
        _detection(7),
        arr,
        rel,
        scene,
    ]


def _spin_until(executor: SingleThreadedExecutor, done: threading.Event, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not done.is_set() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)


@pytest.mark.parametrize("sample", _samples(), ids=lambda m: type(m).__name__)
def test_message_roundtrip(ros_node: tuple[Node, SingleThreadedExecutor], sample: Any) -> None:
    node, executor = ros_node
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    topic = f"roundtrip_{type(sample).__name__.lower()}"
    got: list[Any] = []
    done = threading.Event()

    def on_msg(msg: Any) -> None:
        got.append(msg)
        done.set()

    node.create_subscription(type(sample), topic, on_msg, qos)
    pub = node.create_publisher(type(sample), topic, qos)
    end = time.monotonic() + 10.0
    while not done.is_set() and time.monotonic() < end:
        pub.publish(sample)
        _spin_until(executor, done, 0.2)
    assert got, f"no {type(sample).__name__} arrived over DDS"
    received = got[0]
    # NaN != NaN, so compare the fields that can hold NaN separately.
    if isinstance(sample, msgs.SpatialRelation):
        assert math.isnan(received.distance)
        received.distance = sample.distance = 0.0
    assert received == sample


def test_query_service_roundtrip(ros_node: tuple[Node, SingleThreadedExecutor]) -> None:
    node, executor = ros_node

    def handle(req: Any, resp: Any) -> Any:
        resp.success = True
        resp.message = f"asked {req.prompt!r} within {req.timeout_s:.1f}s"
        resp.answer = "a red cube"
        resp.detections = _samples()[2]
        resp.scene.summary = "two cubes"
        return resp

    node.create_service(srvs.Query, "query_roundtrip", handle)
    client = node.create_client(srvs.Query, "query_roundtrip")
    assert client.wait_for_service(timeout_sec=10.0)
    future = client.call_async(srvs.Query.Request(prompt="where is the red cube", timeout_s=2.0))
    end = time.monotonic() + 10.0
    while not future.done() and time.monotonic() < end:
        executor.spin_once(timeout_sec=0.05)
    resp = future.result()
    assert resp is not None and resp.success
    assert resp.message == "asked 'where is the red cube' within 2.0s"
    assert resp.detections.image_width == 1280
    assert [d.label for d in resp.detections.detections] == ["red cube", "red cube"]
    assert resp.scene.summary == "two cubes"
