"""Bag frames straight through the real core and the replay backend (no DDS): a cassette whose
answers are the ground truth must score perfectly, identically on every run."""

from __future__ import annotations

import json
from pathlib import Path

from rosbags.rosbag2 import Reader
from step_perception.core.config import PerceptionConfig
from step_perception_tools.offline import write_oracle_cassette

from step_perception_tools import bags, cli


def _oracle(bag: Path, path: Path, *, compressed: bool = False, **params: object) -> Path:
    config = PerceptionConfig.from_mapping({"backend": "replay", "cassette": str(path), **params})
    n = write_oracle_cassette(bags.read_scene_frames(bag, compressed=compressed), config, path)
    assert n == 8
    return path


def _detections_cdr(bag: Path) -> list[bytes]:
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic == "/detections"]
        return [bytes(raw) for _, _, raw in reader.messages(connections=conns)]


def test_oracle_cassette_scores_perfectly_and_identically(small_scenes: Path, tmp_path: Path):
    cassette = _oracle(small_scenes, tmp_path / "oracle.jsonl", max_image_side=160)
    runs = []
    for name in ("a", "b"):
        argv = ["run-offline", str(small_scenes), "-p", "backend=replay", "-p",
                f"cassette={cassette}", "-p", "max_image_side=160",
                "--eval", str(tmp_path / name)]  # fmt: skip
        assert cli.main(argv) == 0
        runs.append(tmp_path / name / "run")
        report = json.loads((tmp_path / name / "report.json").read_text())
        assert report["answered_fraction"] == 1.0 and report["truth_frames"] == 8
        assert report["precision"] == 1.0 and report["recall"] == 1.0
        assert report["label_accuracy"] == 1.0
        assert report["mean_iou"] > 0.97  # boxes cross a 2x shrink and back
        assert report["position_pairs"] == report["truth_objects"]
        assert report["position_error_median_m"] < 0.02
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
