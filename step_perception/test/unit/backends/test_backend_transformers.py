"""The in-process transformers backend on CPU with the tiny local LLaVA model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import make_request
from step_perception.backends.transformers_backend import (
    TransformersBackend,
    TransformersBackendConfig,
)
from step_perception.core.backend import Backend
from step_perception.core.errors import (
    BackendError,
    BackendTimeoutError,
    BackendUnavailableError,
    ConfigError,
)
from step_perception.core.types import ImageTransform, PreparedImage


@pytest.fixture(scope="module")
def cpu_backend(tiny_model_dir: Path) -> Iterator[TransformersBackend]:
    backend = TransformersBackend(
        TransformersBackendConfig(model=str(tiny_model_dir), device="cpu")
    )
    backend.wait_loaded(timeout=120)
    yield backend
    backend.close()


def test_generates_on_cpu_greedy_and_deterministic(
    cpu_backend: TransformersBackend, tiny_model_dir: Path
) -> None:
    assert isinstance(cpu_backend, Backend)
    health = cpu_backend.health()
    assert (health.healthy, health.state) == (True, "loaded")
    assert "cpu (float32)" in health.detail
    request = make_request(str(tiny_model_dir), max_tokens=12)
    t0 = time.monotonic()
    future = cpu_backend.submit(request)
    assert time.monotonic() - t0 < 0.05  # never blocks the caller
    first = future.result(timeout=60)
    again = cpu_backend.submit(request).result(timeout=60)
    assert first.text and isinstance(first.text, str)
    assert again.text == first.text  # greedy
    assert first.usage is not None
    # Special tokens are suppressed in the tiny model: exactly max_tokens come out.
    assert first.usage.completion_tokens == 12
    assert first.usage.prompt_tokens > 16  # system + 16 image tokens + user text
    assert first.endpoint == f"transformers:{tiny_model_dir}"
    assert first.latency_s > 0 and first.attempts == 1


def test_the_image_reaches_the_model(
    cpu_backend: TransformersBackend, tiny_model_dir: Path
) -> None:
    # Same prompt, other image bytes: a model that saw no image would answer the same.
    texts = {
        cpu_backend.submit(make_request(str(tiny_model_dir), seed=s, max_tokens=12)).result(60).text
        for s in (1, 2, 3)
    }
    assert len(texts) > 1


def test_bad_image_bytes_are_a_backend_error(
    cpu_backend: TransformersBackend, tiny_model_dir: Path
) -> None:
    request = make_request(str(tiny_model_dir))
    broken = PreparedImage(b"not a png", "image/png", 4, 4, ImageTransform(1.0, 1.0))
    bad = type(request)(**{**request.__dict__, "image": broken})
    with pytest.raises(BackendError, match="cannot decode the image/png image"):
        cpu_backend.submit(bad).result(timeout=30)


def test_expired_deadline_is_a_timeout(
    cpu_backend: TransformersBackend, tiny_model_dir: Path
) -> None:
    request = make_request(str(tiny_model_dir), deadline=time.monotonic() - 0.01)
    with pytest.raises(BackendTimeoutError, match="deadline"):
        cpu_backend.submit(request).result(timeout=30)


def test_missing_model_fails_typed(tmp_path: Path) -> None:
    backend = TransformersBackend(
        TransformersBackendConfig(model=str(tmp_path / "no-such-model"), device="cpu")
    )
    try:
        with pytest.raises(BackendUnavailableError, match="cannot load model"):
            backend.wait_loaded(timeout=60)
        health = backend.health()
        assert (health.healthy, health.state) == (False, "failed")
        with pytest.raises(BackendUnavailableError, match="model not loaded"):
            backend.submit(make_request(str(tmp_path))).result(timeout=30)
    finally:
        backend.close()


def test_close_frees_and_fails_later_requests(tiny_model_dir: Path) -> None:
    backend = TransformersBackend(
        TransformersBackendConfig(model=str(tiny_model_dir), device="cpu")
    )
    backend.wait_loaded(timeout=60)
    backend.close()
    backend.close()
    assert backend.health().state == "closed"
    with pytest.raises(BackendUnavailableError, match="closed"):
        backend.submit(make_request(str(tiny_model_dir))).result(timeout=5)


def test_config_validation() -> None:
    with pytest.raises(ConfigError):
        TransformersBackendConfig(model="")
    with pytest.raises(ConfigError):
        TransformersBackendConfig(model="m", device="tpu")
    with pytest.raises(ConfigError):
        TransformersBackendConfig(model="m", dtype="int3")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        TransformersBackendConfig(model="m", device="cpu", quantization="4bit")
