"""Bag frames straight through the real core and the replay backend (no DDS): a cassette whose
answers are the ground truth must score perfectly, identically on every run, and a pipeline whose
inverse box map is off by one pixel must not."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from replay_support import MIN_TRUTH_MEAN_IOU, write_truth_cassette
from rosbags.rosbag2 import Reader
from step_perception.core.config import PerceptionConfig
from step_perception.core.types import ImageTransform

from step_perception_tools import bags, cli


def _oracle(bag: Path, path: Path, *, compressed: bool = False, **params: object) -> Path:
    config = PerceptionConfig.from_mapping({"backend": "replay", "cassette": str(path), **params})
    n = write_truth_cassette(bags.read_scene_frames(bag, compressed=compressed), config, path)
    assert n == 8
    return path


def _assert_perfect(report: dict[str, object]) -> None:
    assert report["answered_fraction"] == 1.0 and report["truth_frames"] == 8, report
    assert report["precision"] == 1.0 and report["recall"] == 1.0, report
    assert report["label_accuracy"] == 1.0, report
    # the truth boxes went into the sent image and back: only rounding may move them
    assert report["mean_iou"] >= MIN_TRUTH_MEAN_IOU, report
    assert report["position_pairs"] == report["truth_objects"], report
    assert report["position_error_median_m"] < 0.02, report


def _detections_cdr(bag: Path) -> list[bytes]:
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == "/detections"]
        return [bytes(raw) for _, _, raw in reader.messages(connections=conns)]


# qwen2_5_vl: boxes in pixels of the sent image, so the truth answer depends on the sent size
TRUTH_PARAMS = (
    "-p",
    "backend=replay",
    "-p",
    "max_image_side=160",
    "-p",
    "model_profile=qwen2_5_vl",
)


def _run_offline_eval(bag: Path, cassette: Path, out: Path) -> dict[str, object]:
    argv = [
        "run-offline",
        str(bag),
        *TRUTH_PARAMS,
        "-p",
        f"cassette={cassette}",
        "--eval",
        str(out),
    ]
    assert cli.main(argv) == 0
    report: dict[str, object] = json.loads((out / "report.json").read_text())
    return report


def test_truth_cassette_scores_perfectly_and_identically(small_scenes: Path, tmp_path: Path):
    cassette = _oracle(
        small_scenes, tmp_path / "truth.jsonl", max_image_side=160, model_profile="qwen2_5_vl"
    )
    runs = []
    for name in ("a", "b"):
        _assert_perfect(_run_offline_eval(small_scenes, cassette, tmp_path / name))
        runs.append(tmp_path / name / "run")
        assert (tmp_path / name / "samples.png").is_file()
    # same input, same cassette: the same output messages, byte for byte
    first, second = _detections_cdr(runs[0]), _detections_cdr(runs[1])
    assert len(first) == 8 and first == second


def test_compressed_input_and_no_depth(small_scenes: Path, tmp_path: Path):
    cassette = _oracle(small_scenes, tmp_path / "c.jsonl", compressed=True)
    argv = ["run-offline", str(small_scenes), "--compressed", "--no-depth", "-p", "backend=replay",
            "-p", f"cassette={cassette}", "--out", str(tmp_path / "out")]  # fmt: skip
    assert cli.main(argv) == 0
    outputs = bags.read_detections(tmp_path / "out")
    truth = {t.stamp_ns: t for t in bags.read_detections(small_scenes)}
    assert len(outputs) == 8
    for out in outputs:
        assert (out.width, out.height) == (320, 240)
        assert [d.label for d in out.detections] == [
            d.label for d in truth[out.stamp_ns].detections
        ]
        assert all(d.position is None for d in out.detections)  # --no-depth


def test_cassette_miss_fails_the_frames(small_scenes: Path, tmp_path: Path, capsys):
    cassette = _oracle(small_scenes, tmp_path / "c.jsonl")  # keys for max_image_side 728
    argv = ["run-offline", str(small_scenes), "-p", "backend=replay", "-p", f"cassette={cassette}",
            "-p", "max_image_side=100", "--limit", "2"]  # fmt: skip
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "CassetteMissError" in err and "0 frames answered, 2 failed" in err


def test_bad_parameter_is_a_config_error(small_scenes: Path, capsys):
    assert cli.main(["run-offline", str(small_scenes), "-p", "max_image_side=3"]) == 1
    assert "max_image_side" in capsys.readouterr().err


def test_an_inverse_map_off_by_one_pixel_fails_the_score(
    small_scenes: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The truth answers do not come from the pipeline's box mapping, so breaking it shows.

    The inverse map (sent -> source pixels) is moved by one source pixel: every frame still
    answers with the right labels, and the score must still fail.
    """
    cassette = _oracle(
        small_scenes, tmp_path / "truth.jsonl", max_image_side=160, model_profile="qwen2_5_vl"
    )
    right = ImageTransform.to_source

    def off_by_one(self: ImageTransform, x: float, y: float) -> tuple[float, float]:
        sx, sy = right(self, x, y)
        return sx + 1.0, sy + 1.0

    monkeypatch.setattr(ImageTransform, "to_source", off_by_one)
    report = _run_offline_eval(small_scenes, cassette, tmp_path / "broken")
    assert report["answered_fraction"] == 1.0 and report["label_accuracy"] == 1.0, report
    assert float(report["mean_iou"]) < MIN_TRUTH_MEAN_IOU, report  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        _assert_perfect(report)
