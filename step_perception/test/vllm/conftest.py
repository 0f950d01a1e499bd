"""Fixtures of the vLLM tests: one real vLLM server (tiny Step-3.7 model) for the whole test run.

The server comes from serving/vllm_server.py, the module ``make vllm-serve`` and the benchmarks
use too. Without ``.venv-vllm`` the tests FAIL (they do not skip): ``make test`` builds it first
(``make vllm``), and a silently skipped production-server suite would hide a broken set-up.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from vllm_server import SERVED_MODEL, VllmServer, VllmServerConfig, VllmServerError, require_built

_SERVER_KEY = pytest.StashKey[VllmServer]()


@pytest.fixture(scope="session")
def vllm_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[VllmServer]:
    """A started vLLM server on 127.0.0.1 (stopped at the end of the session, whatever happens)."""
    try:
        require_built()
    except VllmServerError as err:
        pytest.fail(str(err), pytrace=False)
    server = VllmServer(
        VllmServerConfig(
            log_path=tmp_path_factory.mktemp("vllm") / "server.log",
            # The engine's scheduler state in the log every 0.5 s (the batching test reads it).
            env={"VLLM_LOG_STATS_INTERVAL": "0.5"},
        )
    )
    try:
        server.start()  # stops the process group itself when the start fails
    except VllmServerError as err:
        pytest.fail(str(err), pytrace=False)
    print(f"vLLM server ready in {server.ready_after_s:.1f} s at {server.base_url}")
    request.config.stash[_SERVER_KEY] = server
    try:
        yield server
    finally:
        server.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[Any]:
    """Attach the end of the server's log to every failed vLLM test."""
    outcome = yield
    report = outcome.get_result()
    server = item.config.stash.get(_SERVER_KEY, None)
    if report.failed and server is not None:
        report.sections.append(("vLLM server log (end)", server.log_tail(6000)))


def scene_jpeg(width: int, height: int, seed: int = 0, quality: int = 85) -> bytes:
    """A real JPEG of a synthetic tabletop: a gradient, a few coloured boxes and noise."""
    rng = np.random.default_rng(seed)
    y = np.linspace(60, 180, height, dtype=np.float32)[:, None]
    img = np.repeat(np.repeat(y, width, axis=1)[:, :, None], 3, axis=2)
    img += rng.normal(0, 6, size=img.shape).astype(np.float32)
    for _ in range(3):
        w, h = (
            int(rng.integers(width // 10, width // 4)),
            int(rng.integers(height // 10, height // 4)),
        )
        x, yy = int(rng.integers(0, width - w)), int(rng.integers(0, height - h))
        img[yy : yy + h, x : x + w] = rng.integers(0, 255, size=3)
    ok, buf = cv2.imencode(
        ".jpg", np.clip(img, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    assert ok
    return buf.tobytes()


def data_url(jpeg: bytes) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def chat_body(
    text: str, jpeg: bytes | None = None, *, system: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A chat-completions body as the node's openai backend builds it (image first, then text)."""
    content: list[dict[str, Any]] = []
    if jpeg is not None:
        content.append({"type": "image_url", "image_url": {"url": data_url(jpeg)}})
    content.append({"type": "text", "text": text})
    messages: list[dict[str, Any]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": content})
    body: dict[str, Any] = {"model": SERVED_MODEL, "messages": messages, "temperature": 0.0}
    body.update(extra)
    return body
