"""The production server's wire contract, on a real vLLM 0.32 serving Step-3.7's architecture.

What the node relies on, asserted against ``python -m vllm.entrypoints.openai.api_server`` with the
tiny random-weight Step-3.7 model (``--reasoning-parser step3p5``, xgrammar structured outputs with
``disable_any_whitespace``): response_format is enforced, reasoning is split off into
``message.reasoning`` (vLLM 0.32's name; older vLLM and SGLang call it ``reasoning_content``),
``thinking_token_budget`` and ``max_tokens`` bound the answer, oversize input is a clear 400, and
concurrent requests are batched. Random weights make the *content* meaningless, which is the point:
only the server's guarantees can make it schema-valid.
"""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import jsonschema
import pytest
from step_perception.core.profiles import get_profile
from step_perception.core.prompts import answer_schema
from step_perception.core.tokens import step3_image_tokens, step3_tiling
from step_perception.core.types import Task
from vllm_helpers import chat_body, scene_jpeg
from vllm_server import MAX_IMAGE_PIXELS, SERVED_MODEL, VllmServer

TIMEOUT = httpx.Timeout(120.0, connect=5.0)


def _post(server: VllmServer, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=TIMEOUT)


def _ok(server: VllmServer, body: dict[str, Any]) -> dict[str, Any]:
    reply = _post(server, body)
    assert reply.status_code == 200, reply.text
    return dict(reply.json())


def _schema(task: Task) -> dict[str, Any]:
    # The node's own schema: every value bounded, so a grammar-constrained answer always ends
    # (with the unbounded schema of before, random weights wrote one endless label).
    return answer_schema(get_profile("step3p7"), task, 3, ("pick", "push"))


def _response_format(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": "perception_answer", "schema": schema}}


@pytest.mark.parametrize("task", [Task.DETECT, Task.DESCRIBE, Task.COMMAND])
def test_response_format_gives_schema_valid_json(vllm_server: VllmServer, task: Task) -> None:
    schema = _schema(task)
    sizes = [(728, 410), (640, 480), (1280, 720)]
    for seed, (w, h) in enumerate(sizes):
        body = chat_body(
            f"Task: {task.value}\nRequest: the red cube",
            scene_jpeg(w, h, seed=seed),
            max_tokens=400,
            thinking_token_budget=8,
            response_format=_response_format(schema),
        )
        choice = _ok(vllm_server, body)["choices"][0]
        assert choice["finish_reason"] == "stop", choice
        answer = json.loads(choice["message"]["content"])
        jsonschema.validate(answer, schema)


def test_reasoning_is_split_from_the_content(vllm_server: VllmServer) -> None:
    # Sampling (temperature 1, fixed seed) makes random weights write some reasoning text; greedy
    # decoding of this model repeats <think>, which the parser drops.
    schema = _schema(Task.DETECT)
    body = chat_body(
        "Task: detect\nRequest: the red cube",
        scene_jpeg(728, 410),
        max_tokens=300,
        temperature=1.0,
        seed=7,
        thinking_token_budget=16,
        response_format=_response_format(schema),
    )
    message = _ok(vllm_server, body)["choices"][0]["message"]
    reasoning, content = message.get("reasoning"), message["content"]
    assert reasoning, message
    # vLLM 0.32's name is `reasoning`; `reasoning_content` (SGLang, older vLLM) is not sent. The
    # openai backend reads neither (test_backend_openai_faults.py covers both names).
    assert message.get("reasoning_content") is None, message
    jsonschema.validate(json.loads(content), schema)
    assert "<think>" not in content and "</think>" not in content
    assert reasoning.strip() not in content


def _thinking_tokens(choice: dict[str, Any]) -> int:
    """Generated tokens before the first ``</think>`` (from the returned logprobs)."""
    tokens = [t["token"] for t in choice["logprobs"]["content"]]
    assert "</think>" in tokens, tokens[:40]
    return tokens.index("</think>")


@pytest.mark.parametrize("budget", [4, 24])
def test_thinking_token_budget_bounds_the_reasoning(vllm_server: VllmServer, budget: int) -> None:
    body = chat_body(
        "Task: detect\nRequest: anything",
        scene_jpeg(640, 480, seed=3),
        max_tokens=300,
        temperature=1.0,
        seed=11,
        logprobs=True,
        thinking_token_budget=budget,
        response_format=_response_format(_schema(Task.DETECT)),
    )
    choice = _ok(vllm_server, body)["choices"][0]
    assert _thinking_tokens(choice) <= budget
    assert choice["finish_reason"] == "stop"


def test_without_a_budget_random_weights_never_leave_think(vllm_server: VllmServer) -> None:
    # Why the node must send thinking_token_budget to Step-3.7: without it the answer can be all
    # reasoning, and max_tokens is the only bound (honoured exactly).
    body = chat_body(
        "Task: detect\nRequest: anything",
        scene_jpeg(640, 480),
        max_tokens=24,
        response_format=_response_format(_schema(Task.DETECT)),
    )
    reply = _ok(vllm_server, body)
    choice = reply["choices"][0]
    assert choice["finish_reason"] == "length"
    assert choice["message"]["content"] is None
    assert reply["usage"]["completion_tokens"] == 24


def test_max_tokens_bounds_a_structured_answer(vllm_server: VllmServer) -> None:
    body = chat_body(
        "Task: describe\nRequest: the table",
        scene_jpeg(728, 410),
        max_tokens=20,
        thinking_token_budget=4,
        response_format=_response_format(_schema(Task.DESCRIBE)),
    )
    reply = _ok(vllm_server, body)
    assert reply["usage"]["completion_tokens"] <= 20
    assert reply["choices"][0]["finish_reason"] == "length"


def _text_only_tokens(server: VllmServer, text: str) -> int:
    reply = httpx.post(
        f"{server.root_url}/tokenize",
        json={"model": SERVED_MODEL, "messages": [{"role": "user", "content": text}]},
        timeout=TIMEOUT,
    )
    assert reply.status_code == 200, reply.text
    return int(reply.json()["count"])


@pytest.mark.parametrize(
    ("size", "image_tokens"),
    [
        ((640, 480), 171),
        ((728, 410), 337),
        ((1072, 603), 337),
        ((1280, 720), 670),
        ((1920, 1080), 836),
        ((727, 545), 171),
    ],
)
def test_image_token_function_matches_prompt_tokens(
    vllm_server: VllmServer, size: tuple[int, int], image_tokens: int
) -> None:
    text = "Task: detect\nRequest: the red cube"
    assert step3_image_tokens(*size) == image_tokens
    body = chat_body(text, scene_jpeg(*size), max_tokens=1)
    usage = _ok(vllm_server, body)["usage"]
    assert usage["prompt_tokens"] - _text_only_tokens(vllm_server, text) == image_tokens


# Sizes around every branch of vLLM's ImagePatcher: the 728 threshold, 1.5 and 4 aspect limits,
# the 20 % crop round-up, the 3024 cap, thin images padded to a square.
_EDGE_SIZES = sorted(
    {
        (w, h)
        for w in (
            1,
            16,
            31,
            100,
            503,
            504,
            505,
            600,
            604,
            605,
            700,
            727,
            728,
            729,
            1008,
            1109,
            1110,
            1512,
            2016,
            3024,
            3025,
            4000,
            6048,
        )
        for h in (1, 20, 31, 32, 120, 181, 400, 410, 485, 486, 504, 545, 603, 720, 1080, 3100)
    }
)


def test_image_token_function_equals_vllm_processor_code() -> None:
    # vLLM's own ImagePatcher / Step3VLImageProcessor, run in the server's venv (no server needed).
    from vllm_server import VENV

    code = (
        "import json, sys\n"
        "from vllm.transformers_utils.processors.step3_vl import Step3VLImageProcessor\n"
        "p = Step3VLImageProcessor()\n"
        "sizes = json.load(sys.stdin)\n"
        "print(json.dumps([p.get_num_image_tokens(w, h) for w, h in sizes]))\n"
    )
    run = subprocess.run(
        [str(VENV / "bin" / "python"), "-c", code],
        input=json.dumps(_EDGE_SIZES),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    theirs = json.loads(run.stdout.strip().splitlines()[-1])
    ours = [step3_image_tokens(w, h) for w, h in _EDGE_SIZES]
    mismatches = [(s, o, t) for s, o, t in zip(_EDGE_SIZES, ours, theirs, strict=True) if o != t]
    assert not mismatches, mismatches[:10]
    assert step3_tiling(1920, 1080).crops == 8


def test_image_above_the_pixel_limit_is_a_400(vllm_server: VllmServer) -> None:
    body = chat_body("Task: detect", scene_jpeg(4000, 2400), max_tokens=4)
    assert MAX_IMAGE_PIXELS < 4000 * 2400
    reply = _post(vllm_server, body)
    assert reply.status_code == 400, reply.text
    assert "exceed" in reply.json()["error"]["message"]


def test_prompt_past_max_model_len_is_a_400(vllm_server: VllmServer) -> None:
    body = chat_body("red cube " * 3000, scene_jpeg(640, 480), max_tokens=4)
    reply = _post(vllm_server, body)
    assert reply.status_code == 400, reply.text
    assert "maximum context length" in reply.json()["error"]["message"]


_RUNNING_RE = re.compile(r"Running: (\d+) reqs")


@pytest.mark.parametrize("in_flight", [2, 4])
def test_concurrent_requests_are_batched(vllm_server: VllmServer, in_flight: int) -> None:
    # The engine logs its scheduler's state every 0.5 s (VLLM_LOG_STATS_INTERVAL, set by the
    # fixture): "Running: N reqs" is how many requests shared its engine steps. Each request decodes
    # `tokens` sampled tokens (no budget and ignore_eos: it stays in <think>), so that the first is
    # still decoding when the last arrives. The server takes concurrent requests in about 1.4 s
    # apart here (its API process shares one core with the engine's busy-polling scheduler; the
    # other core runs the model): with 600 tokens each (~1.3 s alone), 4 requests ran one by one,
    # "Running: 1" throughout, in 2 runs of 2026-12-02 (image or text prompts alike).
    # (vllm:num_requests_running in /metrics stayed 0 on this CPU build, so the log it is.)
    # ~3 s / ~7 s alone at ~480 tokens/s; 3200 + the prompt (~250) is within max_model_len 4096.
    tokens = {2: 1500, 4: 3200}[in_flight]
    log_start = vllm_server.log_path.stat().st_size
    frame = scene_jpeg(640, 480, seed=5)
    bodies = [
        chat_body(
            f"Task: detect\nRequest: object {i}",
            frame,
            max_tokens=tokens,
            ignore_eos=True,
            temperature=1.0,
            seed=i,
        )
        for i in range(in_flight)
    ]
    with ThreadPoolExecutor(in_flight) as pool:
        replies = list(pool.map(lambda b: _ok(vllm_server, b), bodies))
    assert all(r["usage"]["completion_tokens"] == tokens for r in replies)
    with open(vllm_server.log_path, "rb") as log:
        log.seek(log_start)
        running = [int(n) for n in _RUNNING_RE.findall(log.read().decode(errors="replace"))]
    assert max(running) == in_flight, running
