"""vision_msgs outputs over real DDS, field by field against our own messages of the same frame."""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pytest
from ros_harness import Camera, Collector, H, W, publish_until_answered, qos, stamp_of, wait_for

pytestmark = [pytest.mark.ros]


def _same_score(ours: float, theirs: float) -> bool:
    return (math.isnan(ours) and math.isnan(theirs)) or abs(ours - theirs) < 1e-6


def test_detections_2d_and_3d_match_our_messages(
    tester: Any, launch: Any, model_server: Any
) -> None:
    """Aligned depth: every detection appears in detections_2d, the placed ones in detections_3d."""
    from sensor_msgs.msg import CameraInfo, Image
    from vision_msgs.msg import Detection2DArray, Detection3DArray

    from step_perception_msgs.msg import ObjectDetectionArray

    ns = "/it_vision"
    ours = Collector(tester, ObjectDetectionArray, f"{ns}/detections")
    two = Collector(tester, Detection2DArray, f"{ns}/detections_2d")
    three = Collector(tester, Detection3DArray, f"{ns}/detections_3d")
    info_pub = tester.create_publisher(CameraInfo, f"{ns}/camera_info", qos(True))
    depth_pub = tester.create_publisher(Image, f"{ns}/depth/image_raw", qos(True))
    camera = Camera(tester, f"{ns}/image_raw", reliable=True, frame_id="camera_color_optical")
    launch(
        ns,
        {"backend": "openai", "endpoint": model_server.url(), "model": "test-model",
         "use_depth": True, "rate_hz": 100.0, "reliability": "reliable"},
    )  # fmt: skip
    assert camera.wait_matched()
    assert wait_for(lambda: depth_pub.get_subscription_count() > 0, 10.0)
    info = CameraInfo(width=W, height=H)
    info.k = [500.0, 0.0, W / 2, 0.0, 500.0, H / 2, 0.0, 0.0, 1.0]
    depth = Image(height=H, width=W, encoding="16UC1", is_bigendian=0, step=W * 2)
    depth.data = np.full((H, W), 1200, dtype=np.uint16).tobytes()  # a wall 1.2 m away
    arr = None
    for _ in range(10):  # repeated until answered with positions (a discovery race loses some)
        info_pub.publish(info)
        time.sleep(0.1)
        colour = camera.publish_one(0)
        depth.header = colour.header
        depth_pub.publish(depth)
        want = stamp_of(colour)

        def placed(w: int = want) -> Any:
            return next(
                (m for m in ours.msgs if stamp_of(m) == w and m.detections[0].has_position), None
            )

        if wait_for(lambda: placed() is not None, 1.5):
            arr = placed()
            break
    assert arr is not None, f"no detections with positions: {ours.msgs}"
    stamp = stamp_of(arr)
    assert wait_for(lambda: any(stamp_of(m) == stamp for m in two.msgs), 5.0)
    assert wait_for(lambda: any(stamp_of(m) == stamp for m in three.msgs), 5.0)
    d2 = next(m for m in two.msgs if stamp_of(m) == stamp)
    d3 = next(m for m in three.msgs if stamp_of(m) == stamp)
    assert d2.header.frame_id == d3.header.frame_id == arr.header.frame_id == "camera_color_optical"
    assert len(d2.detections) == len(arr.detections) == 2
    by_id = {d.id: d for d in arr.detections}
    for v in d2.detections:
        o = by_id[v.id]
        assert stamp_of(v) == stamp and v.header.frame_id == "camera_color_optical"
        assert len(v.results) == 1
        assert v.results[0].hypothesis.class_id == o.label == "white cube"
        assert _same_score(o.score, v.results[0].hypothesis.score)
        assert v.bbox.center.position.x == pytest.approx(o.bbox.center_x)
        assert v.bbox.center.position.y == pytest.approx(o.bbox.center_y)
        assert v.bbox.size_x == pytest.approx(o.bbox.size_x)
        assert v.bbox.size_y == pytest.approx(o.bbox.size_y)
        assert v.bbox.center.theta == 0.0
    placed_ids = {d.id for d in arr.detections if d.has_position}
    assert {v.id for v in d3.detections} == placed_ids and placed_ids
    for v in d3.detections:
        o = by_id[v.id]
        assert v.results[0].hypothesis.class_id == o.label
        for got in (v.bbox.center.position, v.results[0].pose.pose.position):
            assert (got.x, got.y, got.z) == pytest.approx(
                (o.position.x, o.position.y, o.position.z)
            )
        assert v.bbox.center.position.z == pytest.approx(1.2, abs=0.01)
        assert v.bbox.center.orientation.w == 1.0


def test_vision_msgs_false_publishes_only_our_messages(
    tester: Any, launch: Any, model_server: Any
) -> None:
    from step_perception_msgs.msg import ObjectDetectionArray

    ns = "/it_no_vision"
    ours = Collector(tester, ObjectDetectionArray, f"{ns}/detections")
    camera = Camera(tester, f"{ns}/image_raw", reliable=True)
    launch(
        ns,
        {"backend": "openai", "endpoint": model_server.url(), "model": "test-model",
         "rate_hz": 100.0, "reliability": "reliable", "vision_msgs": False, "use_depth": True},
    )  # fmt: skip
    publish_until_answered(camera, 1, ours)
    assert tester.count_publishers(f"{ns}/detections") == 1
    assert tester.count_publishers(f"{ns}/detections_2d") == 0
    assert tester.count_publishers(f"{ns}/detections_3d") == 0
