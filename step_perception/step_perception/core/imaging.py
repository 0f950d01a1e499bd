"""Image messages to arrays, and arrays to the small JPEG the model sees.

Messages are duck-typed: anything with the fields of ``sensor_msgs/Image``
(``height, width, encoding, is_bigendian, step, data``) or
``sensor_msgs/CompressedImage`` (``format, data``) works, so rclpy messages and
rosbags messages go through the same code. Pixel conversions are done by
``rosbags-image`` and OpenCV; this module only checks sizes and picks the
cheapest path (a JPEG that must shrink by 2x or more is decoded at reduced
size by libjpeg instead of decoded in full and resized).

Pixel coordinates are continuous: pixel ``i`` covers ``[i, i + 1)``. Under this
convention the map from sent pixels to source pixels is exactly
``source = sent * (source_size / sent_size)``, which ``PreparedImage.transform``
records.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import Any, cast

import cv2
import numpy as np
import numpy.typing as npt
from rosbags.image import ImageError as RosbagsImageError
from rosbags.image.image import convert_color, to_cvtype

from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import ImageError
from step_perception.core.profiles import get_profile
from step_perception.core.tokens import Detail, SendSize, most_pixels_within
from step_perception.core.types import ImageTransform, PreparedImage

__all__ = [
    "Sizer",
    "decode_color",
    "decode_depth",
    "is_compressed",
    "jpeg_size",
    "prepare",
    "prepare_array",
    "prepare_array_for",
    "prepare_for",
    "send_size",
    "source_size",
    "target_size",
]

BGRImage = npt.NDArray[np.uint8]
DepthImage = npt.NDArray[np.float32]

# Encodings that are depth, never colour (mono16 is both: a 16-bit grey image or depth in mm).
_DEPTH_ONLY_ENCODINGS = ("16UC1", "32FC1")
# Encodings rosbags knows but whose buffer is not height x step (planar YUV 4:2:0).
_UNSUPPORTED = ("nv12", "nv21")
_REDUCED_FLAGS = {
    8: cv2.IMREAD_REDUCED_COLOR_8,
    4: cv2.IMREAD_REDUCED_COLOR_4,
    2: cv2.IMREAD_REDUCED_COLOR_2,
}
_COLOR_FLAGS = cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION


def is_compressed(msg: object) -> bool:
    """Return whether ``msg`` looks like a CompressedImage (has ``format``, as rosbags decides)."""
    return hasattr(msg, "format")


def _bytes_of(data: object) -> npt.NDArray[np.uint8]:
    """Return the message's byte buffer as a flat uint8 array (no copy where possible)."""
    try:
        return np.frombuffer(cast(Any, data), dtype=np.uint8)
    except (TypeError, ValueError, BufferError):
        try:
            return np.asarray(data, dtype=np.uint8).reshape(-1)
        except (TypeError, ValueError, OverflowError) as err:
            raise ImageError(f"image data is not a byte buffer ({type(data).__name__})") from err


def _raw_array(msg: object) -> tuple[np.ndarray[Any, Any], str]:
    """View a raw Image's buffer as an (h, w[, c]) array of its encoding's dtype."""
    try:
        height = int(cast(Any, msg).height)
        width = int(cast(Any, msg).width)
        step = int(cast(Any, msg).step)
        encoding = str(cast(Any, msg).encoding)
        bigendian = bool(cast(Any, msg).is_bigendian)
        data = cast(Any, msg).data
    except (AttributeError, TypeError, ValueError) as err:
        raise ImageError(f"not an Image message: {err}") from err
    if encoding in _UNSUPPORTED:
        raise ImageError(f"encoding {encoding!r} is not supported")
    try:
        _, _, typestr, nchan = to_cvtype(encoding)
    except RosbagsImageError as err:
        raise ImageError(f"unknown image encoding {encoding!r}") from err
    if width <= 0 or height <= 0:
        raise ImageError(f"image size {width}x{height} is empty")
    dtype = np.dtype(typestr)
    row_bytes = width * nchan * dtype.itemsize
    if step < row_bytes:
        raise ImageError(f"step {step} < width*bytes_per_pixel {row_bytes} ({encoding})")
    buf = _bytes_of(data)
    if buf.size != step * height:
        raise ImageError(f"data has {buf.size} bytes, expected step*height = {step * height}")
    rows = np.ascontiguousarray(buf.reshape(height, step)[:, :row_bytes])
    arr = rows.view(dtype)
    if bigendian != (sys.byteorder == "big") and dtype.itemsize > 1:
        arr = arr.byteswap()
    shape = (height, width) if nchan == 1 else (height, width, nchan)
    return arr.reshape(shape), encoding


def decode_color(msg: object) -> BGRImage:
    """Decode an Image or CompressedImage to a writable 8-bit BGR array (h, w, 3).

    ``ImageError`` on an unknown encoding, inconsistent sizes or corrupt bytes.
    """
    out = _decode_color(msg)
    # A bgr8 message without row padding decodes to a view of the message's bytes.
    return out if out.flags.writeable else out.copy()


def _decode_color(msg: object) -> BGRImage:
    if is_compressed(msg):
        return _imdecode(msg, _COLOR_FLAGS)
    arr, encoding = _raw_array(msg)
    if encoding in _DEPTH_ONLY_ENCODINGS:
        raise ImageError(f"encoding {encoding!r} is depth, not a colour image")
    try:
        out = convert_color(arr, encoding, "bgr8")
    except (RosbagsImageError, cv2.error) as err:
        raise ImageError(f"cannot convert {encoding!r} to bgr8: {err}") from err
    out = np.ascontiguousarray(out, dtype=np.uint8)
    if out.ndim != 3 or out.shape[2] != 3:
        raise ImageError(f"encoding {encoding!r} did not convert to 3 channels")
    return cast(BGRImage, out)


def _imdecode(msg: object, flags: int) -> BGRImage:
    buf = _bytes_of(getattr(msg, "data", None))
    fmt = str(getattr(msg, "format", ""))
    if "compresseddepth" in fmt.lower():
        raise ImageError(f"compressed format {fmt!r} is depth, not a colour image")
    if buf.size == 0:
        raise ImageError("compressed image has no data")
    try:
        img = cv2.imdecode(buf, flags)
    except cv2.error as err:
        raise ImageError(f"cannot decode compressed image ({fmt!r}): {err}") from err
    if img is None or img.size == 0:
        raise ImageError(f"cannot decode compressed image ({fmt!r}, {buf.size} bytes)")
    return cast(BGRImage, img)


def decode_depth(msg: object) -> DepthImage:
    """Decode a depth image to float32 metres (h, w); invalid pixels are NaN.

    Accepts ``16UC1``/``mono16`` in millimetres (0 = no return), ``32FC1`` in
    metres (non-finite or <= 0 = no return), and a ``compressedDepth`` PNG of
    16-bit millimetres (image_transport's compressed depth).
    """
    if is_compressed(msg):
        fmt = str(getattr(msg, "format", ""))
        buf = _bytes_of(getattr(msg, "data", None))
        if "compresseddepth" not in fmt.lower() or "16uc1" not in fmt.lower():
            raise ImageError(f"compressed depth format {fmt!r} is not supported")
        # compressedDepth: a 12-byte config header, then a 16-bit PNG.
        try:
            mm = cv2.imdecode(buf[12:], cv2.IMREAD_UNCHANGED)
        except cv2.error as err:
            raise ImageError(f"cannot decode compressed depth: {err}") from err
        if mm is None or mm.dtype != np.uint16 or mm.ndim != 2:
            raise ImageError("compressed depth is not a 16-bit single-channel PNG")
        return _mm_to_m(mm)
    arr, encoding = _raw_array(msg)
    if encoding in ("16UC1", "mono16"):
        return _mm_to_m(arr)
    if encoding == "32FC1":
        m = np.array(arr, dtype=np.float32)
        m[~np.isfinite(m) | (m <= 0)] = np.nan
        return m
    raise ImageError(f"depth encoding {encoding!r} is not supported (16UC1, mono16, 32FC1)")


def _mm_to_m(mm: np.ndarray[Any, Any]) -> DepthImage:
    m = mm.astype(np.float32) / np.float32(1000.0)
    m[mm == 0] = np.nan
    return cast(DepthImage, m)


def target_size(width: int, height: int, max_side: int, max_pixels: int = 0) -> tuple[int, int]:
    """Return the sent size: aspect kept, longest side <= max_side, area <= max_pixels (if set).

    Never upscales.
    """
    if width <= 0 or height <= 0:
        raise ImageError(f"image size {width}x{height} is empty")
    f = min(1.0, max_side / max(width, height))
    if max_pixels > 0:
        f = min(f, math.sqrt(max_pixels / (width * height)))
    tw = max(1, min(width, round(width * f)))
    th = max(1, min(height, round(height * f)))
    while max_pixels > 0 and tw * th > max_pixels and (tw > 1 or th > 1):
        if tw > 1 and (th == 1 or tw * height >= th * width):
            tw -= 1
        else:
            th -= 1
    return tw, th


def jpeg_size(data: bytes | memoryview) -> tuple[int, int] | None:
    """Return (width, height) from a JPEG's SOF marker without decoding; None if not found."""
    b = bytes(data[:65536]) if len(data) > 65536 else bytes(data)
    if b[:2] != b"\xff\xd8":
        return None
    i, n = 2, len(b)
    while i + 4 <= n:
        if b[i] != 0xFF:
            return None
        marker = b[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # markers without a length
            i += 2
            continue
        seglen = int.from_bytes(b[i + 2 : i + 4], "big")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if i + 9 > n:
                return None
            h = int.from_bytes(b[i + 5 : i + 7], "big")
            w = int.from_bytes(b[i + 7 : i + 9], "big")
            return (w, h) if w > 0 and h > 0 else None
        if seglen < 2:
            return None
        i += 2 + seglen
    return None


def source_size(msg: object) -> tuple[int, int] | None:
    """Return (width, height) of a message without decoding pixels, where cheap; else None."""
    if not is_compressed(msg):
        try:
            return int(cast(Any, msg).width), int(cast(Any, msg).height)
        except (AttributeError, TypeError, ValueError):
            return None
    buf = _bytes_of(getattr(msg, "data", None))
    return jpeg_size(buf[:65536].tobytes())


Sizer = Callable[[int, int], SendSize]


def send_size(config: PerceptionConfig, width: int, height: int) -> SendSize:
    """Return the geometry the node sends a ``width`` x ``height`` frame at (parameter ``detail``).

    ``high``: longest side ``max_image_side`` (and ``max_pixels``). ``balanced``: the most pixels
    whose image tokens (the profile's own count) stay within ``image_token_budget`` (0 = the
    profile's). ``low``: the profile's cheapest geometry (step3p7: 727 px padded to 4:3, 171
    tokens). A profile without a token count takes ``high`` for all three.
    """
    profile = get_profile(config.model_profile)
    if config.detail is Detail.LOW and profile.fewest_tokens is not None:
        return profile.fewest_tokens(width, height)
    if config.detail is Detail.BALANCED and profile.image_tokens is not None:
        budget = config.image_token_budget or profile.image_token_budget
        if budget > 0:
            return most_pixels_within(width, height, budget, profile.image_tokens)
    w, h = target_size(width, height, config.max_image_side, config.max_pixels)
    return SendSize(w, h, w, h)


def prepare_for(msg: object, config: PerceptionConfig) -> PreparedImage:
    """Prepare ``msg`` the way the node does: ``send_size`` geometry, ``jpeg_quality``."""
    return prepare(
        msg,
        max_side=config.max_image_side,
        max_pixels=config.max_pixels,
        jpeg_quality=config.jpeg_quality,
        sizer=lambda w, h: send_size(config, w, h),
    )


def prepare(
    msg: object,
    *,
    max_side: int,
    max_pixels: int = 0,
    jpeg_quality: int = 85,
    sizer: Sizer | None = None,
) -> PreparedImage:
    """Decode, shrink and JPEG-encode an image message for the model.

    A JPEG CompressedImage that must shrink by 2x or more is decoded at 1/2,
    1/4 or 1/8 size by libjpeg. The returned transform maps sent pixels to
    source pixels exactly (see the module docstring). ``sizer`` (source size -> ``SendSize``)
    replaces ``max_side``/``max_pixels`` and may pad the image onto a larger canvas.
    """

    def plan_for(w: int, h: int) -> SendSize:
        if sizer is not None:
            return sizer(w, h)
        tw, th = target_size(w, h, max_side, max_pixels)
        return SendSize(tw, th, tw, th)

    if is_compressed(msg):
        buf = _bytes_of(getattr(msg, "data", None))
        size = jpeg_size(buf[:65536].tobytes())
        if size is not None:
            sw, sh = size
            plan = plan_for(sw, sh)
            tw, th = plan.width, plan.height
            reduction = 1
            for r in (8, 4, 2):
                if sw // r >= tw and sh // r >= th:
                    reduction = r
                    break
            flags = _REDUCED_FLAGS[reduction] if reduction > 1 else _COLOR_FLAGS
            if reduction > 1:
                flags |= cv2.IMREAD_IGNORE_ORIENTATION
            img = _imdecode(msg, flags)
            dh, dw = img.shape[:2]
            if abs(dw - math.ceil(sw / reduction)) > 1 or abs(dh - math.ceil(sh / reduction)) > 1:
                raise ImageError(
                    f"JPEG header says {sw}x{sh} but 1/{reduction} decode gave {dw}x{dh}"
                )
            return _finish(img, sw, sh, plan, jpeg_quality)
        img = _imdecode(msg, _COLOR_FLAGS)
    else:
        img = _decode_color(msg)  # read-only view is fine: resize/encode only read
    h, w = img.shape[:2]
    return _finish(img, w, h, plan_for(w, h), jpeg_quality)


def prepare_array(
    bgr: BGRImage, *, max_side: int, max_pixels: int = 0, jpeg_quality: int = 85
) -> PreparedImage:
    """Shrink and JPEG-encode an already decoded 8-bit BGR array."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ImageError(f"expected an (h, w, 3) uint8 BGR array, got {bgr.shape} {bgr.dtype}")
    h, w = bgr.shape[:2]
    tw, th = target_size(w, h, max_side, max_pixels)
    return _finish(bgr, w, h, SendSize(tw, th, tw, th), jpeg_quality)


def prepare_array_for(bgr: BGRImage, config: PerceptionConfig) -> PreparedImage:
    """``prepare_array`` with the node's geometry (``send_size``) and ``jpeg_quality``."""
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.dtype != np.uint8:
        raise ImageError(f"expected an (h, w, 3) uint8 BGR array, got {bgr.shape} {bgr.dtype}")
    h, w = bgr.shape[:2]
    return _finish(bgr, w, h, send_size(config, w, h), config.jpeg_quality)


def _finish(img: BGRImage, sw: int, sh: int, plan: SendSize, jpeg_quality: int) -> PreparedImage:
    if not 1 <= jpeg_quality <= 100:
        raise ImageError(f"jpeg_quality {jpeg_quality} is outside [1, 100]")
    tw, th = plan.width, plan.height
    if (img.shape[1], img.shape[0]) != (tw, th):
        img = cast(BGRImage, cv2.resize(img, (tw, th), interpolation=cv2.INTER_AREA))
    if plan.padded:
        # Content at the top-left, black below/right (as Step-3's own square padding): the
        # sent-to-source map stays the pure scale below.
        canvas = np.zeros((plan.canvas_height, plan.canvas_width, 3), dtype=np.uint8)
        canvas[:th, :tw] = img
        img = canvas
    ok, enc = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)])
    if not ok:
        raise ImageError("JPEG encoding failed")
    return PreparedImage(
        data=enc.tobytes(),
        mime="image/jpeg",
        width=plan.canvas_width,
        height=plan.canvas_height,
        transform=ImageTransform(scale_x=sw / tw, scale_y=sh / th),
        source_width=sw,
        source_height=sh,
    )
