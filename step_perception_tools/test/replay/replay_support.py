"""Helpers of the bag-level tests: run `step-perception` as a separate process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from step_perception.ros.dds_profile import profile_env

_TOOLS_DIR = Path(__file__).resolve().parents[2]  # step_perception_tools/ (the ROS package)
# The source trees of both Python packages, so the child runs this checkout's code.
SOURCE_DIRS = (_TOOLS_DIR, _TOOLS_DIR.parent / "step_perception")


def cli_command(*args: str) -> list[str]:
    """argv running `step-perception ARGS` with this interpreter (no console script needed)."""
    return [sys.executable, "-m", "step_perception_tools.cli", *args]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (*map(str, SOURCE_DIRS), env.get("PYTHONPATH")) if p
    )
    env.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
    # The shipped Fast DDS profile, as env.sh loads it (see ros_harness.dds_env).
    env.update(profile_env(env.get("ROS_DISTRO", ""), SOURCE_DIRS[1] / "config", env))
    env["PYTHONFAULTHANDLER"] = "1"  # a hung child dumps every thread's stack on SIGABRT
    return env


def start_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        cli_command(*args),
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float) -> tuple[str, str]:
    """``proc.communicate(timeout)``; a process that hangs is aborted and its stacks reported.

    With ``PYTHONFAULTHANDLER=1`` (see ``cli_env``) SIGABRT makes the child print the Python
    stack of every thread, so a hang in CI says where it hung.
    """
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        try:
            _out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            _out, err = proc.communicate()
        raise AssertionError(
            f"{proc.args} hung for {timeout} s; its stacks:\n{err[-6000:]}"
        ) from None


# --------------------------------------------------------------------------- truth cassette

# How far the boxes of the truth answer may move through the pipeline and back (sent-image
# rounding only): a box off by one source pixel on a 320x240 scene scores a mean IoU near 0.9.
MIN_TRUTH_MEAN_IOU = 0.995


def _decoded_size(data: bytes) -> tuple[int, int]:
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert img is not None, "undecodable image"
    return int(img.shape[1]), int(img.shape[0])


def truth_answer(truth: Sequence[Any], source: tuple[int, int], sent: tuple[int, int],
                 profile: str) -> str:  # fmt: skip
    """What a perfect model answers, written out here from the truth boxes and the sent size.

    No project code: the sent image is the whole source image resized to ``sent`` (no crop, no
    padding), so a source pixel (x, y) is at (x * sent_w / source_w, y * sent_h / source_h)
    in it. ``qwen2_5_vl`` boxes are in those pixels, ``step3p7``/``generic`` ones in 0-1000 of
    the sent image, both [x1, y1, x2, y2] under "bbox_2d".
    """
    (src_w, src_h), (sent_w, sent_h) = source, sent
    objects = []
    for d in truth:
        xs = [d.box.x1 * sent_w / src_w, d.box.x2 * sent_w / src_w]
        ys = [d.box.y1 * sent_h / src_h, d.box.y2 * sent_h / src_h]
        if profile == "qwen2_5_vl":
            box = [xs[0], ys[0], xs[1], ys[1]]
        elif profile in ("step3p7", "generic"):
            box = [xs[0] / sent_w * 1000, ys[0] / sent_h * 1000,
                   xs[1] / sent_w * 1000, ys[1] / sent_h * 1000]  # fmt: skip
        else:
            raise AssertionError(f"no truth answer written out for profile {profile}")
        objects.append({"label": d.label, "bbox_2d": [round(v, 3) for v in box], "score": 1.0})
    return json.dumps({"objects": objects, "summary": f"{len(objects)} objects"})


def write_truth_cassette(frames: Iterable[Any], config: Any, path: Path) -> int:
    """A replay cassette answering each frame with its ground truth (``truth_answer``).

    Only the cassette key (which image bytes and which prompt the node sends) comes from the
    pipeline, since the replay backend looks answers up by it; the answer does not. The sent
    size is read from the sent JPEG itself.
    """
    from step_perception.backends.cassette import CassetteEntry
    from step_perception.core.imaging import prepare
    from step_perception.core.prompts import build_request

    n = 0
    with path.open("a", encoding="utf-8") as out:
        for frame in frames:
            if frame.truth is None:
                continue
            msg = frame.image
            source = (
                (int(msg.width), int(msg.height))
                if hasattr(msg, "width")
                else _decoded_size(bytes(msg.data))
            )
            image = prepare(
                msg,
                max_side=config.max_image_side,
                max_pixels=config.max_pixels,
                jpeg_quality=config.jpeg_quality,
            )
            request = build_request(config, image)
            sent = _decoded_size(image.data)
            text = truth_answer(frame.truth, source, sent, config.model_profile)
            entry = CassetteEntry(
                key=request.cache_key(),
                model=request.model,
                profile=request.profile,
                image_sha256=image.sha256,
                text=text,
                latency_s=0.0,
                endpoint="truth",
                usage=None,
                attempts=1,
            )
            out.write(entry.to_json() + "\n")
            n += 1
    return n
