"""vLLM 0.32 (CPU) with the tiny Step-3.7 model: prefill per send size, batching, answer size.

Starts the server the tests use (serving/vllm_server.py; ``make vllm`` first) and prints three
markdown tables:

1. send size -> prompt tokens (server ``usage``) -> time to the first token (client, ``max_tokens``
   1: image decode + Step-3 processing + ViT + prefill), and the server's own prefill time
   (``vllm:request_prefill_time_seconds`` in /metrics), median over fresh images (no cache hit);
2. the node's detect request (728x410, response_format, thinking_token_budget 8) with 1, 2 and 4
   in flight (the naive way: one at a time): requests/s and generated tokens/s;
3. answer size per task: characters of a compact answer (no whitespace, as the server's grammar
   emits it) per object, with the node's schema and with the former one (descriptions everywhere).

Random weights: only the server's work is measured, not what the model says.

    . ./env.sh && python bench/bench_vllm.py      # ~3 min with the server start
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "serving"))

from step_perception.core.tokens import step3_image_tokens  # noqa: E402
from vllm_server import SERVED_MODEL, VllmServer, VllmServerConfig, running_server  # noqa: E402

SIZES = [(640, 480), (727, 545), (728, 410), (1074, 604), (1280, 720), (1920, 1080)]
TEXT = "Task: detect\nRequest: the red cube"


def _jpeg(width: int, height: int, seed: int) -> str:
    import base64

    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(height // 8, width // 8, 3), dtype=np.uint8)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode()


def _body(url: str, **extra: Any) -> dict[str, Any]:
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": TEXT}]
    return {
        "model": SERVED_MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0.0,
        **extra,
    }


def _metric(server: VllmServer, name: str) -> float:
    total = 0.0
    for line in httpx.get(f"{server.root_url}/metrics", timeout=30).text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def prefill_table(server: VllmServer, repeats: int = 5) -> None:
    print("| send size | image tokens | prompt tokens | first token, median | server prefill |")
    print("|---|---|---|---|---|")
    seed = 1000
    for w, h in SIZES:
        ttft, prefill, prompt = [], [], 0
        for _ in range(repeats + 1):  # the first of each size is a warm-up
            seed += 1
            url = _jpeg(w, h, seed)
            s0 = _metric(server, "vllm:request_prefill_time_seconds_sum")
            t0 = time.perf_counter()
            reply = httpx.post(
                f"{server.base_url}/chat/completions", json=_body(url, max_tokens=1), timeout=120
            ).json()
            dt = time.perf_counter() - t0
            ds = _metric(server, "vllm:request_prefill_time_seconds_sum") - s0
            prompt = int(reply["usage"]["prompt_tokens"])
            ttft.append(dt)
            prefill.append(ds)
        ttft, prefill = ttft[1:], prefill[1:]
        print(
            f"| {w}x{h} | {step3_image_tokens(w, h)} | {prompt} | "
            f"{statistics.median(ttft) * 1000:.0f} ms | "
            f"{statistics.median(prefill) * 1000:.0f} ms |"
        )


def batching_table(server: VllmServer, requests: int = 8) -> None:
    from step_perception.core.profiles import get_profile
    from step_perception.core.prompts import answer_schema
    from step_perception.core.types import Task

    schema = answer_schema(get_profile("step3p7"), Task.DETECT, 4)
    rf = {"type": "json_schema", "json_schema": {"name": "perception_answer", "schema": schema}}
    print("| in flight | requests | wall | requests/s | generated tokens/s | vs 1 in flight |")
    print("|---|---|---|---|---|---|")
    base = None
    seed = 5000
    for in_flight in (1, 2, 4):
        bodies = []
        for _ in range(requests):
            seed += 1
            bodies.append(
                _body(
                    _jpeg(728, 410, seed),
                    max_tokens=600,
                    thinking_token_budget=8,
                    response_format=rf,
                )
            )

        def send(body: dict[str, Any]) -> int:
            r = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=300).json()
            return int(r["usage"]["completion_tokens"])

        t0 = time.perf_counter()
        with ThreadPoolExecutor(in_flight) as pool:
            tokens = sum(pool.map(send, bodies))
        wall = time.perf_counter() - t0
        rps = requests / wall
        base = base or rps
        print(
            f"| {in_flight} | {requests} | {wall:.1f} s | {rps:.2f} | {tokens / wall:.0f} | "
            f"{rps / base:.2f}x |"
        )


def answer_size_table() -> None:
    from step_perception.core.types import Task

    def obj(i: int, description: bool) -> dict[str, Any]:
        o: dict[str, Any] = {
            "label": ["red cube", "blue mug", "green ball"][i % 3],
            "bbox_2d": [120 + i, 340, 260 + i, 510],
            "score": 0.9,
        }
        if description:
            o["description"] = "small, matte, on the left edge of the table"
        return o

    def answer(task: Task, n: int, old: bool) -> str:
        described = old or task is Task.DESCRIBE
        a: dict[str, Any] = {"objects": [obj(i, described) for i in range(n)]}
        if old or task is Task.DESCRIBE:
            a["summary"] = "A red cube to the left of a blue mug on a table."
        if task is Task.DESCRIBE:
            a["relations"] = [{"subject": 0, "relation": "left_of", "object": 1}]
        if task is Task.COMMAND:
            a["action"] = {"name": "pick", "target": 0}
        return json.dumps(a, separators=(",", ":"))

    print("| task | chars, 1 object | chars per extra object | former schema: 1 / per extra |")
    print("|---|---|---|---|")
    for task in Task:
        one, five = len(answer(task, 1, False)), len(answer(task, 5, False))
        old1, old5 = len(answer(task, 1, True)), len(answer(task, 5, True))
        print(
            f"| {task.value} | {one} | {(five - one) / 4:.0f} | {old1} / {(old5 - old1) / 4:.0f} |"
        )


def main() -> int:
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    with running_server(VllmServerConfig(log_path=REPO / "out" / "bench-vllm.log")) as server:
        print(f"server ready in {server.ready_after_s:.0f} s\n")
        prefill_table(server)
        print()
        batching_table(server)
    print()
    answer_size_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
