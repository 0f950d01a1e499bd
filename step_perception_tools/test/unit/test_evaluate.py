"""Eval scoring on a tiny case whose numbers were worked out by hand (see comments)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from rich.console import Console
from step_perception.core.types import Box2D, CameraIntrinsics, Detection, Point3
from step_perception_tools.evaluate import evaluate, evaluate_bags, greedy_match

from step_perception_tools import bags

S = 1_000_000_000  # ns per second
T0 = 1_767_225_600 * S


def det(i, label, box, pos=None, score=math.nan):
    return Detection(str(i), label, Box2D(*box), score, "", Point3(*pos) if pos else None)


# Truth: 3 frames, 4 objects; frame 3 is never answered.
TRUTH = [
    bags.StampedDetections(
        T0 + 1 * S,
        T0 + 1 * S,
        "cam",
        (
            det(0, "red cube", (0, 0, 10, 10), (0.0, 0.0, 1.0)),
            det(1, "blue ball", (20, 20, 30, 30), (1.0, 0.0, 2.0)),
        ),
    ),
    bags.StampedDetections(
        T0 + 2 * S, T0 + 2 * S, "cam", (det(0, "green cone", (0, 0, 10, 10), (0, 0, 1)),)
    ),
    bags.StampedDetections(
        T0 + 3 * S, T0 + 3 * S, "cam", (det(0, "white mug", (0, 0, 10, 10), (0, 0, 1)),)
    ),
]
OUTPUTS = [
    # frame 1, received 0.1 s after its stamp
    bags.StampedDetections(
        T0 + 1 * S,
        T0 + 1 * S + 100_000_000,
        "cam",
        (
            # IoU 80/100 = 0.8 with "red cube", same label -> TP; position error 0.1 m
            det(0, "Red  Cube", (0, 0, 10, 8), (0.0, 0.0, 1.1)),
            # IoU 50/100 = 0.5 with "blue ball" (counts: >=), wrong label; position error 0.2 m
            det(1, "blue cube", (20, 20, 30, 25), (1.0, 0.0, 2.2)),
            # overlaps nothing -> false positive
            det(2, "red ball", (100, 100, 110, 110)),
        ),
    ),
    # frame 2, received 0.3 s after; an exact box (IoU 1, no position) and a duplicate (IoU 0.9)
    bags.StampedDetections(
        T0 + 2 * S,
        T0 + 2 * S + 300_000_000,
        "cam",
        (det(0, "green cone", (1, 0, 10, 10)), det(1, "green cone", (0, 0, 10, 10))),
    ),
    # a stamp no truth frame has, received 0.2 s after
    bags.StampedDetections(T0 + 9 * S, T0 + 9 * S + 200_000_000, "cam", ()),
]


def test_hand_checked_numbers():
    r = evaluate(TRUTH, OUTPUTS, 0.5).report
    assert (r.truth_frames, r.answered_frames, r.output_messages) == (3, 2, 3)
    assert r.answered_fraction == pytest.approx(2 / 3)
    assert (r.unmatched_outputs, r.duplicate_outputs) == (1, 0)
    # answered frames hold 3 truth objects and 5 predictions
    assert (r.truth_objects, r.predicted_objects) == (3, 5)
    # exact-label TPs: red cube (0.8) and green cone (1.0)
    assert r.true_positives == 2
    assert r.precision == pytest.approx(2 / 5)
    assert r.recall == pytest.approx(2 / 3)
    assert r.f1 == pytest.approx(2 * 0.4 * (2 / 3) / (0.4 + 2 / 3))  # = 0.5
    assert r.f1 == pytest.approx(0.5)
    assert r.recall_all_frames == pytest.approx(2 / 4)
    # any-label matches: red cube 0.8, blue ball 0.5, green cone 1.0
    assert r.matched_pairs == 3
    assert r.precision_any_label == pytest.approx(3 / 5)
    assert r.recall_any_label == pytest.approx(1.0)
    assert r.mean_iou == pytest.approx((0.8 + 0.5 + 1.0) / 3)
    assert r.label_accuracy == pytest.approx(2 / 3)
    # position errors 0.1 and 0.2 m: median 0.15; p90 (linear) 0.1 + 0.9 * 0.1 = 0.19
    assert r.position_pairs == 2
    assert r.position_error_median_m == pytest.approx(0.15)
    assert r.position_error_p90_m == pytest.approx(0.19)
    # latencies 0.1, 0.3, 0.2 s: median 0.2; p95 = 0.2 + 0.9 * 0.1 = 0.29; max 0.3
    assert r.latency_count == 3
    assert r.latency_median_s == pytest.approx(0.2)
    assert r.latency_p95_s == pytest.approx(0.29)
    assert r.latency_max_s == pytest.approx(0.3)
    assert any("no truth frame" in n for n in r.notes)


def test_threshold_above_half_drops_the_boundary_pair():
    r = evaluate(TRUTH, OUTPUTS, 0.51).report
    assert r.matched_pairs == 2  # blue ball at exactly 0.5 no longer matches
    assert r.true_positives == 2
    assert r.mean_iou == pytest.approx(0.9)


def test_greedy_takes_the_best_pair_first():
    truth = (det(0, "a", (0, 0, 10, 10)), det(1, "a", (5, 0, 15, 10)))
    preds = (det(0, "a", (4, 0, 14, 10)), det(1, "a", (0, 0, 10, 10)))
    pairs = greedy_match(truth, preds, 0.3, same_label=True)
    # (t0, p1) IoU 1.0 first, then (t1, p0) IoU 9/11
    assert [(p.truth, p.pred) for p in pairs] == [(0, 1), (1, 0)]
    assert pairs[1].iou == pytest.approx(90 / 110)


def test_duplicate_outputs_and_empty_cases():
    dup = [*OUTPUTS, bags.StampedDetections(T0 + 1 * S, T0 + 5 * S, "cam", ())]
    r = evaluate(TRUTH, dup).report
    assert r.duplicate_outputs == 1
    assert r.true_positives == 2  # the first output of the stamp is scored
    empty = evaluate(TRUTH, []).report
    assert empty.answered_frames == 0 and empty.precision is None and empty.recall is None
    assert empty.latency_median_s is None
    assert json.loads(empty.to_json())["precision"] is None
    with pytest.raises(ValueError):
        evaluate(TRUTH, OUTPUTS, 0.0)


def test_clock_mismatch_is_flagged():
    wall = [bags.StampedDetections(T0 + S, T0 + 10**6 * S, "cam", ())]
    assert any("clock" in n for n in evaluate(TRUTH, wall).report.notes)


def test_evaluate_bags_writes_report_and_pngs(tmp_path):
    h, w = 48, 64
    k = CameraIntrinsics(50.0, 50.0, 32.0, 24.0, w, h)
    truth_bag, run_bag = tmp_path / "truth", tmp_path / "run"
    with bags.SceneBagWriter(truth_bag) as writer:
        for t in TRUTH:
            rgb = np.full((h, w, 3), 90, np.uint8)
            writer.write(t.stamp_ns, rgb, np.full((h, w), 1000, np.uint16), k, t.detections)
    store = bags.typestore()
    out = bags.open_writer(run_bag)
    conn = out.add_connection("/detections", bags.DETECTIONS_TYPE, typestore=store)
    for o in OUTPUTS:
        msg = bags.detections_to_msg(bags.header_at(o.stamp_ns, "cam"), o.detections, w, h)
        out.write(conn, o.log_ns, store.serialize_cdr(msg, bags.DETECTIONS_TYPE))
    out.close()

    console = Console(record=True, width=120)
    report = evaluate_bags(run_bag, truth_bag, tmp_path / "eval", console=console)
    assert report == evaluate(TRUTH, OUTPUTS).report
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["true_positives"] == 2 and saved["latency_median_s"] == pytest.approx(0.2)
    import cv2

    for name in ("latency.png", "samples.png"):
        img = cv2.imread(str(tmp_path / "eval" / name))
        assert img is not None and img.shape[0] > 50
    # the two answered frames are drawn side by side (2 columns of 640 px)
    assert cv2.imread(str(tmp_path / "eval" / "samples.png")).shape[1] == 1280
    text = console.export_text()
    assert "precision (exact label)" in text and "0.400" in text
