import math
import sys
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from step_perception.core import imaging
from step_perception.core.errors import ImageError
from step_perception.core.imaging import (
    decode_color,
    decode_depth,
    jpeg_size,
    prepare,
    prepare_array,
    source_size,
    target_size,
)
from step_perception.core.types import ImageTransform

BGR = (40, 120, 200)  # a flat colour every encoding can represent


def raw(arr, encoding, *, step=None, bigendian=False, pad=0):
    """An Image-like message with real row bytes (optionally padded rows)."""
    h, w = arr.shape[:2]
    rows = arr.reshape(h, -1).view(np.uint8) if arr.dtype != np.uint8 else arr.reshape(h, -1)
    if pad:
        rows = np.concatenate([rows, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    return SimpleNamespace(
        height=h,
        width=w,
        encoding=encoding,
        is_bigendian=int(bigendian),
        step=rows.shape[1] if step is None else step,
        data=rows.tobytes(),
    )


def compressed(arr, ext=".jpg", fmt="jpeg", params=()):
    ok, enc = cv2.imencode(ext, arr, list(params))
    assert ok
    return SimpleNamespace(format=fmt, data=enc.tobytes())


def flat(h=8, w=12):
    return np.full((h, w, 3), BGR, np.uint8)


def bayer_rggb(bgr):
    h, w = bgr.shape[:2]
    m = np.zeros((h, w), np.uint8)
    m[0::2, 0::2] = bgr[0::2, 0::2, 2]  # R
    m[0::2, 1::2] = bgr[0::2, 1::2, 1]  # G
    m[1::2, 0::2] = bgr[1::2, 0::2, 1]  # G
    m[1::2, 1::2] = bgr[1::2, 1::2, 0]  # B
    return m


@pytest.mark.parametrize(
    ("encoding", "make", "tol"),
    [
        ("bgr8", lambda b: b, 0),
        ("rgb8", lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2RGB), 0),
        ("bgra8", lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2BGRA), 0),
        ("rgba8", lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2RGBA), 0),
        ("8UC3", lambda b: b, 0),
        ("yuv422", lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2YUV_UYVY), 3),
        ("uyvy", lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2YUV_UYVY), 3),
        ("yuyv", lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2YUV_YUYV), 3),
        ("bayer_rggb8", bayer_rggb, 0),
        ("rgb16", lambda b: cv2.cvtColor(b, cv2.COLOR_BGR2RGB).astype(np.uint16) * 257, 1),
    ],
)
def test_colour_encodings_decode_to_bgr(encoding, make, tol):
    src = flat()
    got = decode_color(raw(make(src), encoding))
    assert got.shape == (8, 12, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - src.astype(int)).max() <= tol


def test_mono_encodings():
    grey = np.arange(96, dtype=np.uint8).reshape(8, 12)
    got = decode_color(raw(grey, "mono8"))
    assert (got[..., 0] == grey).all() and (got[..., 2] == grey).all()
    g16 = grey.astype(np.uint16) * 257
    assert (decode_color(raw(g16, "mono16"))[..., 1] == grey).all()
    be = raw(g16.byteswap(), "mono16", bigendian=True)
    assert (decode_color(be)[..., 1] == grey).all()


def test_decoded_image_is_writable_for_drawing():
    got = decode_color(raw(flat(), "bgr8"))
    got[0, 0] = (1, 2, 3)
    assert got.flags.writeable


def test_row_padding_is_ignored():
    src = np.random.default_rng(0).integers(0, 255, (7, 5, 3), dtype=np.uint8)
    padded = raw(src, "bgr8", pad=9)
    assert padded.step == 5 * 3 + 9
    assert (decode_color(padded) == src).all()


def test_rclpy_like_array_data_works():
    import array

    src = flat()
    msg = raw(src, "bgr8")
    msg.data = array.array("B", msg.data)
    assert (decode_color(msg) == src).all()


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda m: setattr(m, "step", 10), "step"),
        (lambda m: setattr(m, "data", m.data[:-1]), "bytes"),
        (lambda m: setattr(m, "encoding", "weird42"), "encoding"),
        (lambda m: setattr(m, "encoding", "nv12"), "encoding"),
        (lambda m: setattr(m, "width", 0), "empty"),
        (lambda m: setattr(m, "data", object()), "byte buffer"),
        (lambda m: delattr(m, "step"), "Image"),
    ],
)
def test_malformed_raw_images_raise_image_error(mutate, needle):
    msg = raw(flat(), "bgr8")
    mutate(msg)
    with pytest.raises(ImageError, match=needle):
        decode_color(msg)


def test_depth_encoding_is_not_a_colour_image():
    with pytest.raises(ImageError, match="depth"):
        decode_color(raw(np.ones((4, 4), np.float32), "32FC1"))
    with pytest.raises(ImageError, match="depth"):
        decode_color(raw(np.ones((4, 4), np.uint16), "16UC1"))


def test_odd_width_yuv_raises_image_error_not_crash():
    msg = raw(np.zeros((4, 3, 2), np.uint8), "yuyv")
    with pytest.raises(ImageError):
        decode_color(msg)


def test_compressed_jpeg_and_png_decode():
    src = flat(20, 30)
    jpg = decode_color(compressed(src, ".jpg", params=(cv2.IMWRITE_JPEG_QUALITY, 100)))
    assert jpg.shape == (20, 30, 3) and np.abs(jpg.astype(int) - src).max() <= 4
    png = decode_color(compressed(src, ".png", "png"))
    assert (png == src).all()


@pytest.mark.parametrize(
    "data", [b"", b"\xff\xd8\xff\xe0garbage", b"not an image at all", bytes(range(256)) * 4]
)
def test_corrupt_compressed_bytes_raise_image_error(data):
    with pytest.raises(ImageError):
        prepare(SimpleNamespace(format="jpeg", data=data), max_side=64)


def test_depth_16uc1_mm_and_32fc1_m():
    mm = np.array([[0, 1000], [1500, 65535]], np.uint16)
    d = decode_depth(raw(mm, "16UC1"))
    assert d.dtype == np.float32 and math.isnan(d[0, 0])
    assert d[0, 1] == 1.0 and d[1, 0] == 1.5 and d[1, 1] == pytest.approx(65.535)
    be = decode_depth(raw(mm.byteswap(), "16UC1", bigendian=sys.byteorder == "little"))
    assert np.array_equal(be, d, equal_nan=True)
    m = np.array([[np.nan, 2.5], [-1.0, np.inf]], np.float32)
    d = decode_depth(raw(m, "32FC1"))
    assert d[0, 1] == 2.5 and np.isnan(d[0, 0]) and np.isnan(d[1, 0]) and np.isnan(d[1, 1])


def test_compressed_depth_png():
    mm = np.array([[0, 500], [2000, 3000]], np.uint16)
    _ok, png = cv2.imencode(".png", mm)
    msg = SimpleNamespace(format="16UC1; compressedDepth png", data=bytes(12) + png.tobytes())
    d = decode_depth(msg)
    assert np.isnan(d[0, 0]) and d[1, 1] == 3.0


def test_bad_depth_raises():
    with pytest.raises(ImageError, match="depth encoding"):
        decode_depth(raw(flat(), "bgr8"))
    with pytest.raises(ImageError):
        decode_depth(SimpleNamespace(format="jpeg", data=b"\xff\xd8"))


def test_target_size_examples():
    assert target_size(1920, 1080, 728) == (728, 410)
    assert target_size(640, 480, 728) == (640, 480)  # never upscales
    assert target_size(1080, 1920, 728) == (410, 728)
    w, h = target_size(1920, 1080, 4096, max_pixels=100_000)
    assert w * h <= 100_000 and abs(w / h - 16 / 9) < 0.02


@settings(max_examples=300, deadline=None)
@given(
    w=st.integers(1, 10_000),
    h=st.integers(1, 10_000),
    side=st.integers(16, 4096),
    budget=st.one_of(st.just(0), st.integers(1024, 4_000_000)),
)
def test_target_size_properties(w, h, side, budget):
    tw, th = target_size(w, h, side, budget)
    assert 1 <= tw <= w and 1 <= th <= h
    assert max(tw, th) <= max(side, 1) or (tw, th) == (1, 1)
    if budget:
        assert tw * th <= budget
    if min(tw, th) > 20:  # aspect kept to rounding
        assert abs(tw / th - w / h) <= (w / h) * (2.0 / min(tw, th))


@settings(max_examples=300, deadline=None)
@given(
    sx=st.floats(0.01, 100),
    sy=st.floats(0.01, 100),
    x=st.floats(-1e4, 1e4),
    y=st.floats(-1e4, 1e4),
)
def test_transform_round_trip(sx, sy, x, y):
    t = ImageTransform(sx, sy)
    bx, by = t.to_sent(*t.to_source(x, y))
    assert bx == pytest.approx(x, rel=1e-9, abs=1e-6) and by == pytest.approx(y, rel=1e-9, abs=1e-6)


def _white_rect_source(w=1920, h=1080, rect=(600, 300, 1000, 700)):
    img = np.zeros((h, w, 3), np.uint8)
    x1, y1, x2, y2 = rect
    img[y1:y2, x1:x2] = 255
    return img, rect


def _rect_in(jpeg_bytes):
    sent = cv2.imdecode(np.frombuffer(jpeg_bytes, np.uint8), cv2.IMREAD_GRAYSCALE)
    ys, xs = np.nonzero(sent > 127)
    return sent.shape, (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


@pytest.mark.parametrize("kind", ["raw", "jpeg", "png"])
def test_prepare_keeps_an_exact_transform(kind):
    img, rect = _white_rect_source()
    if kind == "raw":
        msg = raw(img, "bgr8")
    elif kind == "jpeg":
        msg = compressed(img, ".jpg", params=(cv2.IMWRITE_JPEG_QUALITY, 95))
    else:
        msg = compressed(img, ".png", "png")
    p = prepare(msg, max_side=728, jpeg_quality=90)
    assert (p.width, p.height) == (728, 410) and p.mime == "image/jpeg"
    assert (p.source_width, p.source_height) == (1920, 1080)
    assert p.data_url().startswith("data:image/jpeg;base64,")
    shape, (x1, y1, x2, y2) = _rect_in(p.data)
    assert shape == (410, 728)
    sx1, sy1 = p.transform.to_source(x1, y1)
    sx2, sy2 = p.transform.to_source(x2, y2)
    tol = 1.5 * p.transform.scale_x  # one sent pixel of JPEG/area blur
    for got, want in zip((sx1, sy1, sx2, sy2), rect, strict=True):
        assert abs(got - want) <= tol


def test_jpeg_that_must_shrink_is_decoded_reduced(monkeypatch):
    img, _ = _white_rect_source(3840, 2160, (1000, 500, 2000, 1500))
    msg = compressed(img)
    seen = []
    real = cv2.imdecode

    def spy(buf, flags):
        seen.append(flags)
        return real(buf, flags)

    monkeypatch.setattr(imaging.cv2, "imdecode", spy)
    p = prepare(msg, max_side=728)
    assert (p.width, p.height) == (728, 410)
    no_orient = ~cv2.IMREAD_IGNORE_ORIENTATION
    assert seen and seen[0] & no_orient == cv2.IMREAD_REDUCED_COLOR_4
    assert p.transform.scale_x == pytest.approx(3840 / 728)
    seen.clear()
    prepare(msg, max_side=3000)  # shrink < 2x: full decode
    assert seen[0] & no_orient == cv2.IMREAD_COLOR


def test_jpeg_size_reads_header_only():
    for shape in ((37, 53), (1080, 1920)):
        img = np.zeros((*shape, 3), np.uint8)
        for params in ((), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1)):
            data = cv2.imencode(".jpg", img, list(params))[1].tobytes()
            assert jpeg_size(data) == (shape[1], shape[0])
    assert jpeg_size(b"\x89PNG....") is None
    assert jpeg_size(b"\xff\xd8\xff") is None
    assert source_size(raw(flat(), "bgr8")) == (12, 8)


def test_prepare_array_and_quality_bounds():
    img, _ = _white_rect_source(800, 600, (0, 0, 10, 10))
    p = prepare_array(img, max_side=400, jpeg_quality=50)
    assert (p.width, p.height) == (400, 300)
    with pytest.raises(ImageError):
        prepare_array(img, max_side=400, jpeg_quality=0)
    with pytest.raises(ImageError):
        prepare_array(img[..., 0], max_side=400)


def test_real_message_classes_rosbags_and_rclpy():
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_JAZZY)
    header = ts.types["std_msgs/msg/Header"](ts.types["builtin_interfaces/msg/Time"](1, 2), "cam")
    src = np.random.default_rng(3).integers(0, 255, (6, 10, 3), dtype=np.uint8)
    rgb = np.ascontiguousarray(src[..., ::-1])
    bag_img = ts.types["sensor_msgs/msg/Image"](header, 6, 10, "rgb8", 0, 30, rgb.reshape(-1))
    assert (decode_color(bag_img) == src).all()
    png = cv2.imencode(".png", src)[1].reshape(-1)
    bag_cmp = ts.types["sensor_msgs/msg/CompressedImage"](header, "png", png)
    assert (decode_color(bag_cmp) == src).all()

    import sensor_msgs.msg as msg_mod

    m = msg_mod.Image(height=6, width=10, encoding="rgb8", step=30, data=rgb.tobytes())
    assert (decode_color(m) == src).all()
    c = msg_mod.CompressedImage(format="png", data=png.tobytes())
    assert prepare(c, max_side=5).width == 5
