"""vLLM serving Step-3.7 WITHOUT ``--reasoning-parser``: the node's own ``<think>`` stripping copes.

A second server (the same launcher, ``reasoning_parser=None``; about 45 s to start, module-scoped
so it lives only while this file runs). vLLM 0.32 has no per-request switch for this:
``include_reasoning: false`` still runs the server's parser (it only drops the reasoning), so the
"no parser" case needs a server started without one.

Without a parser nothing separates the reasoning: whatever the model writes before ``</think>``
(Step-3.7's chat template opens the answer inside ``<think>``) stays in ``message.content``. Random
weights write no JSON by themselves, so the answer's shape is fixed by a per-request regex
(``structured_outputs``, which a server without a reasoning parser applies from the first
generated token): free reasoning words, ``</think>``, then the node's JSON. The content is then
what a real Step-3.7 writes on such a server, and the node's parsing must see only the JSON.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from step_perception.backends.openai import OpenAIBackend, OpenAIBackendConfig
from step_perception.core.config import PerceptionConfig
from step_perception.core.imaging import prepare_array_for
from step_perception.core.parsing import parse_answer, strip_reasoning
from step_perception.core.profiles import get_profile
from step_perception.core.prompts import build_request
from step_perception.core.types import ModelRequest
from vllm_helpers import request_body
from vllm_server import SERVED_MODEL, VllmServer, VllmServerConfig, VllmServerError

#: The answer after the reasoning: one red cube, 0-1000 of the image as sent (step3p7).
_ANSWER = '{"objects":[{"label":"red cube","bbox_2d":[100,200,300,400]}]}'
#: Reasoning words (what a thinking model writes first), then the closing tag, then the answer.
_SHAPE = r"[a-z]{2,8}( [a-z]{2,8}){3,6}</think>" + re.escape(_ANSWER)


@pytest.fixture(scope="module")
def plain_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmServer]:
    """A vLLM server of the tiny Step-3.7 model started without a reasoning parser."""
    server = VllmServer(
        VllmServerConfig(
            reasoning_parser=None, log_path=tmp_path_factory.mktemp("vllm-plain") / "server.log"
        )
    )
    try:
        server.start()
    except VllmServerError as err:
        pytest.fail(str(err), pytrace=False)
    print(f"vLLM (no reasoning parser) ready in {server.ready_after_s:.1f} s")
    try:
        yield server
    finally:
        server.stop()


def _request(**config: object) -> ModelRequest:
    import cv2
    import numpy as np
    from vllm_helpers import scene_jpeg

    bgr = cv2.imdecode(np.frombuffer(scene_jpeg(1280, 720, 2), np.uint8), cv2.IMREAD_COLOR)
    cfg = PerceptionConfig.from_mapping(
        {"endpoint": "http://127.0.0.1:1/v1", "model": SERVED_MODEL, "task": "detect", **config}
    )
    return build_request(cfg, prepare_array_for(bgr, cfg))


def _body(req: ModelRequest, **extra: Any) -> dict[str, Any]:
    return request_body(req, max_tokens=200, temperature=1.0, seed=5, **extra)


def test_think_in_the_content_never_reaches_the_parser(plain_server: VllmServer) -> None:
    req = _request()
    reply = httpx.post(
        f"{plain_server.base_url}/chat/completions",
        json=_body(req, structured_outputs={"regex": _SHAPE}),
        timeout=120,
    )
    assert reply.status_code == 200, reply.text
    message = reply.json()["choices"][0]["message"]
    content = message["content"]
    # No parser: no separate reasoning, the thoughts and the closing tag are in the content.
    assert not message.get("reasoning") and not message.get("reasoning_content"), message
    thoughts, sep, answer = content.partition("</think>")
    assert sep and thoughts.strip() and answer == _ANSWER, content
    # What the backend hands the parser (it calls strip_reasoning on every reply): the JSON only.
    stripped = strip_reasoning(content)
    assert stripped == _ANSWER and thoughts.strip() not in stripped
    parsed = parse_answer(stripped, get_profile("step3p7"), req.image)
    assert [d.label for d in parsed.detections] == ["red cube"]
    # 100..300 of 1000 of the sent width is 128..384 source pixels of the 1280-wide frame.
    box = parsed.detections[0].box
    assert (round(box.x1), round(box.x2)) == (128, 384), box


def test_the_node_request_still_gets_schema_valid_json(plain_server: VllmServer) -> None:
    # The node's own request through its backend (response_format, step3p7's thinking budget):
    # without a reasoning parser vLLM applies the grammar from the first token, so the answer is
    # JSON at once (the model cannot think first), and the budget is refused or ignored.
    req = _request(max_tokens=1500, max_objects=4)
    backend = OpenAIBackend(
        OpenAIBackendConfig(endpoints=(plain_server.base_url,), request_timeout_s=60.0)
    )
    try:
        reply = backend.submit(req).result(timeout=120)
    finally:
        backend.close()
    assert "<think>" not in reply.text and "</think>" not in reply.text
    assert req.json_schema is not None
    jsonschema.validate(json.loads(reply.text), dict(req.json_schema))
