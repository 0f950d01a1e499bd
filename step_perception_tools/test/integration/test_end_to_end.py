"""End to end: scenes bag -> replay over DDS -> the real node -> `transformers serve` with the
embedded reference model -> recorder -> eval. The same code path as `make demo`, fewer scenes."""

from __future__ import annotations

from pathlib import Path

import pytest
from step_perception_tools.demo import DemoOptions, default_model_dir, run_demo, summary_line

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# The end-to-end floors: the ONE place they are set. Just under what the product measurably
# does on these 8 held-out scenes (seed 4242, 1280x720, lockstep), measured 2026-12-01 on the
# loaded 2-core machine with models/tabletop-ref as of commit 512a56a, 9 runs: always 8/8 frames
# answered and 24 of 24 objects found (precision, recall, recall over all frames 1.000), label
# accuracy 1.000, mean IoU 0.939 (the same in every run). Not deterministic: the 3D figures,
# because a colour frame whose depth comes later than the node's 0.5 s depth wait
# (core.sync.DepthSync) goes out without depth under load: 19 to 24 of 24 pairs, 3D error median
# 0.41-0.93 cm, p90 1.3-4.4 cm. The domain-randomised model (models/tabletop-ref since the #15
# retrain) measured 8/8 answered, precision = recall = 0.958 (23 of 24) in two runs and passes.
# Re-measure and re-set all of them when models/tabletop-ref changes.
SCENES = 8
MIN_RECALL_ALL_FRAMES = 0.95  # 24 truth objects: one miss (23/24 = 0.958) passes, two fail
MIN_PRECISION = 0.95
MIN_LABEL_ACCURACY = 0.95
MIN_MEAN_IOU = 0.90
MIN_POSITION_PAIRS_FRACTION = 0.75  # of the matched objects; worst run seen 19/24 = 0.79
MAX_POSITION_ERROR_MEDIAN_M = 0.015
MAX_POSITION_ERROR_P90_M = 0.08


def test_demo_path_scores_above_floor(tmp_path: Path) -> None:
    assert (default_model_dir() / "config.json").is_file(), "reference model folder missing"
    # Lockstep replay (the demo's default): a frame not answered within the lockstep timeout
    # fails the replay, so run_demo raises DemoError before any report is scored.
    outcome = run_demo(DemoOptions(out=tmp_path / "demo", scenes=SCENES))
    r = outcome.report
    # every frame answered, each exactly once
    assert r["truth_frames"] == SCENES and r["answered_frames"] == SCENES, r
    assert r["output_messages"] == SCENES and r["duplicate_outputs"] == 0, r
    assert r["recall_all_frames"] >= MIN_RECALL_ALL_FRAMES, r
    assert r["precision"] >= MIN_PRECISION, r
    assert r["label_accuracy"] >= MIN_LABEL_ACCURACY, r
    assert r["mean_iou"] >= MIN_MEAN_IOU, r
    # the demo runs with depth: matched objects get a 3D position, close to the truth
    assert r["position_pairs"] >= MIN_POSITION_PAIRS_FRACTION * r["matched_pairs"] > 0, r
    assert r["position_error_median_m"] <= MAX_POSITION_ERROR_MEDIAN_M, r
    assert r["position_error_p90_m"] <= MAX_POSITION_ERROR_P90_M, r
    assert (outcome.report_dir / "report.json").is_file()
    assert list(outcome.report_dir.glob("*.png")), "eval wrote no PNG"
    # lockstep shows only measured latency: the replay's per-frame round trips, no stamp -> receipt
    assert r["latency_count"] == 0 and r["latency_median_s"] is None, r
    assert r["round_trip_count"] == SCENES and r["round_trip_median_s"] > 0, r
    assert float(outcome.node_stats["latency_p50_s"]) > 0, outcome.node_stats
    line = summary_line(outcome)
    assert str(outcome.report_dir / "samples.png") in line and "latency.png" in line, line
