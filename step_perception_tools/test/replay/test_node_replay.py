"""Replay a generated bag into the real node over DDS (replay backend + a cassette answering the
ground truth), record its outputs, twice: both recordings must hold identical outputs, and score
perfectly."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from replay_support import MIN_TRUTH_MEAN_IOU, cli_command, cli_env, write_truth_cassette
from rosbags.rosbag2 import Reader
from step_perception.core.config import PerceptionConfig
from step_perception_tools.evaluate import evaluate

from step_perception_tools import bags

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NS = "/camera"
# The node's parameters; the truth cassette is keyed for exactly these.
PARAMS = {
    "backend": "replay",
    "model_profile": "step3p7",
    "task": "detect",
    "prompt": "",
    "max_image_side": 256,
    "use_depth": True,
    "reliability": "reliable",
    "rate_hz": 100.0,
    "max_inflight": 1,
    "max_frame_age_s": 60.0,
}
COMPARED = ("detections", "scene", "command")  # diagnostics carry timings; not compared


def _ros_value(v: object) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    return str(v) or "''"  # rcl reads values as YAML; an empty one must be quoted


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, env=cli_env(), stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=10)


def _wait_for_log(log: Path, lines: list[str], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        text = log.read_text(errors="replace") if log.exists() else ""
        if all(line in text for line in lines):
            return
        time.sleep(0.1)
    raise AssertionError(f"{log.name} never said {lines}: {text[-2000:]}")


def _run_once(
    scenes: Path,
    cassette: Path,
    out: Path,
    extra: tuple[str, ...] = (),
    expect: str = "lockstep: 8 answered, 0 failed, 0 unanswered",
) -> Path:
    out.mkdir()
    params = {**PARAMS, "cassette": str(cassette), "use_sim_time": True}
    node_argv = [sys.executable, "-m", "step_perception.ros.main", "--ros-args",
                 "-r", f"__ns:={NS}"]  # fmt: skip
    for k, v in params.items():
        node_argv += ["-p", f"{k}:={_ros_value(v)}"]
    node = _start(node_argv, out / "node.log")
    run = out / "run"
    # receive times on the wall clock: latency over /clock is covered by test_record_dds
    recorder = _start(cli_command("record", str(run), "--namespace", NS), out / "record.log")
    try:
        _wait_for_log(out / "record.log", [f"matched {NS}/{t}" for t in ("detections", "scene")])
        replay = subprocess.run(
            # lockstep: one frame in flight, so the node's keep-last-1 inputs drop nothing
            cli_command("replay", str(scenes), "--reliable", "--clock",
                        "--wait-for-subscribers", "30", "--delay", "2", "--quiet",
                        "--lockstep", f"{NS}/detections", "--lockstep-timeout", "20",
                        "--topics", f"{NS}/image_raw", f"{NS}/camera_info",
                        f"{NS}/depth/image_raw", *extra),
            env=cli_env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert replay.returncode == 0, replay.stderr
        assert "no subscriber" not in replay.stderr, replay.stderr
        assert expect in replay.stderr, replay.stderr
        time.sleep(2.0)  # the last answers reach the recorder
        assert node.poll() is None, (out / "node.log").read_text()[-3000:]
    finally:
        assert _stop(recorder) == 0, (out / "record.log").read_text()[-3000:]
        _stop(node)
    return run


def _outputs(run: Path) -> dict[str, list[object]]:
    # Decoded, not raw: Fast DDS leaves CDR alignment padding uninitialised, so equal
    # messages can differ in their padding bytes.
    store = bags.typestore()
    with Reader(run) as reader:
        conns = [c for c in reader.connections if c.topic.rsplit("/", 1)[-1] in COMPARED]
        got: dict[str, list[object]] = {c.topic: [] for c in conns}
        for conn, _, raw in reader.messages(connections=conns):
            got[conn.topic].append(store.deserialize_cdr(raw, conn.msgtype))
    return got


def test_node_outputs_are_identical_on_two_replays(tmp_path: Path):
    scenes = tmp_path / "scenes"
    from step_perception_tools.make_scenes import make_scenes

    # make-scenes writes /camera/{image_raw,camera_info,depth/image_raw}: the node's inputs in NS
    assert bags.CameraTopics().image == f"{NS}/image_raw"
    make_scenes(scenes, count=8, seed=11, width=320, height=240, fps=10.0, jobs=1)
    # answers written out from the truth boxes and the sent size (replay_support.truth_answer)
    cassette = tmp_path / "truth.jsonl"
    config = PerceptionConfig.from_mapping({**PARAMS, "cassette": str(cassette)})
    assert write_truth_cassette(bags.read_scene_frames(scenes), config, cassette) == 8

    first = _run_once(scenes, cassette, tmp_path / "a")
    second = _run_once(scenes, cassette, tmp_path / "b")

    a, b = _outputs(first), _outputs(second)
    assert len(a[f"{NS}/detections"]) == 8, {k: len(v) for k, v in a.items()}
    assert a == b  # identical outputs, message by message, topic by topic

    truth = bags.read_detections(scenes, f"{NS}/ground_truth")
    report = evaluate(truth, bags.read_detections(first, f"{NS}/detections")).report
    assert report.answered_fraction == 1.0
    assert report.precision == 1.0 and report.recall == 1.0
    assert report.label_accuracy == 1.0
    assert report.mean_iou is not None and report.mean_iou >= MIN_TRUTH_MEAN_IOU, report
    assert report.position_pairs == report.truth_objects
    assert report.position_error_median_m is not None and report.position_error_median_m < 0.02


def test_lockstep_counts_frames_the_node_failed_and_goes_on(tmp_path: Path):
    """Two frames get an answer that is no JSON: the node publishes nothing for them, and
    ``--lockstep-node`` counts them as failed from its /diagnostics instead of timing out."""
    from step_perception_tools.make_scenes import make_scenes

    scenes = tmp_path / "scenes"
    make_scenes(scenes, count=8, seed=11, width=320, height=240, fps=10.0, jobs=1)
    cassette = tmp_path / "truth.jsonl"
    config = PerceptionConfig.from_mapping({**PARAMS, "cassette": str(cassette)})
    assert write_truth_cassette(bags.read_scene_frames(scenes), config, cassette) == 8
    entries = [json.loads(line) for line in cassette.read_text().splitlines()]
    for i in (2, 5):
        entries[i]["text"] = "I think there is a cup, but I cannot say where."
    cassette.write_text("".join(json.dumps(e) + "\n" for e in entries))

    run = _run_once(
        scenes, cassette, tmp_path / "a",
        extra=("--lockstep-node", f"{NS}/step_perception"),
        expect="lockstep: 6 answered, 2 failed, 0 unanswered",
    )  # fmt: skip
    assert len(_outputs(run)[f"{NS}/detections"]) == 6
