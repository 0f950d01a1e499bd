"""Image preparation for the model: ``core.imaging.prepare`` vs naive ways, same inputs and run.

Inputs are rendered tabletop scenes (``tools.scenes.render_scene``, rendered natively at each size,
so sensor noise is at full resolution) wrapped in rosbags ``sensor_msgs`` message objects, which
``prepare`` reads like rclpy messages. Target: longest side 728 (Step-3.7-Flash), JPEG quality 85.

(a) raw ``Image`` bgr8 -> sent JPEG. Ours: a view of the buffer, OpenCV INTER_AREA, OpenCV JPEG.
    Naive: PIL ``frombuffer`` (BGR raw mode) -> ``resize`` LANCZOS or BICUBIC -> PIL JPEG.
(b) ``CompressedImage`` JPEG -> sent JPEG. Ours: libjpeg decodes at 1/2 or 1/4 size
    (``IMREAD_REDUCED_*``), then INTER_AREA to 728. Naive: full ``cv2.imdecode`` + INTER_AREA
    resize + encode, and full PIL decode + LANCZOS + PIL JPEG.

Each case: one warm-up, then the median of ``--repeats`` runs (ms). ``ratio`` = naive / ours.
PSNR compares our sent image with the naive one (decoded), to show the speed is not bought with
a visibly worse image.

    . ./env.sh && python bench/bench_imaging.py [--repeats 15]
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
from PIL import Image as PILImage
from rosbags.typesys import Stores, get_typestore
from step_perception.core.imaging import prepare, target_size
from step_perception_tools.scenes import render_scene

MAX_SIDE = 728
QUALITY = 85
SOURCE_QUALITY = 90  # the camera's JPEG quality for the CompressedImage inputs
SIZES = {"720p": (1280, 720), "1080p": (1920, 1080), "4K": (3840, 2160)}

_TS = get_typestore(Stores.ROS2_JAZZY)
_Header = _TS.types["std_msgs/msg/Header"]
_Time = _TS.types["builtin_interfaces/msg/Time"]
_Image = _TS.types["sensor_msgs/msg/Image"]
_Compressed = _TS.types["sensor_msgs/msg/CompressedImage"]


def _header() -> Any:
    return _Header(stamp=_Time(sec=1, nanosec=0), frame_id="camera_optical")


def _image_msg(bgr: npt.NDArray[np.uint8]) -> Any:
    h, w = bgr.shape[:2]
    data = np.frombuffer(bgr.tobytes(), dtype=np.uint8)
    return _Image(_header(), h, w, "bgr8", 0, 3 * w, data)


def _jpeg_msg(bgr: npt.NDArray[np.uint8]) -> Any:
    ok, enc = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, SOURCE_QUALITY])
    assert ok
    return _Compressed(_header(), "bgr8; jpeg compressed bgr8", enc.reshape(-1))


def _median_ms(fn: Callable[[], bytes], repeats: int) -> tuple[float, bytes]:
    out = fn()  # warm-up (and the output for the quality check)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3, out


def _pil_jpeg(img: PILImage.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=QUALITY)
    return buf.getvalue()


def _naive_pil_raw(msg: Any, resample: PILImage.Resampling) -> Callable[[], bytes]:
    def run() -> bytes:
        size = (int(msg.width), int(msg.height))
        img = PILImage.frombuffer("RGB", size, msg.data, "raw", "BGR", 0, 1)
        return _pil_jpeg(img.resize(target_size(*size, MAX_SIDE), resample))

    return run


def _naive_pil_jpeg(msg: Any) -> Callable[[], bytes]:
    def run() -> bytes:
        img = PILImage.open(io.BytesIO(bytes(msg.data))).convert("RGB")
        return _pil_jpeg(img.resize(target_size(*img.size, MAX_SIDE), PILImage.Resampling.LANCZOS))

    return run


def _naive_cv_jpeg(msg: Any) -> Callable[[], bytes]:
    def run() -> bytes:
        full = cv2.imdecode(np.asarray(msg.data, np.uint8), cv2.IMREAD_COLOR)
        assert full is not None
        h, w = full.shape[:2]
        small = cv2.resize(full, target_size(w, h, MAX_SIDE), interpolation=cv2.INTER_AREA)
        ok, enc = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, QUALITY])
        assert ok
        return bytes(enc.tobytes())

    return run


def _ours(msg: Any) -> Callable[[], bytes]:
    return lambda: prepare(msg, max_side=MAX_SIDE, jpeg_quality=QUALITY).data


def _psnr(a: bytes, b: bytes) -> float:
    x = cv2.imdecode(np.frombuffer(a, np.uint8), cv2.IMREAD_COLOR)
    y = cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR)
    if x is None or y is None or x.shape != y.shape:
        return float("nan")
    return float(cv2.PSNR(x, y))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=15, help="timed runs per case (4K: a third)")
    args = ap.parse_args()
    cv2.setNumThreads(1)  # a fair, single-core comparison: PIL is single-threaded too

    rows = ["| benchmark | case | median | naive median | ratio |", "|---|---|---|---|---|"]
    quality = ["| case | sent size | PSNR ours vs naive |", "|---|---|---|"]
    for name, (w, h) in SIZES.items():
        repeats = max(3, args.repeats // 3) if name == "4K" else args.repeats
        bgr = np.ascontiguousarray(render_scene(7, 0, w, h).rgb[:, :, ::-1])
        tw, th = target_size(w, h, MAX_SIDE)
        raw = _image_msg(bgr)
        ours_ms, ours_out = _median_ms(_ours(raw), repeats)
        for label, resample in (
            ("LANCZOS", PILImage.Resampling.LANCZOS),
            ("BICUBIC", PILImage.Resampling.BICUBIC),
        ):
            naive_ms, naive_out = _median_ms(_naive_pil_raw(raw, resample), repeats)
            rows.append(
                f"| imaging: Image bgr8 {name} -> {tw}x{th} JPEG | prepare vs PIL {label} | "
                f"{ours_ms:.2f} ms | {naive_ms:.2f} ms | {naive_ms / ours_ms:.1f}x |"
            )
            quality.append(
                f"| Image {name} vs PIL {label} | {tw}x{th} | {_psnr(ours_out, naive_out):.1f} dB |"
            )
        if name == "720p":
            continue  # 1280 -> 728 shrinks by less than 2x: no reduced decode to compare
        jpeg = _jpeg_msg(bgr)
        ours_ms, ours_out = _median_ms(_ours(jpeg), repeats)
        for label, naive in (
            ("full cv2 decode + resize", _naive_cv_jpeg(jpeg)),
            ("full PIL decode + LANCZOS", _naive_pil_jpeg(jpeg)),
        ):
            naive_ms, naive_out = _median_ms(naive, repeats)
            rows.append(
                f"| imaging: CompressedImage JPEG {name} ({len(jpeg.data) // 1024} KiB) | "
                f"reduced decode vs {label} | {ours_ms:.2f} ms | {naive_ms:.2f} ms | "
                f"{naive_ms / ours_ms:.1f}x |"
            )
            quality.append(
                f"| JPEG {name} vs {label} | {tw}x{th} | {_psnr(ours_out, naive_out):.1f} dB |"
            )
    print(f"## bench_imaging: to max side {MAX_SIDE}, JPEG q{QUALITY}; median of runs, 1 thread\n")
    print("\n".join(rows))
    print()
    print("\n".join(quality))


if __name__ == "__main__":
    main()
