"""Train the detector of the tabletop reference model on synthetic scenes (one CUDA GPU).

Exact command used for the committed weights (see models/tabletop-ref/README.md):

    python models/training/train_tabletop.py --config models/training/train_config.json \
        --out $OUT --max-minutes 8 [--resume DIR_WITH_weights.pt_AND_opt.pt]

Scenes come from ``step_perception_tools.scenes.render_scene(train_seed, i)`` rendered on the fly
by DataLoader workers at 1280x720, then prepared the way the node sends them (INTER_AREA resize
to the sent size, JPEG), augmented, and resized to the detector input.  The held-out evaluation
uses ``eval_seed`` (never used for training) at the node's default sent size (728x410, JPEG q85).

Outputs in --out: weights.pt (detector + config + progress), opt.pt (optimizer), log.txt,
eval.json.  Training stops at --max-minutes or at the configured step count, whichever is first;
--resume continues the same schedule.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from reference_model import module
from step_perception.core.types import Box2D, Detection
from step_perception_tools.evaluate import greedy_match
from step_perception_tools.scenes import render_scene
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

# Run under `. ./env.sh` (the workspace's packages); the model's own code comes from its folder.
_modeling = module("modeling_tabletop")
STRIDE, TabletopDetector, decode_detections = (
    _modeling.STRIDE,
    _modeling.TabletopDetector,
    _modeling.decode_detections,
)
LABELS = module("tabletop_text").LABELS

MAX_OBJ = 8
LABEL_INDEX = {lab: i for i, lab in enumerate(LABELS)}


def prepare(
    rgb: np.ndarray, sent_w: int, sent_h: int, quality: int, in_w: int, in_h: int
) -> np.ndarray:
    """Source RGB -> as the node sends it (area resize, JPEG) -> detector input (area resize)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    sent = cv2.resize(bgr, (sent_w, sent_h), interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", sent, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    assert ok
    dec = cv2.cvtColor(cv2.imdecode(enc, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return cv2.resize(dec, (in_w, in_h), interpolation=cv2.INTER_AREA)


class SceneStream(IterableDataset):  # type: ignore[type-arg]
    """Endless augmented samples of scenes ``start, start+1, ...`` of one seed.

    DataLoader workers take interleaved scene indices.
    """

    def __init__(self, seed: int, start: int, in_w: int, in_h: int) -> None:
        self.seed, self.start, self.in_w, self.in_h = seed, start, in_w, in_h

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        info = get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        cv2.setNumThreads(1)
        i = self.start + wid
        while True:
            yield self.sample(i)
            i += nw

    def sample(self, i: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Scene ``i``: detector-size uint8 image, boxes (0..1, padded), label ids (-1 = none)."""
        rng = np.random.default_rng([self.seed, i, 99])
        sc = render_scene(self.seed, i)
        h, w = sc.rgb.shape[:2]
        boxes = np.array([o.box for o in sc.objects], np.float32).reshape(-1, 4)
        boxes /= np.array([w, h, w, h], np.float32)
        cls = np.array([LABEL_INDEX[o.label] for o in sc.objects], np.int64)
        rgb = sc.rgb
        if rng.random() < 0.3:  # zoom: crop a window (same aspect), keep boxes mostly inside
            f = rng.uniform(0.65, 0.95)
            cw, ch = f, f
            x0, y0 = rng.uniform(0, 1 - cw), rng.uniform(0, 1 - ch)
            clipped = boxes.copy()
            clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], x0, x0 + cw)
            clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], y0, y0 + ch)
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            kept = (clipped[:, 2] - clipped[:, 0]) * (clipped[:, 3] - clipped[:, 1])
            ok = kept >= 0.999 * area  # only crops that cut no object
            if ok.all():
                px = (int(x0 * w), int(y0 * h), int((x0 + cw) * w), int((y0 + ch) * h))
                rgb = rgb[px[1] : px[3], px[0] : px[2]]
                boxes = (clipped - [x0, y0, x0, y0]) / [cw, ch, cw, ch]
        r = rng.random()
        sent_w = 728 if r < 0.5 else int(rng.integers(448, 1281))
        sent_h = max(round(sent_w * rgb.shape[0] / rgb.shape[1]), 16)
        quality = int(rng.integers(55, 96))
        img = prepare(rgb, sent_w, sent_h, quality, self.in_w, self.in_h)
        if rng.random() < 0.5:
            img = img[:, ::-1]
            boxes = boxes[:, [2, 1, 0, 3]] * [-1, 1, -1, 1] + [1, 0, 1, 0]
        if (
            rng.random() < 0.3
        ):  # mild exposure / contrast change (hue untouched: labels are colours)
            a, b = rng.uniform(0.8, 1.2), rng.uniform(-15, 15)
            img = np.clip(img.astype(np.float32) * a + b, 0, 255).astype(np.uint8)
        t_img = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
        t_box = torch.zeros(MAX_OBJ, 4)
        t_cls = torch.full((MAX_OBJ,), -1, dtype=torch.long)
        n = min(len(cls), MAX_OBJ)
        t_box[:n] = torch.from_numpy(np.asarray(boxes[:n], np.float32))
        t_cls[:n] = torch.from_numpy(cls[:n])
        return t_img, t_box, t_cls


def gaussian_radius(h: torch.Tensor, w: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's radius so a box shifted by it keeps IoU >= min_overlap (vectorised)."""
    a1, b1 = 1.0, h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt(b1**2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt(b2**2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


def targets(
    boxes: torch.Tensor, cls: torch.Tensor, n_cls: int, hh: int, ww: int, in_w: int, in_h: int
) -> tuple[torch.Tensor, ...]:
    """Heatmap (B,C,H,W), centre cells (B,K,2) long, size (B,K,2), offset (B,K,2), valid (B,K)."""
    b, k = cls.shape
    valid = cls >= 0
    px = boxes * torch.tensor([in_w, in_h, in_w, in_h], device=boxes.device) / STRIDE
    cx, cy = (px[..., 0] + px[..., 2]) / 2, (px[..., 1] + px[..., 3]) / 2
    bw, bh = (px[..., 2] - px[..., 0]).clamp(min=0.1), (px[..., 3] - px[..., 1]).clamp(min=0.1)
    ix, iy = cx.floor().clamp(0, ww - 1), cy.floor().clamp(0, hh - 1)
    rad = gaussian_radius(bh, bw).clamp(min=0).floor()
    sigma = (2 * rad + 1) / 6
    ys = torch.arange(hh, device=boxes.device).view(1, 1, hh, 1)
    xs = torch.arange(ww, device=boxes.device).view(1, 1, 1, ww)
    g = torch.exp(
        -((xs - ix[..., None, None]) ** 2 + (ys - iy[..., None, None]) ** 2)
        / (2 * sigma[..., None, None] ** 2)
    )
    g = g * valid[..., None, None]
    heat = torch.zeros(b, n_cls, hh * ww, device=boxes.device)
    idx = cls.clamp(min=0)[..., None].expand(b, k, hh * ww)
    heat.scatter_reduce_(1, idx, g.view(b, k, -1), reduce="amax", include_self=True)
    centre = torch.stack([ix, iy], -1).long()
    size = torch.stack([bw, bh], -1)
    off = torch.stack([cx - ix, cy - iy], -1)
    return heat.view(b, n_cls, hh, ww), centre, size, off, valid


def losses(
    out: tuple[torch.Tensor, torch.Tensor, torch.Tensor], tg: tuple[torch.Tensor, ...]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Focal heatmap loss, L1 size and L1 offset at the centre cells."""
    heat_l, size_p, off_p = (o.float() for o in out)
    heat, centre, size, off, valid = tg
    p = torch.sigmoid(heat_l).clamp(1e-4, 1 - 1e-4)
    pos = heat.eq(1).float()
    neg = 1 - pos
    n_pos = pos.sum().clamp(min=1)
    focal = (
        -(
            (torch.log(p) * (1 - p) ** 2 * pos).sum()
            + (torch.log(1 - p) * p**2 * (1 - heat) ** 4 * neg).sum()
        )
        / n_pos
    )
    b, k = valid.shape
    w = size_p.shape[-1]
    flat = (centre[..., 1] * w + centre[..., 0]).clamp(min=0)
    sp = size_p.flatten(2).gather(2, flat[:, None, :].expand(b, 2, k)).transpose(1, 2)
    op = off_p.flatten(2).gather(2, flat[:, None, :].expand(b, 2, k)).transpose(1, 2)
    m = valid[..., None].float()
    n = m.sum().clamp(min=1)
    l_size = (F.l1_loss(sp, size, reduction="none") * m).sum() / n
    l_off = (F.l1_loss(op, off, reduction="none") * m).sum() / n
    return focal, l_size, l_off


def normalise(img_u8: torch.Tensor, mean: list[float], std: list[float]) -> torch.Tensor:
    """Uint8 NCHW -> normalised float, channels-last."""
    x = img_u8.float() / 255.0
    m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


def match(
    preds: list[tuple[str, tuple[float, ...]]], truth: list[tuple[str, tuple[float, ...]]]
) -> dict[str, float]:
    """TP with exact label at IoU>=0.5; label accuracy over label-free matches.

    The matcher is the eval tool's (``greedy_match``), so training and ``eval`` count alike.
    """

    def dets(rows: list[tuple[str, tuple[float, ...]]]) -> list[Detection]:
        return [
            Detection(id=str(i), label=lab, box=Box2D(*box)) for i, (lab, box) in enumerate(rows)
        ]

    t, p = dets(truth), dets(preds)
    exact = greedy_match(t, p, 0.5, same_label=True)
    loose = greedy_match(t, p, 0.5, same_label=False)
    return {
        "tp": len(exact),
        "n_pred": len(preds),
        "n_true": len(truth),
        "loose": len(loose),
        "label_ok": sum(1 for m in loose if preds[m.pred][0] == truth[m.truth][0]),
        "iou_sum": sum(m.iou for m in exact),
    }


def summarise(rows: list[dict[str, float]]) -> dict[str, float]:
    """Recall, precision, label accuracy and mean IoU over per-scene match counts."""
    tot = {k: sum(r[k] for r in rows) for k in rows[0]}
    return {
        "scenes": len(rows),
        "recall": tot["tp"] / max(tot["n_true"], 1),
        "precision": tot["tp"] / max(tot["n_pred"], 1),
        "label_accuracy": tot["label_ok"] / max(tot["loose"], 1),
        "mean_iou": tot["iou_sum"] / max(tot["tp"], 1),
        "objects": tot["n_true"],
    }


@torch.no_grad()
def evaluate(model: TabletopDetector, cfg: dict, device: torch.device) -> dict[str, float]:
    """Held-out scenes at the node's defaults (728 px wide, JPEG q85), exact-label IoU 0.5."""
    model.eval()
    in_w, in_h = cfg["model"]["input_width"], cfg["model"]["input_height"]
    rows = []
    for i in range(cfg["eval_count"]):
        sc = render_scene(cfg["eval_seed"], i)
        img = prepare(sc.rgb, 728, 410, 85, in_w, in_h)
        x = normalise(
            torch.from_numpy(img.transpose(2, 0, 1).copy())[None].to(device),
            cfg["model"]["image_mean"],
            cfg["model"]["image_std"],
        )
        heat, size, off = model(x)
        found = decode_detections(
            heat, size, off, cfg["model"]["score_threshold"], cfg["model"]["nms_iou"], 12
        )[0]
        h, w = sc.rgb.shape[:2]
        preds = [
            (LABELS[d.cls], (d.box[0] / in_w, d.box[1] / in_h, d.box[2] / in_w, d.box[3] / in_h))
            for d in found
        ]
        truth = [
            (o.label, (o.box[0] / w, o.box[1] / h, o.box[2] / w, o.box[3] / h)) for o in sc.objects
        ]
        rows.append(match(preds, truth))
    model.train()
    return summarise(rows)


def main() -> None:
    """Train / resume / evaluate (see the module docstring)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", type=Path, default=Path(__file__).with_name("train_config.json"))
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--resume", type=Path, help="folder holding weights.pt (+ opt.pt) to continue")
    ap.add_argument("--max-minutes", type=float, default=8.0, help="stop (and save) after this")
    ap.add_argument("--workers", type=int, default=max((os.cpu_count() or 2) - 2, 1))
    ap.add_argument("--eval-only", action="store_true")
    ap.add_argument(
        "--new-cycle",
        type=float,
        metavar="PEAK_LR",
        help="with --resume: start a new warm-up + cosine cycle (peak PEAK_LR, 'auto' length)",
    )
    ap.add_argument("--echo", type=int, help="override the config's data-echo factor")
    args = ap.parse_args()
    t_start = time.monotonic()
    cfg = json.loads(args.config.read_text())
    mc = cfg["model"]
    args.out.mkdir(parents=True, exist_ok=True)
    log_f = (args.out / "log.txt").open("a")

    def log(msg: str) -> None:
        line = f"[{time.monotonic() - t_start:7.1f}s] {msg}"
        print(line, flush=True)
        log_f.write(line + "\n")
        log_f.flush()

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(cfg["torch_seed"])
    model = TabletopDetector(mc["widths"], mc["head_width"], len(LABELS)).to(device)
    model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    st: dict[str, Any] = {"step": 0, "scenes_used": 0, "total": None, "cycle_start": 0}
    if args.resume is not None:
        ck = torch.load(args.resume / "weights.pt", map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        st.update(step=ck["step"], scenes_used=ck["scenes_used"], total=ck.get("total"))
        st["cycle_start"] = ck.get("cycle_start", 0)
        if args.new_cycle:
            st.update(total=None, cycle_start=st["step"])
            cfg["lr"] = args.new_cycle
            cfg["warmup"] = min(cfg["warmup"], 50)
    if args.echo:
        cfg["echo"] = args.echo
        if (args.resume / "opt.pt").exists():
            opt.load_state_dict(
                torch.load(args.resume / "opt.pt", map_location=device, weights_only=False)
            )
        log(f"resumed at {st}")
    n_params = sum(p.numel() for p in model.parameters())
    log(f"device {device}, params {n_params}, workers {args.workers}, config {json.dumps(cfg)}")

    def save(tag: str) -> None:
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save(
            {"model": state, "config": mc, "train": cfg, **st},
            args.out / "weights.pt",
        )
        torch.save(opt.state_dict(), args.out / "opt.pt")
        log(f"saved ({tag}) {st}")

    if args.eval_only:
        log(f"eval {json.dumps(evaluate(model, cfg, device))}")
        return

    # "steps": an int fixes the cosine schedule; "auto" sizes it after a short warm-up to what fits
    # in --max-minutes (the number used is logged and kept in weights.pt for --resume / reruns)
    st["total"] = st["total"] or cfg["steps"]
    bs = cfg["batch"]
    echo = int(cfg.get("echo", 1))
    hh, ww = mc["input_height"] // STRIDE, mc["input_width"] // STRIDE
    stream = SceneStream(
        cfg["train_seed"], st["scenes_used"], mc["input_width"], mc["input_height"]
    )
    loader = DataLoader(
        stream, batch_size=bs, num_workers=args.workers, pin_memory=True, prefetch_factor=4,
    )  # fmt: skip
    deadline = t_start + args.max_minutes * 60
    flip_mul = torch.tensor([-1.0, 1.0, -1.0, 1.0], device=device)
    flip_add = torch.tensor([1.0, 0.0, 1.0, 0.0], device=device)
    last_save = time.monotonic()
    t_log = time.monotonic()
    acc, n_acc = [0.0, 0.0, 0.0], 0
    t_probe = 0.0
    for batches, batch in enumerate(loader, start=1):
        if batches == 20:
            t_probe = time.monotonic()
        if st["total"] == "auto" and batches == 60:
            per_step = (time.monotonic() - t_probe) / (40 * echo)
            left = deadline - time.monotonic() - 60  # keep a minute for saving + eval
            st["total"] = st["step"] + int(left / per_step)
            log(f"auto schedule: {per_step * 1000:.1f} ms/step -> steps = {st['total']}")
        done = st["total"] != "auto" and st["step"] >= st["total"]
        if done or time.monotonic() > deadline:
            break
        img, boxes, cls = (t.to(device, non_blocking=True) for t in batch)
        st["scenes_used"] += img.shape[0]
        for rep in range(echo):
            if rep:  # data echoing: reuse the batch mirrored
                img = img.flip(-1)
                boxes = boxes[..., [2, 1, 0, 3]] * flip_mul + flip_add
            horizon = st["total"] - st["cycle_start"] if st["total"] != "auto" else 10**9
            step = st["step"] - st["cycle_start"]
            lr = cfg["lr"] * min(1.0, (step + 1) / cfg["warmup"])
            lr *= 0.5 * (1 + math.cos(math.pi * min(step / horizon, 1.0)))
            for g in opt.param_groups:
                g["lr"] = lr
            x = normalise(img, mc["image_mean"], mc["image_std"])
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = model(x)
            tg = targets(boxes, cls, len(LABELS), hh, ww, mc["input_width"], mc["input_height"])
            focal, l_size, l_off = losses(out, tg)
            loss = focal + cfg["size_weight"] * l_size + cfg["offset_weight"] * l_off
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 10.0)
            opt.step()
            st["step"] += 1
            acc = [a + float(v.detach()) for a, v in zip(acc, (focal, l_size, l_off), strict=True)]
            n_acc += 1
            if st["step"] % 100 == 0:
                rate = n_acc * bs / (time.monotonic() - t_log)
                log(
                    f"step {st['step']}/{st['total']} lr {lr:.2e} focal {acc[0] / n_acc:.4f} "
                    f"size {acc[1] / n_acc:.3f} off {acc[2] / n_acc:.3f} samples/s {rate:.0f}"
                )
                acc, n_acc, t_log = [0.0, 0.0, 0.0], 0, time.monotonic()
        if time.monotonic() - last_save > 120:
            save("periodic")
            last_save = time.monotonic()
    save("end")
    res = evaluate(model, cfg, device)
    res.update(step=st["step"], scenes_used=st["scenes_used"], total_steps=st["total"])
    (args.out / "eval.json").write_text(json.dumps(res, indent=2))
    log(f"eval {json.dumps(res)}")


if __name__ == "__main__":
    main()
