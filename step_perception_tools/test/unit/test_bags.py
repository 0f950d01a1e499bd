"""Scene bags written with SceneBagWriter read back with the same content (no ROS needed)."""

from __future__ import annotations

import numpy as np
import pytest
from rosbags.rosbag2 import Reader
from step_perception.core.types import Box2D, CameraIntrinsics, Detection, Point3

from step_perception_tools import bags

W, H = 64, 48
K = CameraIntrinsics(fx=50.0, fy=51.0, cx=31.5, cy=23.5, width=W, height=H)
T0 = 1_767_225_600 * 1_000_000_000


def _frame(i: int) -> tuple[np.ndarray, np.ndarray, tuple[Detection, ...]]:
    rng = np.random.default_rng(i)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = rng.integers(0, 3000, (H, W), dtype=np.uint16)
    truth = (
        Detection("0", "red cube", Box2D(1.0, 2.0, 10.5, 20.25), 1.0, "", Point3(0.1, -0.2, 1.5)),
        Detection("1", "blue mug", Box2D(30.0, 5.0, 60.0, 40.0), 1.0, "", Point3(0.4, 0.0, 0.75)),
    )[: 1 + i % 2]
    return rgb, depth, truth


@pytest.mark.parametrize("storage", list(bags.Storage))
@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_scene_bag_round_trip(tmp_path, storage, encoding):
    path = tmp_path / "scenes"
    frames = [_frame(i) for i in range(3)]
    stamps = [T0 + i * 66_666_667 for i in range(3)]
    with bags.SceneBagWriter(path, storage=storage, encoding=encoding) as writer:
        for stamp, (rgb, depth, truth) in zip(stamps, frames, strict=True):
            writer.write(stamp, rgb, depth, K, truth)

    suffix = ".mcap" if storage is bags.Storage.MCAP else ".db3"
    assert (path / f"scenes{suffix}").is_file() and (path / "metadata.yaml").is_file()
    with Reader(path) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
    topics = bags.CameraTopics()
    assert counts == {
        topics.image: 3,
        topics.compressed: 3,
        topics.camera_info: 3,
        topics.depth: 3,
        topics.truth: 3,
    }

    got = list(bags.read_scene_frames(path))
    assert [f.stamp_ns for f in got] == stamps
    for frame, (rgb, depth, truth) in zip(got, frames, strict=True):
        assert frame.frame_id == bags.DEFAULT_FRAME_ID
        np.testing.assert_array_equal(frame.rgb, rgb)
        assert frame.depth_mm is not None
        np.testing.assert_array_equal(frame.depth_mm, depth)
        assert frame.intrinsics == K
        assert frame.truth is not None
        assert len(frame.truth) == len(truth)
        for a, b in zip(frame.truth, truth, strict=True):
            assert (a.id, a.label, a.score, a.position) == (b.id, b.label, b.score, b.position)
            assert a.box.x1 == pytest.approx(b.box.x1) and a.box.y2 == pytest.approx(b.box.y2)
            assert a.box.x2 == pytest.approx(b.box.x2) and a.box.y1 == pytest.approx(b.box.y1)


def test_compressed_topic_and_stamp_filter(tmp_path):
    path = tmp_path / "scenes"
    frames = [_frame(i) for i in range(4)]
    with bags.SceneBagWriter(path) as writer:
        for i, (rgb, depth, truth) in enumerate(frames):
            writer.write(T0 + i * 10**8, rgb, depth, K, truth)
    got = list(bags.read_scene_frames(path, compressed=True, stamps={T0 + 2 * 10**8}))
    assert [f.stamp_ns for f in got] == [T0 + 2 * 10**8]
    assert got[0].depth_mm is not None and got[0].truth is not None


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8"])
def test_jpeg_keeps_colour_order(tmp_path, encoding):
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[:, : W // 2] = (220, 20, 20)  # red left
    rgb[:, W // 2 :] = (20, 20, 220)  # blue right
    _, depth, truth = _frame(0)
    with bags.SceneBagWriter(tmp_path / "s", encoding=encoding) as writer:
        writer.write(T0, rgb, depth, K, truth)
    (frame,) = bags.read_scene_frames(tmp_path / "s", compressed=True)
    assert np.abs(frame.rgb.astype(int) - rgb.astype(int)).mean() < 6
    assert frame.rgb[H // 2, 4, 0] > 180 and frame.rgb[H // 2, W - 4, 2] > 180


def test_truth_reads_as_detections(tmp_path):
    path = tmp_path / "scenes"
    rgb, depth, truth = _frame(1)
    with bags.SceneBagWriter(path) as writer:
        writer.write(T0, rgb, depth, K, truth)
    got = bags.read_detections(path)  # the one ObjectDetectionArray topic
    assert len(got) == 1
    assert (got[0].stamp_ns, got[0].log_ns, got[0].width, got[0].height) == (T0, T0, W, H)
    assert [d.label for d in got[0].detections] == ["red cube", "blue mug"]


def test_bad_inputs_raise_bag_error(tmp_path):
    rgb, depth, truth = _frame(0)
    with bags.SceneBagWriter(tmp_path / "a") as writer:
        with pytest.raises(bags.BagError, match="depth"):
            writer.write(T0, rgb, depth[:10], K, truth)
        with pytest.raises(bags.BagError, match="intrinsics"):
            writer.write(T0, rgb, depth, CameraIntrinsics(1, 1, 1, 1, 8, 8), truth)
    with pytest.raises(bags.BagError, match="exists"):
        bags.SceneBagWriter(tmp_path / "a")
    with pytest.raises(bags.BagError, match="cannot open"):
        list(bags.read_scene_frames(tmp_path / "missing"))
    with pytest.raises(bags.BagError, match="no topic"):
        list(bags.read_scene_frames(tmp_path / "a", bags.CameraTopics(image="/nope")))


def test_header_stamp_without_deserialising():
    store = bags.typestore()
    header = bags.header_at(T0 + 123, "x")
    raw = store.serialize_cdr(header, "std_msgs/msg/Header")
    assert bags.header_stamp_ns(raw) == T0 + 123
    with pytest.raises(bags.BagError):
        bags.header_stamp_ns(b"\x00\x01")


def test_mcap_decodes_with_an_independent_ros2_reader(tmp_path):
    """The MCAP reader Foxglove's Python tools use decodes every message from the schemas alone."""
    mcap_reader = pytest.importorskip("mcap.reader")
    mcap_ros2 = pytest.importorskip("mcap_ros2.decoder")
    rgb, depth, truth = _frame(1)
    with bags.SceneBagWriter(tmp_path / "s") as writer:
        writer.write(T0, rgb, depth, K, truth)
    with (tmp_path / "s" / "s.mcap").open("rb") as fh:
        reader = mcap_reader.make_reader(fh, decoder_factories=[mcap_ros2.DecoderFactory()])
        got = {
            channel.topic: (schema.encoding, msg)
            for schema, channel, _, msg in reader.iter_decoded_messages()
        }
    assert {enc for enc, _ in got.values()} == {"ros2msg"}
    gt = got["/camera/ground_truth"][1]
    assert [d.label for d in gt.detections] == ["red cube", "blue mug"]
    assert gt.detections[1].position.z == 0.75 and gt.detections[1].has_position
    assert bytes(got["/camera/image_raw"][1].data) == rgb.tobytes()
    assert list(got["/camera/camera_info"][1].k)[:3] == [K.fx, 0.0, K.cx]
