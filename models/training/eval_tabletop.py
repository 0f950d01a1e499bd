"""Held-out evaluation of the packaged model folder through processor + generate (CPU).

    python models/training/eval_tabletop.py --model models/tabletop-ref --seed 4242 --count 200

Each scene is rendered at 1280x720, prepared like the node does (INTER_AREA resize to 728x410,
JPEG q85), sent as a data URL inside OpenAI-style chat messages whose user text is built by
``step_perception.core.prompts.user_text`` (profile ``generic``, task detect), answered with greedy
``generate`` and parsed as JSON.  Boxes (0..1000 of the sent image) are scored against the ground
truth at IoU 0.5 with exact labels.  Prints recall, precision, label accuracy, valid-JSON rate and
the median/p95 answer latency (processor + generate) at the configured torch thread count.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from reference_model import MODEL_DIR
from step_perception.core.profiles import get_profile
from step_perception.core.prompts import user_text
from step_perception.core.types import Task
from step_perception_tools.scenes import render_scene
from train_tabletop import match, summarise

SENT_W, SENT_H = 728, 410


def data_url(rgb: np.ndarray) -> str:
    """Encode the image as the node sends it (728x410 INTER_AREA, JPEG q85), as a data URL."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    sent = cv2.resize(bgr, (SENT_W, SENT_H), interpolation=cv2.INTER_AREA)
    ok, enc = cv2.imencode(".jpg", sent, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return "data:image/jpeg;base64," + base64.b64encode(enc.tobytes()).decode("ascii")


def messages(
    url: str, task: Task = Task.DETECT, prompt: str = "", actions: tuple[str, ...] = ()
) -> list[dict]:
    """OpenAI-style messages with the node's user text for ``task``."""
    text = user_text(
        get_profile("generic"), task, prompt, sent_width=SENT_W, sent_height=SENT_H,
        max_objects=12, allowed_actions=actions,
    )  # fmt: skip
    return [
        {"role": "system", "content": "You are the perception module of a robot."},
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": url}},
                {"type": "text", "text": text},
            ],
        },
    ]


def main() -> None:
    """Run the evaluation (see the module docstring)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, default=MODEL_DIR)
    ap.add_argument("--seed", type=int, default=4242)
    ap.add_argument("--count", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write the numbers as JSON here")
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(args.threads)
    from transformers import AutoModelForImageTextToText, AutoProcessor

    proc = AutoProcessor.from_pretrained(str(args.model), trust_remote_code=True)
    model = AutoModelForImageTextToText.from_pretrained(
        str(args.model), trust_remote_code=True
    ).eval()
    rows, lat, valid = [], [], 0
    for i in range(args.count):
        sc = render_scene(args.seed, i)
        msgs = messages(data_url(sc.rgb))
        t = time.perf_counter()
        inputs = proc.apply_chat_template(
            msgs, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        out = model.generate(**inputs, max_new_tokens=512, do_sample=False)
        text = proc.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
        lat.append(time.perf_counter() - t)
        try:
            ans = json.loads(text)
            preds = [(o["label"], tuple(v / 1000 for v in o["bbox_2d"])) for o in ans["objects"]]
            valid += 1
        except (ValueError, KeyError, TypeError):
            preds = []
        h, w = sc.rgb.shape[:2]
        truth = [
            (o.label, (o.box[0] / w, o.box[1] / h, o.box[2] / w, o.box[3] / h)) for o in sc.objects
        ]
        rows.append(match(preds, truth))
    res = summarise(rows)
    lat.sort()
    res.update(
        valid_json=valid / args.count,
        latency_median_s=statistics.median(lat),
        latency_p95_s=lat[int(0.95 * (len(lat) - 1))],
        threads=args.threads,
        seed=args.seed,
    )
    print(json.dumps(res, indent=2))
    if args.out:
        args.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
