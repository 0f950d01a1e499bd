"""End to end: scenes bag -> replay over DDS -> the real node -> `transformers serve` with the
embedded reference model -> recorder -> eval. The same code path as `make demo`, fewer scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("step_perception_msgs.msg")

from step_perception_tools.demo import DemoOptions, default_model_dir, run_demo

pytestmark = [pytest.mark.ros, pytest.mark.slow]

# Floors well under the model card's held-out numbers, so CI flags a broken path, not noise.
RECALL_FLOOR = 0.8
PRECISION_FLOOR = 0.8


@pytest.mark.skipif(
    not (default_model_dir() / "config.json").is_file(), reason="reference model folder missing"
)
def test_demo_path_scores_above_floor(tmp_path: Path) -> None:
    outcome = run_demo(DemoOptions(out=tmp_path / "demo", scenes=8))
    report = outcome.report
    assert report["answered_fraction"] >= 0.75, report
    assert report["recall"] >= RECALL_FLOOR, report
    assert report["precision"] >= PRECISION_FLOOR, report
    assert (outcome.report_dir / "report.json").is_file()
    assert list(outcome.report_dir.glob("*.png")), "eval wrote no PNG"
