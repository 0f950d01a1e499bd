"""Fixtures of the backend tests: request builder, tiny local model, a real ``transformers serve``.

The tiny model and the server are session-scoped: built/started once, shared by
every test that asks for them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from step_perception.core.types import (
    ImageTransform,
    ModelRequest,
    PreparedImage,
    SamplingParams,
)
from tiny_model import build_tiny_llava

SERVE_READY_TIMEOUT_S = 90.0


def make_image(seed: int = 0, width: int = 64, height: int = 48) -> PreparedImage:
    """A real PNG of coloured noise with a red square, as imaging.py would send it."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    pixels[8:24, 8:24] = (0, 0, 255)  # BGR red
    ok, buf = cv2.imencode(".png", pixels)
    assert ok
    return PreparedImage(
        data=buf.tobytes(),
        mime="image/png",
        width=width,
        height=height,
        transform=ImageTransform(scale_x=2.0, scale_y=2.0),
    )


def make_request(
    model: str = "fault-model",
    *,
    user: str = "Task: detect\nRequest: the red cube",
    seed: int = 0,
    max_tokens: int = 16,
    deadline: float | None = None,
    **kwargs: Any,
) -> ModelRequest:
    return ModelRequest(
        model=model,
        profile="generic",
        system="You are a robot's perception module. Answer with JSON only.",
        user=user,
        image=make_image(seed),
        sampling=SamplingParams(temperature=0.0, max_tokens=max_tokens),
        deadline=deadline,
        **kwargs,
    )


@pytest.fixture
def request_factory() -> Callable[..., ModelRequest]:
    return make_request


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight LLaVA model folder built locally (no hub)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    return Path(build_tiny_llava(tmp_path_factory.mktemp("tiny_llava")))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve_cli() -> str:
    beside = Path(sys.executable).parent / "transformers"
    found = str(beside) if beside.exists() else shutil.which("transformers")
    if found is None:
        pytest.fail("the `transformers` CLI is missing: install transformers[serving]")
    return found


#: The embedded reference model (models/tabletop-ref): it answers synthetic scenes in JSON.
REFERENCE_MODEL_DIR = Path(__file__).resolve().parents[4] / "models" / "tabletop-ref"


@pytest.fixture(scope="session")
def serve_url(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT/v1`` of a real ``transformers serve`` of the tiny model."""
    yield from _serve(tiny_model_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def reference_serve_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``http://127.0.0.1:PORT/v1`` of a real ``transformers serve`` of the reference model."""
    assert (REFERENCE_MODEL_DIR / "config.json").is_file(), f"missing {REFERENCE_MODEL_DIR}"
    yield from _serve(REFERENCE_MODEL_DIR, tmp_path_factory, "--trust-remote-code")


def _serve(model_dir: Path, tmp_path_factory: pytest.TempPathFactory, *extra: str) -> Iterator[str]:
    port = _free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_NO_ADVISORY_WARNINGS="1")
    cmd = [
        _serve_cli(),
        "serve",
        str(model_dir),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--device",
        "cpu",
        "--log-level",
        "warning",
        *extra,
    ]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                tail = log_path.read_text()[-2000:]
                pytest.fail(f"transformers serve exited with {proc.returncode}: {tail}")
            with (
                contextlib.suppress(OSError),
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r,
            ):
                if r.status == 200:
                    break
            if time.monotonic() - started > SERVE_READY_TIMEOUT_S:
                tail = log_path.read_text()[-2000:]
                pytest.fail(f"transformers serve not ready in {SERVE_READY_TIMEOUT_S} s: {tail}")
            time.sleep(0.1)
        print(f"transformers serve ready in {time.monotonic() - started:.1f} s")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
