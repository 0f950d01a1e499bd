"""``target_frame`` over real DDS: positions through tf2 at the image's stamp.

One node with ``target_frame:=base_link``; the test side broadcasts a static transform for one
camera frame and a moving one for another, and leaves a third unknown. Depth is a flat wall, so
each expected position is computed from the camera model and the transform.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from ros_harness import Collector, H, W, frame_boxes, image_msg, qos, stamp_of, wait_for

pytestmark = [pytest.mark.ros]

FX = 500.0
WALL_M = 1.5


def _tf(parent: str, child: str, stamp_ns: int, xyz: tuple[float, float, float],
        quat: tuple[float, float, float, float]) -> Any:  # fmt: skip
    from geometry_msgs.msg import TransformStamped

    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = parent, child
    t.header.stamp.sec, t.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    t.transform.translation.x, t.transform.translation.y, t.transform.translation.z = xyz
    r = t.transform.rotation
    r.x, r.y, r.z, r.w = quat
    return t


def _camera_point(index: int) -> tuple[float, float, float]:
    """Where the first box of frame ``index`` is in the camera frame (the wall, pinhole)."""
    x1, y1, x2, y2 = frame_boxes(index)[0]
    u, v = (x1 + x2) / 2, (y1 + y2) / 2
    return ((u - W / 2) * WALL_M / FX, (v - H / 2) * WALL_M / FX, WALL_M)


class _Rig:
    """Publishes a colour frame with its aligned depth and CameraInfo; waits for the answer."""

    def __init__(self, tester: Any, ns: str) -> None:
        from sensor_msgs.msg import CameraInfo, Image

        from step_perception_msgs.msg import ObjectDetectionArray

        self.got = Collector(tester, ObjectDetectionArray, f"{ns}/detections")
        self.image = tester.create_publisher(Image, f"{ns}/image_raw", qos(True))
        self.depth_pub = tester.create_publisher(Image, f"{ns}/depth/image_raw", qos(True))
        self.info_pub = tester.create_publisher(CameraInfo, f"{ns}/camera_info", qos(True))
        self.info = CameraInfo(width=W, height=H)
        self.info.k = [FX, 0.0, W / 2, 0.0, FX, H / 2, 0.0, 0.0, 1.0]
        self.depth = Image(height=H, width=W, encoding="16UC1", is_bigendian=0, step=W * 2)
        self.depth.data = np.full((H, W), int(WALL_M * 1000), dtype=np.uint16).tobytes()

    def answer(self, index: int, frame_id: str, stamp_ns: int, done: Any = lambda m: True) -> Any:
        """Publish until an answer for which ``done(answer)`` holds (a discovery race, or depth
        that missed its frame, costs a retry); return that answer."""
        for _ in range(5):
            self.info_pub.publish(self.info)
            colour = image_msg(index, stamp_ns, frame_id)
            self.image.publish(colour)
            self.depth.header.stamp.sec, self.depth.header.stamp.nanosec = divmod(stamp_ns, 10**9)
            self.depth_pub.publish(self.depth)
            if wait_for(lambda w=stamp_ns: any(stamp_of(m) == w for m in self.got.msgs), 2.0):
                msg = next(m for m in self.got.msgs if stamp_of(m) == stamp_ns)
                if done(msg):
                    return msg
            stamp_ns += 1_000_000
        raise AssertionError(f"frame {index} ({frame_id}) never answered")


def _first(msg: Any, index: int) -> Any:
    x1, _, x2, _ = frame_boxes(index)[0]
    return min(msg.detections, key=lambda d: abs(d.bbox.center_x - (x1 + x2) / 2))


def test_static_moving_and_missing_transforms(tester: Any, launch: Any, model_server: Any) -> None:
    from diagnostic_msgs.msg import DiagnosticArray
    from tf2_ros import StaticTransformBroadcaster, TransformBroadcaster
    from vision_msgs.msg import Detection3DArray

    ns = "/it_tf"
    three = Collector(tester, Detection3DArray, f"{ns}/detections_3d")
    diags = Collector(tester, DiagnosticArray, "/diagnostics", reliable=False)
    rig = _Rig(tester, ns)
    launch(
        ns,
        {"backend": "openai", "endpoint": model_server.url(), "model": "test-model",
         "use_depth": True, "rate_hz": 100.0, "reliability": "reliable",
         "max_frame_age_s": 10.0, "target_frame": "base_link"},
    )  # fmt: skip
    assert wait_for(lambda: rig.depth_pub.get_subscription_count() > 0, 10.0)
    s = math.sqrt(0.5)
    static = StaticTransformBroadcaster(tester)
    # camera_static: 90 degrees about z, then (1, 2, 3): base = (-y + 1, x + 2, z + 3).
    static.sendTransform(_tf("base_link", "camera_static", 0, (1.0, 2.0, 3.0), (0.0, 0.0, s, s)))
    time.sleep(0.5)

    now = time.time_ns()
    msg = rig.answer(0, "camera_static", now, done=lambda m: m.detections[0].has_position)
    assert msg.header.frame_id == "base_link"  # the positions' frame, with the image's stamp
    det = _first(msg, 0)
    assert det.has_position
    cx, cy, cz = _camera_point(0)
    assert (det.position.x, det.position.y, det.position.z) == pytest.approx(
        (-cy + 1.0, cx + 2.0, cz + 3.0), abs=0.02
    )
    assert wait_for(lambda: any(stamp_of(m) == stamp_of(msg) for m in three.msgs), 5.0)
    d3 = next(m for m in three.msgs if stamp_of(m) == stamp_of(msg))
    assert d3.header.frame_id == "base_link"
    assert {round(d.bbox.center.position.z, 3) for d in d3.detections} == {
        round(d.position.z, 3) for d in msg.detections
    }

    # camera_moving drives along x: 0 m 100 ms before the image, 1 m 100 ms after; tf2
    # interpolates to 0.5 m at the image's stamp (a stale lookup would give 0 or 1).
    moving = TransformBroadcaster(tester)
    stamp = time.time_ns()
    for dt, x in ((-100_000_000, 0.0), (100_000_000, 1.0)):
        moving.sendTransform(
            _tf("base_link", "camera_moving", stamp + dt, (x, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
        )
    time.sleep(0.3)
    msg = rig.answer(1, "camera_moving", stamp, done=lambda m: m.detections[0].has_position)
    det = _first(msg, 1)
    cx, cy, cz = _camera_point(1)
    assert msg.header.frame_id == "base_link" and det.has_position
    assert (det.position.x, det.position.y, det.position.z) == pytest.approx(
        (cx + 0.5, cy, cz), abs=0.02
    )

    def missing() -> int:
        for m in reversed(diags.msgs):
            for status in m.status:
                if status.hardware_id == ns:
                    values = {kv.key: kv.value for kv in status.values}
                    return int(values.get("missing_transforms", "0"))
        return 0

    # No transform for camera_nowhere: published, in the image's frame, without positions, and
    # counted in /diagnostics (a frame whose depth came too late has no positions to move).
    for _ in range(5):
        rig.answer(2, "camera_nowhere", time.time_ns())
        if wait_for(lambda: missing() >= 1, 2.0):
            break
    assert missing() >= 1, diags.msgs[-1:] if diags.msgs else "no /diagnostics"
    nowhere = [m for m in rig.got.msgs if m.header.frame_id == "camera_nowhere"]
    assert nowhere and all(m.detections for m in nowhere)
    assert not any(d.has_position for m in nowhere for d in m.detections)
