"""Latency of one backend: N sequential requests with a real PNG, printed as one JSON line.

    # in-process, the tiny test model built on the fly (CPU here, GPU on the device machine)
    python bench/latency_backend.py transformers --tiny --device auto --requests 20
    # in-process, a real model folder
    python bench/latency_backend.py transformers --model models/xyz --device cuda
    # a running OpenAI-compatible server
    python bench/latency_backend.py openai --endpoint http://127.0.0.1:8000/v1 --model NAME

Run from the repository root; PYTHONPATH is set up below.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import tempfile
import time
from pathlib import Path
from types import ModuleType

from step_perception.backends.factory import make_backend
from step_perception.core.types import (
    ImageTransform,
    ModelRequest,
    PreparedImage,
    SamplingParams,
)


def _image(seed: int, width: int, height: int) -> PreparedImage:
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", pixels)
    assert ok
    return PreparedImage(buf.tobytes(), "image/jpeg", width, height, ImageTransform(1.0, 1.0))


def _tiny_model() -> ModuleType:
    """The backend tests' tiny-LLaVA builder, loaded from its file: a test helper of this
    checkout (bench/ runs from a checkout), not part of any installed package."""
    path = (
        Path(__file__).resolve().parent.parent / "step_perception/test/unit/backends/tiny_model.py"
    )
    spec = importlib.util.spec_from_file_location("tiny_model", path)
    assert spec is not None and spec.loader is not None, path
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("kind", choices=["transformers", "openai"])
    ap.add_argument("--model", default="")
    ap.add_argument("--tiny", action="store_true", help="build the tiny test model and use it")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--endpoint", action="append", default=[])
    ap.add_argument("--requests", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--size", default="640x480", help="sent image WxH")
    args = ap.parse_args()

    model = args.model
    if args.tiny:
        model = str(_tiny_model().build_tiny_llava(Path(tempfile.mkdtemp(prefix="tiny_llava_"))))
    width, height = (int(v) for v in args.size.split("x"))

    t0 = time.monotonic()
    if args.kind == "transformers":
        backend = make_backend("transformers", model=model, device=args.device)
        backend.wait_loaded(timeout=600)  # type: ignore[attr-defined]
    else:
        backend = make_backend(
            "openai", endpoints=args.endpoint, model=model, request_timeout_s=120.0
        )
    load_s = time.monotonic() - t0

    latencies: list[float] = []
    tokens = 0
    text = ""
    try:
        for i in range(args.requests + 1):  # the first one warms up and is not counted
            request = ModelRequest(
                model=model,
                profile="generic",
                system="You are a robot's perception module. Answer with JSON only.",
                user="Task: detect\nRequest: the red cube",
                image=_image(i, width, height),
                sampling=SamplingParams(max_tokens=args.max_tokens),
            )
            reply = backend.submit(request).result(timeout=600)
            if i == 0:
                text = reply.text
                continue
            latencies.append(reply.latency_s)
            tokens += reply.usage.completion_tokens if reply.usage else 0
        health = backend.health()
    finally:
        backend.close()

    latencies.sort()
    print(
        json.dumps(
            {
                "backend": args.kind,
                "model": model,
                "where": health.detail,
                "load_s": round(load_s, 3),
                "requests": args.requests,
                "image": args.size,
                "max_tokens": args.max_tokens,
                "p50_s": round(statistics.median(latencies), 4),
                "p90_s": round(latencies[int(0.9 * (len(latencies) - 1))], 4),
                "completion_tokens_per_s": round(tokens / sum(latencies), 1),
                "first_answer": text[:60],
            },
            ensure_ascii=True,
        )
    )


if __name__ == "__main__":
    main()
