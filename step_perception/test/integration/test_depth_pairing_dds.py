"""Depth pairing over real DDS, against a driver that stamps colour and depth on its own.

``core/sync.py`` documents the pairing against ``message_filters``' ExactTime (equal stamps
only): ours pairs a colour frame with the nearest depth stamp within 25 ms. Here a driver
publishes colour + depth at 5 fps with a fixed 12 ms offset, then with +-8 ms jitter (depth
sometimes published before its colour frame), then 40 ms off. Each depth frame is a flat wall
at its own distance, so the z of a detection says which depth frame it was paired with.
"""

from __future__ import annotations

import random
import time
from typing import Any

import numpy as np
import pytest
from ros_harness import Camera, Collector, H, W, qos, stamp_of, wait_for

pytestmark = [pytest.mark.ros]

MS = 1_000_000
FRAMES = 6


def _wall(mm: int, stamp_ns: int) -> Any:
    """A 16UC1 depth frame of a flat wall ``mm`` away, stamped ``stamp_ns`` (its own header)."""
    from sensor_msgs.msg import Image

    img = Image(height=H, width=W, encoding="16UC1", is_bigendian=0, step=W * 2)
    img.header.frame_id = "camera_optical"
    img.header.stamp.sec, img.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    img.data = np.full((H, W), mm, dtype=np.uint16).tobytes()
    return img


def test_offset_and_jitter_pair_each_colour_frame_with_its_own_depth(
    tester: Any, launch: Any, model_server: Any
) -> None:
    from sensor_msgs.msg import CameraInfo, Image

    from step_perception_msgs.msg import ObjectDetectionArray

    ns = "/it_pairing"
    got = Collector(tester, ObjectDetectionArray, f"{ns}/detections")
    info_pub = tester.create_publisher(CameraInfo, f"{ns}/camera_info", qos(True))
    depth_pub = tester.create_publisher(Image, f"{ns}/depth/image_raw", qos(True, depth=4))
    camera = Camera(tester, f"{ns}/image_raw", reliable=True)
    launch(
        ns,
        {"backend": "openai", "endpoint": model_server.url(), "model": "test-model",
         "use_depth": True, "rate_hz": 100.0, "reliability": "reliable",
         "max_frame_age_s": 10.0},
    )  # fmt: skip
    assert camera.wait_matched() and wait_for(lambda: depth_pub.get_subscription_count() > 0, 10)
    info = CameraInfo(width=W, height=H)
    info.k = [500.0, 0.0, W / 2, 0.0, 500.0, H / 2, 0.0, 0.0, 1.0]
    info_pub.publish(info)
    time.sleep(0.3)
    rng = random.Random(7)
    offsets = {
        "fixed": [12 * MS] * FRAMES,
        "jitter": [rng.randint(-8 * MS, 8 * MS) for _ in range(FRAMES)],
        "too_far": [40 * MS] * FRAMES,
    }
    wall_mm: dict[int, int] = {}  # colour stamp -> the distance of its own depth frame
    for phase, (name, offs) in enumerate(offsets.items()):
        for i, off in enumerate(offs):
            info_pub.publish(info)
            stamp = time.time_ns()
            mm = 1000 + 50 * (phase * FRAMES + i)
            wall_mm[stamp] = mm
            depth = _wall(mm, stamp + off)
            if name == "jitter" and i % 2:
                depth_pub.publish(depth)  # this driver sometimes sends depth first
                camera.publish_one(0, stamp_ns=stamp)
            else:
                camera.publish_one(0, stamp_ns=stamp)
                depth_pub.publish(depth)
            # An unpaired frame is held for its depth for 0.5 s and a newer one replaces it:
            # space those out so that each is released (without positions) before the next.
            time.sleep(0.7 if name == "too_far" else 0.2)
    wait_for(lambda: len({stamp_of(m) for m in got.msgs} & set(wall_mm)) >= 3 * FRAMES, 10)
    answers = {stamp_of(m): m for m in got.msgs if stamp_of(m) in wall_mm}
    stamps = sorted(wall_mm)
    for phase, name in enumerate(offsets):
        mine = stamps[phase * FRAMES : (phase + 1) * FRAMES]
        answered = [answers[s] for s in mine if s in answers]
        assert len(answered) >= FRAMES - 1, (name, len(answered))  # at most one lost to DDS
        for msg in answered:
            z = {round(d.position.z, 3) for d in msg.detections if d.has_position}
            if name == "too_far":  # 40 ms > 25 ms tolerance: no pair, so no positions
                assert not z, (name, z)
                continue
            # Paired with its own depth frame, never a neighbour (50 mm apart).
            assert z == {wall_mm[stamp_of(msg)] / 1000}, (name, z, wall_mm[stamp_of(msg)])
