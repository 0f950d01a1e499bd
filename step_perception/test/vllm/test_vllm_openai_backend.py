"""The node's ``openai`` backend against the real vLLM server (tiny Step-3.7 model).

Requests are built the node's way (``core.prompts.build_request`` on an image prepared by
``core.imaging``) and sent through ``OpenAIBackend``'s public API. A 4xx must come back as a typed
``BackendError`` after exactly one attempt (a bad request does not get better by retrying), and an
answer that is all reasoning must be a typed error, not an empty parse.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import cv2
import jsonschema
import numpy as np
import pytest
from step_perception.backends.openai import OpenAIBackend, OpenAIBackendConfig
from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import BackendError, BackendTimeoutError, BackendUnavailableError
from step_perception.core.imaging import prepare_array_for
from step_perception.core.profiles import get_profile
from step_perception.core.prompts import build_request
from step_perception.core.tokens import step3_image_tokens
from step_perception.core.types import ModelRequest, Task
from vllm_helpers import request_body, scene_jpeg
from vllm_server import SERVED_MODEL, VllmServer


@pytest.fixture
def backend(vllm_server: VllmServer) -> Iterator[OpenAIBackend]:
    b = OpenAIBackend(
        OpenAIBackendConfig(
            endpoints=(vllm_server.base_url,),
            model=SERVED_MODEL,
            request_timeout_s=60.0,
            max_retries=2,
            backoff_base_s=0.01,
        )
    )
    yield b
    b.close()


def _request(width: int, height: int, *, seed: int = 0, **config: object) -> ModelRequest:
    """The node's request for one synthetic frame (its geometry, prompt, schema, sampling)."""
    bgr = cv2.imdecode(np.frombuffer(scene_jpeg(width, height, seed), np.uint8), cv2.IMREAD_COLOR)
    cfg = PerceptionConfig.from_mapping(
        {"endpoint": "http://127.0.0.1:1/v1", "model": SERVED_MODEL, **config}
    )
    return build_request(cfg, prepare_array_for(bgr, cfg))


def _count_4xx(server: VllmServer) -> float:
    import httpx

    total = 0.0
    for line in httpx.get(f"{server.root_url}/metrics", timeout=10).text.splitlines():
        if line.startswith("http_requests_total{") and 'status="4xx"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _assert_client_error_once(backend: OpenAIBackend, server: VllmServer, req: ModelRequest) -> str:
    before = _count_4xx(server)
    with pytest.raises(BackendError) as info:
        backend.submit(req).result(timeout=120)
    err = info.value
    assert not isinstance(err, (BackendTimeoutError, BackendUnavailableError)), repr(err)
    assert "HTTP 400" in str(err)
    assert "attempt 1" in str(err) and "gave up" not in str(err)
    assert _count_4xx(server) - before == 1  # not retried
    assert backend.health().healthy  # a client error is not the server's failure
    return str(err)


def test_prompt_past_max_model_len_is_a_typed_unretried_error(
    backend: OpenAIBackend, vllm_server: VllmServer
) -> None:
    req = _request(640, 480, prompt="the red cube next to " * 60, task="detect")
    long_user = req.user + ("\nred cube" * 2500)
    req = dataclasses.replace(req, user=long_user)
    message = _assert_client_error_once(backend, vllm_server, req)
    assert "maximum context length" in message


def test_image_above_the_servers_limit_is_a_typed_unretried_error(
    backend: OpenAIBackend, vllm_server: VllmServer
) -> None:
    # The node would never send this (it shrinks to max_image_side); a misconfigured max side does.
    req = _request(4000, 2400, max_image_side=4000)
    message = _assert_client_error_once(backend, vllm_server, req)
    assert "pixels" in message


@pytest.mark.parametrize("task", list(Task))
def test_node_requests_get_schema_valid_answers(backend: OpenAIBackend, task: Task) -> None:
    # The node's own request (its schema, its profile's sampling) with a small thinking budget:
    # vLLM closes <think> after 8 tokens and the grammar makes the rest a valid answer, from
    # random weights (max_objects 4 bounds the worst case: 4 objects of 64-char labels). What the
    # parser then keeps of random boxes is not the point here.
    for seed, size in enumerate([(1280, 720), (640, 480), (1920, 1080)]):
        req = _request(
            *size, seed=seed, task=task, thinking_token_budget=8, max_tokens=1500, max_objects=4
        )
        assert req.sampling.thinking_token_budget == 8 and req.use_response_format
        reply = backend.submit(req).result(timeout=120)
        assert req.json_schema is not None
        jsonschema.validate(json.loads(reply.text), dict(req.json_schema))
        assert "<think>" not in reply.text
        assert reply.usage is not None and reply.attempts == 1
        text_tokens = reply.usage.prompt_tokens - step3_image_tokens(
            req.image.width, req.image.height
        )
        assert 0 < text_tokens < 1000


def test_profile_default_sends_the_thinking_budget() -> None:
    req = _request(640, 480)
    assert req.sampling.thinking_token_budget == 1024  # step3p7's default


def test_all_reasoning_answer_is_a_typed_error(backend: OpenAIBackend) -> None:
    # Without thinking_token_budget (-1: not sent) random weights never close <think>: the server
    # answers content=null after max_tokens. That must be a clear error, not an empty parse.
    req = _request(1280, 720, max_tokens=16, thinking_token_budget=-1)
    assert req.sampling.thinking_token_budget is None
    assert req.image.width == 728 and req.image.height == 410
    with pytest.raises(BackendError) as info:
        backend.submit(req).result(timeout=120)
    assert "no text content" in str(info.value) and "length" in str(info.value)


@pytest.mark.parametrize(
    ("detail", "sent", "image_tokens"),
    [("high", (728, 410), 337), ("balanced", (1074, 604), 337), ("low", (727, 545), 171)],
)
def test_node_request_costs_what_the_profile_says(
    vllm_server: VllmServer, detail: str, sent: tuple[int, int], image_tokens: int
) -> None:
    import httpx

    # The node's own request for a 720p frame at each detail (system prompt, task text, JPEG), on
    # the wire as the backend sends it: prompt tokens = its text alone + the image's tokens, and
    # the image's tokens are what the step3p7 profile's cost function says.
    req = _request(1280, 720, max_tokens=1, detail=detail)
    assert (req.image.width, req.image.height) == sent
    cost = get_profile("step3p7").image_tokens
    assert cost is not None and cost(*sent) == image_tokens
    body = request_body(req, max_tokens=1)
    usage = httpx.post(f"{vllm_server.base_url}/chat/completions", json=body, timeout=60).json()[
        "usage"
    ]
    text_only = httpx.post(
        f"{vllm_server.root_url}/tokenize",
        json={
            "model": SERVED_MODEL,
            "messages": [
                {"role": "system", "content": req.system},
                {"role": "user", "content": req.user},
            ],
        },
        timeout=60,
    ).json()["count"]
    assert usage["prompt_tokens"] - text_only == step3_image_tokens(
        req.image.width, req.image.height
    )
