"""Helpers of the vLLM tests (a module of its own: ``conftest`` is a shared name across folders)."""

from __future__ import annotations

import base64
from typing import Any

import cv2
import numpy as np
from vllm_server import SERVED_MODEL


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


def request_body(req: Any, **extra: Any) -> dict[str, Any]:
    """The chat body of a node's ``ModelRequest`` (system, then the image and the text)."""
    return {
        "model": SERVED_MODEL,
        "messages": [
            {"role": "system", "content": req.system},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": req.image.data_url()}},
                    {"type": "text", "text": req.user},
                ],
            },
        ],
        **extra,
    }
