"""`step-perception make-scenes`: the bag reads back with the scenes' content, and truth is
consistent with depth and K (no ROS needed)."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from step_perception.core.geometry import back_project
from step_perception_tools.make_scenes import SCENES_START_NS
from step_perception_tools.scenes import LABELS, render_scene

from step_perception_tools import bags, cli

SEED, COUNT, W, H = 3, 4, 640, 360


@pytest.fixture(scope="module")
def scenes_bag(tmp_path_factory):
    out = tmp_path_factory.mktemp("scenes") / "bag"
    argv = ["make-scenes", "--out", str(out), "--count", str(COUNT), "--seed", str(SEED)]
    argv += ["--width", str(W), "--height", str(H), "--fps", "30", "--jobs", "1"]
    assert cli.main(argv) == 0
    return out


def test_round_trip_matches_the_rendered_scenes(scenes_bag):
    frames = list(bags.read_scene_frames(scenes_bag))
    assert len(frames) == COUNT
    stamps = [f.stamp_ns for f in frames]
    assert stamps == [SCENES_START_NS + round(i * 1e9 / 30) for i in range(COUNT)]
    for i, frame in enumerate(frames):
        scene = render_scene(SEED, i, W, H)
        assert frame.frame_id == "camera_color_optical_frame"
        assert frame.image.encoding == "rgb8"
        np.testing.assert_array_equal(frame.rgb, scene.rgb)
        np.testing.assert_array_equal(frame.depth_mm, scene.depth_mm)
        assert frame.depth.encoding == "16UC1"
        assert frame.intrinsics == scene.intrinsics
        assert frame.truth is not None and len(frame.truth) == len(scene.objects)
        for det, obj in zip(frame.truth, scene.objects, strict=True):
            assert det.label == obj.label and det.label in LABELS
            box = (det.box.x1, det.box.y1, det.box.x2, det.box.y2)
            assert box == pytest.approx(obj.box, abs=1e-9)
            assert det.position is not None
            assert (det.position.x, det.position.y, det.position.z) == obj.position


def test_bag_topics_types_and_camera_info(scenes_bag):
    with Reader(scenes_bag) as reader:
        types = {c.topic: (c.msgtype, c.msgcount) for c in reader.connections}
        info_conn = next(c for c in reader.connections if c.topic == "/camera/camera_info")
        _, _, raw = next(reader.messages(connections=[info_conn]))
    assert types == {
        "/camera/image_raw": ("sensor_msgs/msg/Image", COUNT),
        "/camera/image_raw/compressed": ("sensor_msgs/msg/CompressedImage", COUNT),
        "/camera/camera_info": ("sensor_msgs/msg/CameraInfo", COUNT),
        "/camera/depth/image_raw": ("sensor_msgs/msg/Image", COUNT),
        "/camera/ground_truth": ("step_perception_msgs/msg/ObjectDetectionArray", COUNT),
    }
    info = bags.typestore().deserialize_cdr(raw, "sensor_msgs/msg/CameraInfo")
    k = render_scene(SEED, 0, W, H).intrinsics
    assert info.distortion_model == "plumb_bob" and not info.d.any()
    assert list(info.k) == [k.fx, 0, k.cx, 0, k.fy, k.cy, 0, 0, 1]
    assert list(info.p) == [k.fx, 0, k.cx, 0, 0, k.fy, k.cy, 0, 0, 0, 1, 0]
    assert (info.width, info.height) == (W, H)


def test_compressed_frames_are_the_same_scene(scenes_bag):
    raw = next(iter(bags.read_scene_frames(scenes_bag)))
    jpeg = next(iter(bags.read_scene_frames(scenes_bag, compressed=True)))
    assert jpeg.image.format.startswith("rgb8; jpeg")
    assert np.abs(jpeg.rgb.astype(int) - raw.rgb.astype(int)).mean() < 4


def test_truth_back_projects_onto_its_position(scenes_bag):
    """Box centre + the bag's depth at it + the bag's K land on the truth position (1 cm)."""
    checked = 0
    for frame in bags.read_scene_frames(scenes_bag):
        assert frame.truth and frame.intrinsics and frame.depth_mm is not None
        for det in frame.truth:
            u, v = det.box.center
            z = frame.depth_mm[int(v), int(u)] / 1000.0
            assert 0.3 < z < 3.0
            p = back_project(u, v, z, frame.intrinsics, W, H)
            assert det.position is not None
            assert p.distance(det.position) < 0.01, (det.label, p, det.position)
            checked += 1
    assert checked >= COUNT


def test_sqlite3_storage_and_bgr8(tmp_path):
    out = tmp_path / "bag"
    argv = ["make-scenes", "--out", str(out), "--count", "2", "--width", "320", "--height", "240"]
    assert cli.main([*argv, "--storage", "sqlite3", "--encoding", "bgr8", "--jobs", "2"]) == 0
    assert (out / "bag.db3").is_file()
    frames = list(bags.read_scene_frames(out))
    assert [f.image.encoding for f in frames] == ["bgr8", "bgr8"]
    np.testing.assert_array_equal(frames[1].rgb, render_scene(0, 1, 320, 240).rgb)


def test_refuses_to_overwrite(scenes_bag, capsys):
    assert cli.main(["make-scenes", "--out", str(scenes_bag), "--count", "1"]) == 1
    assert "exists" in capsys.readouterr().err
