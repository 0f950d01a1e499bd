"""The openai backend over the wire to a real ``transformers serve`` of the tiny model."""

from __future__ import annotations

from pathlib import Path

from conftest import REFERENCE_MODEL_DIR, make_request
from fault_server import closed_port
from step_perception.backends.openai import OpenAIBackend, OpenAIBackendConfig
from step_perception.backends.transformers_backend import (
    TransformersBackend,
    TransformersBackendConfig,
)


def _backend(*urls: str) -> OpenAIBackend:
    # CPU generation on a shared 2-core box: a generous per-attempt timeout.
    return OpenAIBackend(OpenAIBackendConfig(endpoints=urls, request_timeout_s=60.0, max_retries=1))


def test_reply_over_the_wire(serve_url: str, tiny_model_dir: Path) -> None:
    backend = _backend(serve_url)
    try:
        reply = backend.submit(make_request(str(tiny_model_dir), max_tokens=12)).result(timeout=90)
        health = backend.health()
    finally:
        backend.close()
    assert reply.text and isinstance(reply.text, str)
    assert reply.usage is not None
    assert reply.usage.completion_tokens == 12  # the tiny model never stops early
    assert reply.usage.prompt_tokens > 16  # the image's 16 tokens made it into the prompt
    assert reply.latency_s > 0
    assert reply.endpoint == serve_url and reply.attempts == 1
    assert health.state == "closed"


def test_serve_ignores_response_format_and_reasoning_effort(
    serve_url: str, tiny_model_dir: Path
) -> None:
    # transformers serve drops response_format and reasoning_effort: the greedy answer is the
    # same text, token for token, as that of the same request without them.
    schema = {"type": "object", "properties": {"objects": {"type": "array"}}}
    backend = _backend(serve_url)
    try:
        plain = backend.submit(make_request(str(tiny_model_dir), max_tokens=8)).result(timeout=90)
        request = make_request(
            str(tiny_model_dir), max_tokens=8, json_schema=schema, use_response_format=True
        )
        reply = backend.submit(request).result(timeout=90)
    finally:
        backend.close()
    assert reply.usage is not None and reply.usage.completion_tokens == 8
    assert reply.text and reply.text == plain.text


def test_reference_model_answer_over_the_wire_parses_to_the_scene(
    reference_serve_url: str,
) -> None:
    # The embedded reference model speaks the node's wire format: its answer, sent through
    # `transformers serve` and the openai backend, parses into the scene's objects.
    from step_perception.core.config import PerceptionConfig
    from step_perception.core.imaging import prepare_array
    from step_perception.core.parsing import parse_answer
    from step_perception.core.profiles import get_profile
    from step_perception.core.prompts import build_request
    from step_perception.core.types import Box2D
    from step_perception_tools.scenes import render_scene

    scene = render_scene(4242, 0)  # held out from the model's training
    config = PerceptionConfig.from_mapping(
        {"model": str(REFERENCE_MODEL_DIR), "model_profile": "generic", "task": "detect"}
    )
    image = prepare_array(scene.rgb[..., ::-1].copy(), max_side=config.max_image_side)
    backend = _backend(reference_serve_url)
    try:
        reply = backend.submit(build_request(config, image)).result(timeout=90)
    finally:
        backend.close()
    answer = parse_answer(reply.text, get_profile("generic"), image)
    assert answer.dropped_objects == 0, reply.text
    found = sum(
        any(d.label == t.label and d.box.iou(Box2D(*t.box)) >= 0.5 for d in answer.detections)
        for t in scene.objects
    )
    assert found >= len(scene.objects) - 1 >= 1, (reply.text, [t.label for t in scene.objects])
    assert len(answer.detections) <= len(scene.objects) + 1, reply.text


def test_failover_from_a_dead_endpoint_to_the_server(serve_url: str, tiny_model_dir: Path) -> None:
    dead = f"http://127.0.0.1:{closed_port()}/v1"
    backend = _backend(dead, serve_url)
    try:
        reply = backend.submit(make_request(str(tiny_model_dir), max_tokens=4)).result(timeout=90)
    finally:
        backend.close()
    assert reply.endpoint == serve_url


def test_same_answer_as_in_process(serve_url: str, tiny_model_dir: Path) -> None:
    # Same weights, same chat template, same image bytes, greedy: the server's answer
    # and the in-process backend's must agree token for token.
    request = make_request(str(tiny_model_dir), seed=5, max_tokens=10)
    http = _backend(serve_url)
    local = TransformersBackend(TransformersBackendConfig(model=str(tiny_model_dir), device="cpu"))
    try:
        over_wire = http.submit(request).result(timeout=90)
        in_process = local.submit(request).result(timeout=90)
    finally:
        http.close()
        local.close()
    assert over_wire.text == in_process.text
    assert over_wire.usage == in_process.usage
