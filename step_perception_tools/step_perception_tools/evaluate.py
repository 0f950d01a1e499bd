"""Score the node's detections against ground truth (``step-perception eval``).

Outputs and truth are paired by header stamp (the node copies the source image
header into every output). Within a frame, predictions and truth objects are
matched greedily by IoU, highest first, each used at most once; a pair counts
when IoU >= the threshold (0.5 by default).

Two matchings are scored:

* **exact label** (the quality bar): a pair must also have the same label
  (case and spacing ignored). Precision, recall and F1 use it.
* **any label** (localisation): boxes only. Mean IoU, label accuracy (share of
  those pairs whose labels agree) and 3D position error use it.

Precision and recall cover the *answered* frames (truth frames with an output):
the node drops frames by design when the model is slower than the camera, and
``answered_fraction`` reports that separately. ``recall_all_frames`` counts
every truth object, unanswered frames included.

Latency is ``log time - header stamp`` of every output message. In a bag from
``step-perception record`` the log time is the receive time on the recorder's
clock; replaying with ``--clock`` and recording with ``--use-sim-time`` puts both
on the bag's clock (latencies then scale with the replay ``--rate``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from step_perception.core.types import Detection

from step_perception_tools.bags import (
    CameraTopics,
    SceneFrame,
    StampedDetections,
    read_detections,
    read_scene_frames,
)

if TYPE_CHECKING:
    from cv2.typing import MatLike

__all__ = [
    "EvalReport",
    "Evaluation",
    "FrameMatch",
    "Pair",
    "evaluate",
    "evaluate_bags",
    "greedy_match",
    "print_report",
    "write_latency_histogram",
    "write_samples",
]

_NS = 1e9
#: Latencies outside this range mean the two stamps come from different clocks.
_PLAUSIBLE_LATENCY_S = (0.0, 3600.0)
_GT_BGR = (60, 200, 60)  # green
_PRED_BGR = (220, 60, 220)  # magenta


@dataclass(frozen=True)
class Pair:
    """A matched (truth, prediction) pair of one frame, by index into each list."""

    truth: int
    pred: int
    iou: float


@dataclass(frozen=True)
class FrameMatch:
    """Matching result of one answered frame."""

    stamp_ns: int
    truth: tuple[Detection, ...]
    preds: tuple[Detection, ...]
    exact: tuple[Pair, ...]  # IoU >= threshold and same label
    any_label: tuple[Pair, ...]  # IoU >= threshold


@dataclass(frozen=True)
class EvalReport:
    """The numbers of one evaluation; ``None`` where a quantity is undefined (0/0)."""

    iou_threshold: float
    truth_frames: int
    output_messages: int
    answered_frames: int
    answered_fraction: float | None
    unmatched_outputs: int  # output messages whose stamp is no truth frame
    duplicate_outputs: int  # further outputs for an already answered frame (not scored)
    truth_objects: int  # in answered frames
    predicted_objects: int  # in answered frames
    true_positives: int  # exact-label matches
    precision: float | None
    recall: float | None
    f1: float | None
    recall_all_frames: float | None  # unanswered frames' objects count as misses
    matched_pairs: int  # any-label matches
    precision_any_label: float | None
    recall_any_label: float | None
    mean_iou: float | None
    label_accuracy: float | None
    position_pairs: int  # any-label matches where both sides have a 3D position
    position_error_median_m: float | None
    position_error_p90_m: float | None
    latency_count: int
    latency_median_s: float | None
    latency_p95_s: float | None
    latency_max_s: float | None
    notes: tuple[str, ...] = ()

    def to_json(self) -> str:
        """Serialise the report as pretty JSON (``null`` for undefined numbers)."""
        return json.dumps(asdict(self), indent=2, sort_keys=False) + "\n"


@dataclass(frozen=True)
class Evaluation:
    """A report plus what produced it (for plots)."""

    report: EvalReport
    frames: tuple[FrameMatch, ...]  # answered frames, in stamp order
    latencies_s: tuple[float, ...]


def _norm_label(label: str) -> str:
    return " ".join(label.lower().split())


def greedy_match(
    truth: Sequence[Detection],
    preds: Sequence[Detection],
    iou_threshold: float = 0.5,
    *,
    same_label: bool,
) -> tuple[Pair, ...]:
    """Match greedily by IoU (highest first, ties by index); pairs need IoU >= threshold."""
    candidates: list[tuple[float, int, int]] = []
    for ti, t in enumerate(truth):
        for pi, p in enumerate(preds):
            if same_label and _norm_label(t.label) != _norm_label(p.label):
                continue
            iou = t.box.iou(p.box)
            if iou >= iou_threshold:
                candidates.append((-iou, ti, pi))
    candidates.sort()
    used_t: set[int] = set()
    used_p: set[int] = set()
    pairs: list[Pair] = []
    for neg_iou, ti, pi in candidates:
        if ti in used_t or pi in used_p:
            continue
        used_t.add(ti)
        used_p.add(pi)
        pairs.append(Pair(ti, pi, -neg_iou))
    return tuple(sorted(pairs, key=lambda p: p.truth))


def _ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _percentile(values: Sequence[float], q: float) -> float | None:
    # numpy's default linear interpolation between order statistics
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if values else None


def evaluate(
    truth: Sequence[StampedDetections],
    outputs: Sequence[StampedDetections],
    iou_threshold: float = 0.5,
) -> Evaluation:
    """Score ``outputs`` against ``truth`` (both keyed by header stamp)."""
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"IoU threshold must be in (0, 1], got {iou_threshold}")
    truth_by_stamp: dict[int, StampedDetections] = {}
    for t in truth:
        truth_by_stamp.setdefault(t.stamp_ns, t)
    first: dict[int, StampedDetections] = {}
    unmatched = duplicates = 0
    for out in sorted(outputs, key=lambda o: o.log_ns):
        if out.stamp_ns not in truth_by_stamp:
            unmatched += 1
        elif out.stamp_ns in first:
            duplicates += 1
        else:
            first[out.stamp_ns] = out

    frames = []
    for stamp in sorted(first):
        t_dets, p_dets = truth_by_stamp[stamp].detections, first[stamp].detections
        frames.append(
            FrameMatch(
                stamp_ns=stamp,
                truth=t_dets,
                preds=p_dets,
                exact=greedy_match(t_dets, p_dets, iou_threshold, same_label=True),
                any_label=greedy_match(t_dets, p_dets, iou_threshold, same_label=False),
            )
        )

    n_truth = sum(len(f.truth) for f in frames)
    n_pred = sum(len(f.preds) for f in frames)
    n_truth_all = sum(len(t.detections) for t in truth_by_stamp.values())
    tp = sum(len(f.exact) for f in frames)
    pairs = [(f, p) for f in frames for p in f.any_label]
    ious = [p.iou for _, p in pairs]
    label_ok = sum(
        _norm_label(f.truth[p.truth].label) == _norm_label(f.preds[p.pred].label) for f, p in pairs
    )
    pos_err = []
    for f, p in pairs:
        tpos, ppos = f.truth[p.truth].position, f.preds[p.pred].position
        if tpos is not None and ppos is not None:
            pos_err.append(tpos.distance(ppos))
    latencies = tuple((o.log_ns - o.stamp_ns) / _NS for o in outputs)

    precision, recall = _ratio(tp, n_pred), _ratio(tp, n_truth)
    f1 = None
    if precision is not None and recall is not None and precision + recall > 0:
        f1 = 2 * precision * recall / (precision + recall)
    notes = []
    lo, hi = _PLAUSIBLE_LATENCY_S
    if any(not lo <= x <= hi for x in latencies):
        notes.append(
            "some latencies are negative or over an hour: the output bag's receive clock is not "
            "the source stamps' clock (replay with --clock and record with --use-sim-time)"
        )
    if unmatched:
        notes.append(f"{unmatched} output message(s) have a stamp that no truth frame has")
    report = EvalReport(
        iou_threshold=iou_threshold,
        truth_frames=len(truth_by_stamp),
        output_messages=len(outputs),
        answered_frames=len(frames),
        answered_fraction=_ratio(len(frames), len(truth_by_stamp)),
        unmatched_outputs=unmatched,
        duplicate_outputs=duplicates,
        truth_objects=n_truth,
        predicted_objects=n_pred,
        true_positives=tp,
        precision=precision,
        recall=recall,
        f1=f1,
        recall_all_frames=_ratio(tp, n_truth_all),
        matched_pairs=len(pairs),
        precision_any_label=_ratio(len(pairs), n_pred),
        recall_any_label=_ratio(len(pairs), n_truth),
        mean_iou=_ratio(sum(ious), len(ious)),
        label_accuracy=_ratio(label_ok, len(pairs)),
        position_pairs=len(pos_err),
        position_error_median_m=_percentile(pos_err, 50),
        position_error_p90_m=_percentile(pos_err, 90),
        latency_count=len(latencies),
        latency_median_s=_percentile(latencies, 50),
        latency_p95_s=_percentile(latencies, 95),
        latency_max_s=max(latencies) if latencies else None,
        notes=tuple(notes),
    )
    return Evaluation(report=report, frames=tuple(frames), latencies_s=latencies)


# --------------------------------------------------------------------------- output


def print_report(report: EvalReport, console: Console) -> None:
    """Print the report as a table."""

    def num(v: float | None, fmt: str = "{:.3f}") -> str:
        return "n/a" if v is None or math.isnan(v) else fmt.format(v)

    def pct(v: float | None) -> str:
        return num(v, "{:.1%}")

    def ms(v: float | None) -> str:
        return num(None if v is None else v * 1000.0, "{:.1f} ms")

    def cm(v: float | None) -> str:
        return num(None if v is None else v * 100.0, "{:.1f} cm")

    r = report
    table = Table(title=f"step-perception eval (IoU >= {r.iou_threshold:g})", show_header=True)
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("over", style="dim")
    box_matches = f"{r.matched_pairs} box matches"
    rows = [
        ("frames answered", pct(r.answered_fraction), f"{r.answered_frames}/{r.truth_frames}"),
        ("precision (exact label)", num(r.precision), f"{r.true_positives}/{r.predicted_objects}"),
        ("recall (exact label)", num(r.recall), f"{r.true_positives}/{r.truth_objects}"),
        ("F1 (exact label)", num(r.f1), ""),
        ("recall, all frames", num(r.recall_all_frames), "unanswered frames count as misses"),
        ("precision (any label)", num(r.precision_any_label), box_matches),
        ("recall (any label)", num(r.recall_any_label), box_matches),
        ("mean IoU", num(r.mean_iou), box_matches),
        ("label accuracy", num(r.label_accuracy), box_matches),
        ("3D error median", cm(r.position_error_median_m), f"{r.position_pairs} pairs"),
        ("3D error p90", cm(r.position_error_p90_m), f"{r.position_pairs} pairs"),
        ("latency median", ms(r.latency_median_s), f"{r.latency_count} messages"),
        ("latency p95", ms(r.latency_p95_s), f"{r.latency_count} messages"),
        ("latency max", ms(r.latency_max_s), f"{r.latency_count} messages"),
    ]
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for note in r.notes:
        console.print(f"[yellow]note:[/yellow] {escape(note)}")


def write_latency_histogram(latencies_s: Sequence[float], path: Path) -> None:
    """Write a PNG histogram of latencies [ms] (matplotlib, headless)."""
    import matplotlib as mpl  # heavy: only for this plot

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4), dpi=100)
    try:
        values = np.asarray(latencies_s, dtype=np.float64) * 1000.0
        if values.size:
            ax.hist(values, bins=min(50, max(5, values.size // 3)), color="#4c72b0")
            for q, style in ((50, "-"), (95, "--")):
                v = float(np.percentile(values, q))
                ax.axvline(v, color="#c44e52", linestyle=style, label=f"p{q} {v:.1f} ms")
            ax.legend()
        else:
            ax.text(0.5, 0.5, "no output messages", ha="center", va="center")
        ax.set_xlabel("latency: receipt - source stamp [ms]")
        ax.set_ylabel("messages")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"latency over {values.size} output messages")
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def _text(
    img: MatLike,
    text: str,
    org: tuple[int, int],
    colour: tuple[int, int, int],
    scale: float = 0.45,
    thick: int = 1,
) -> None:
    """Text on a dark box, readable on any background (``org`` = bottom-left)."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (w, h), base = cv2.getTextSize(text, font, scale, thick)
    x, y = org
    cv2.rectangle(img, (x - 1, y - h - 2), (x + w + 1, y + base), (20, 20, 20), cv2.FILLED)
    cv2.putText(img, text, (x, y), font, scale, colour, thick, cv2.LINE_AA)


def _draw(
    tile: MatLike,
    dets: Sequence[Detection],
    scale: float,
    colour: tuple[int, int, int],
    below: bool,
) -> None:
    """Boxes (source pixels times ``scale``) with their labels above or below."""
    h = tile.shape[0]
    for d in dets:
        p1 = (round(d.box.x1 * scale), round(d.box.y1 * scale))
        p2 = (round(d.box.x2 * scale) - 1, round(d.box.y2 * scale) - 1)
        cv2.rectangle(tile, p1, p2, colour, 2 if below else 1, cv2.LINE_AA)
        text = d.label if math.isnan(d.score) else f"{d.label} {d.score:.2f}"
        y = p2[1] + 14 if below else p1[1] - 4
        _text(tile, text, (p1[0], min(max(y, 12), h - 4)), colour, 0.4)


def write_samples(
    frames: Sequence[tuple[SceneFrame, FrameMatch]], path: Path, tile_width: int = 640
) -> None:
    """Write one PNG grid of frames: truth boxes green (label above), predictions magenta."""
    tiles = []
    for frame, match in frames:
        bgr = np.ascontiguousarray(frame.rgb[:, :, ::-1])
        h, w = bgr.shape[:2]
        scale = tile_width / w
        size = (tile_width, max(1, round(h * scale)))
        tile = cv2.resize(bgr, size, interpolation=cv2.INTER_AREA)
        _draw(tile, match.truth, scale, _GT_BGR, below=False)
        _draw(tile, match.preds, scale, _PRED_BGR, below=True)
        caption = (
            f"stamp {frame.stamp_ns / _NS:.3f}  truth {len(match.truth)}  "
            f"predicted {len(match.preds)}  TP {len(match.exact)}"
        )
        _text(tile, caption, (4, size[1] - 6), (255, 255, 255), 0.45)
        tiles.append(tile)
    if not tiles:
        tiles = [np.zeros((90, tile_width, 3), np.uint8)]
        _text(tiles[0], "no answered frames", (10, 50), (255, 255, 255), 0.7)
    cols = 1 if len(tiles) == 1 else 2
    tile_h = max(t.shape[0] for t in tiles)
    padded = [
        cv2.copyMakeBorder(t, 0, tile_h - t.shape[0], 0, 0, cv2.BORDER_CONSTANT) for t in tiles
    ]
    while len(padded) % cols:
        padded.append(np.zeros_like(padded[0]))
    rows = [np.hstack(padded[i : i + cols]) for i in range(0, len(padded), cols)]
    legend = np.full((28, rows[0].shape[1], 3), 20, np.uint8)
    _text(legend, "ground truth", (8, 20), _GT_BGR, 0.6, 2)
    _text(legend, "prediction", (170, 20), _PRED_BGR, 0.6, 2)
    if not cv2.imwrite(str(path), np.vstack([legend, *rows])):
        raise OSError(f"cannot write {path}")


def evaluate_bags(
    run_bag: Path,
    truth_bag: Path,
    out_dir: Path | None,
    *,
    iou_threshold: float = 0.5,
    detections_topic: str | None = None,
    topics: CameraTopics | None = None,
    samples: int = 6,
    console: Console | None = None,
) -> EvalReport:
    """Evaluate a recorded run against a scenes bag; write report.json and PNGs to ``out_dir``."""
    console = console or Console()
    topics = topics or CameraTopics()
    with console.status("reading bags"):
        truth = read_detections(truth_bag, topics.truth)
        outputs = read_detections(run_bag, detections_topic)
    result = evaluate(truth, outputs, iou_threshold)
    print_report(result.report, console)
    if out_dir is None:
        return result.report
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(result.report.to_json(), "utf-8")
    write_latency_histogram(result.latencies_s, out_dir / "latency.png")
    if samples > 0:
        picked = _pick(result.frames, samples)
        by_stamp = {m.stamp_ns: m for m in picked}
        with console.status("drawing sample frames"):
            images = list(read_scene_frames(truth_bag, topics, stamps=set(by_stamp)))
        write_samples([(f, by_stamp[f.stamp_ns]) for f in images], out_dir / "samples.png")
    console.print(f"wrote {out_dir / 'report.json'}, latency.png, samples.png")
    return result.report


def _pick(frames: Sequence[FrameMatch], k: int) -> list[FrameMatch]:
    if len(frames) <= k:
        return list(frames)
    idx = np.linspace(0, len(frames) - 1, k).round().astype(int)
    return [frames[i] for i in sorted(set(idx.tolist()))]
