"""Answer parsing: ``core.parsing.parse_answer`` vs a naive parser and vs bare ``json.loads``.

Answers are typical model outputs for a 1920x1080 frame sent at 728x410 (profile ``step3p7``,
boxes xyxy in 0..1000): a Qwen-style bare list, the object form inside a code fence after a
``<think>`` block with trailing prose, and 50-object answers (clean and wrapped).

* naive: strip ``<think>…</think>``, slice from the first ``{``/``[`` to the last ``}``/``]``,
  ``json.loads``, then the minimum by hand (label is a string, four numbers, scale to source
  pixels). It does not clamp, cap, check finiteness, relations or actions, and breaks on braces
  in prose; it is what a quick implementation does.
* floor: ``json.loads`` of the clean JSON alone (no extraction, no validation at all).

Each case: median over ``--samples`` samples of the mean of many calls, in µs; ``ratio`` is
naive / ours (below 1 = ours is slower, the price of tolerance and validation).

    . ./env.sh && python bench/bench_parsing.py
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from step_perception.core.parsing import parse_answer
from step_perception.core.profiles import get_profile
from step_perception.core.types import ImageTransform, PreparedImage
from step_perception_tools.scenes import LABELS

PROFILE = get_profile("step3p7")
IMAGE = PreparedImage(
    data=b"",
    mime="image/jpeg",
    width=728,
    height=410,
    transform=ImageTransform(1920 / 728, 1080 / 410),
    source_width=1920,
    source_height=1080,
)
_THINK = re.compile(r"<think>.*?</think>", re.S)
_RELATIONS = ("left_of", "right_of", "near", "behind", "in_front_of", "on_top_of")


def _objects(n: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        x, y = (37 * i) % 900, (53 * i) % 900
        out.append(
            {
                "label": LABELS[i % len(LABELS)],
                "bbox_2d": [x, y, x + 40 + i % 60, y + 50 + i % 45],
                "score": round(0.5 + (i % 50) / 100, 2),
                "description": "",
            }
        )
    return out


def _answer(n: int) -> dict[str, Any]:
    return {
        "objects": _objects(n),
        "relations": [
            {"subject": i, "relation": _RELATIONS[i % len(_RELATIONS)], "object": i + 1}
            for i in range(min(n - 1, 10))
        ],
        "summary": f"A table with {n} objects.",
        "action": {"name": "pick", "target": 0},
    }


def _wrapped(clean: str) -> str:
    think = (
        "<think>The user wants every object. I see a red cube on the left and a blue ball "
        "near it; {boxes} are normalised to 0-1000. Let me write the JSON.</think>\n"
    )
    return f"{think}Here is the answer:\n```json\n{clean}\n```\nLet me know if you need more."


def _naive(text: str) -> int:
    body = _THINK.sub(" ", text)
    starts = [i for i in (body.find("{"), body.find("[")) if i >= 0]
    end = max(body.rfind("}"), body.rfind("]"))
    value = json.loads(body[min(starts) : end + 1])
    items = value if isinstance(value, list) else value.get("objects", [])
    sx, sy = (
        IMAGE.width / 1000 * IMAGE.transform.scale_x,
        IMAGE.height / 1000 * IMAGE.transform.scale_y,
    )
    boxes = []
    for item in items:
        label, box = item.get("label"), item.get("bbox_2d")
        if isinstance(label, str) and isinstance(box, list) and len(box) == 4:
            x1, y1, x2, y2 = (float(v) for v in box)
            boxes.append((label, x1 * sx, y1 * sy, x2 * sx, y2 * sy))
    return len(boxes)


def _time_us(fn: Callable[[], object], samples: int) -> float:
    fn()
    # Calibrate: ~20 ms per sample.
    t0 = time.perf_counter()
    fn()
    loops = max(1, int(0.02 / max(time.perf_counter() - t0, 1e-7)))
    per_call = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(loops):
            fn()
        per_call.append((time.perf_counter() - t0) / loops)
    return statistics.median(per_call) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samples", type=int, default=15)
    args = ap.parse_args()

    bare = json.dumps([{"label": o["label"], "bbox_2d": o["bbox_2d"]} for o in _objects(3)])
    small = json.dumps(_answer(3))
    big = json.dumps(_answer(50))
    cases = {
        "bare list, 3 objects": (bare, bare),
        "object form in fence after <think>, 3 objects": (_wrapped(small), small),
        "object form, 50 objects, clean": (big, big),
        "object form in fence after <think>, 50 objects": (_wrapped(big), big),
    }
    rows = ["| benchmark | case | median | naive median | ratio |", "|---|---|---|---|---|"]
    for name, (text, clean) in cases.items():
        parsed = parse_answer(text, PROFILE, IMAGE, max_objects=64)
        if len(parsed.detections) != _naive(text):
            raise SystemExit(f"bench_parsing: ours and naive disagree on {name!r}")
        ours = _time_us(partial(parse_answer, text, PROFILE, IMAGE, max_objects=64), args.samples)
        naive = _time_us(partial(_naive, text), args.samples)
        floor = _time_us(partial(json.loads, clean), args.samples)
        label = f"parsing: {name} ({len(text)} chars, {len(parsed.detections)} kept)"
        rows.append(
            f"| {label} | parse_answer vs naive find+json.loads+check | {ours:.1f} µs | "
            f"{naive:.1f} µs | {naive / ours:.2f}x |"
        )
        rows.append(
            f"| {label} | parse_answer vs json.loads of the clean JSON (floor) | {ours:.1f} µs | "
            f"{floor:.1f} µs | {floor / ours:.2f}x |"
        )
    print("## bench_parsing: one answer, median µs per call\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
