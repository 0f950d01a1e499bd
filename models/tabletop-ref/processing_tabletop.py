"""Processor of the tabletop reference model: OpenAI-style chat messages + image -> model inputs.

``apply_chat_template`` accepts the messages ``transformers serve`` builds (``{"type": "image",
"url": "data:image/jpeg;base64,..."}``), OpenAI-style parts (``{"type": "image_url", "image_url":
{"url": ...}}``), local paths, PIL images and RGB numpy arrays.  Remote ``http(s)`` URLs are
refused: the model never fetches anything.  The image is resized to the detector's input size (no
padding, aspect not kept: boxes are normalised to the image, so stretching keeps them exact).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

try:
    from .tabletop_text import ASSISTANT, END, IMAGE, SYSTEM, USER
except ImportError:  # imported as a plain module
    from tabletop_text import ASSISTANT, END, IMAGE, SYSTEM, USER

_ROLE = {"system": SYSTEM, "developer": SYSTEM, "user": USER, "assistant": ASSISTANT}


def load_image(item: Any) -> np.ndarray:
    """Load an RGB uint8 array from a data URL, a local path, a PIL image or an array."""
    if isinstance(item, np.ndarray):
        arr = item
    elif hasattr(item, "convert") and hasattr(item, "size"):  # PIL.Image
        arr = np.asarray(item.convert("RGB"))
    elif isinstance(item, (bytes, bytearray)):
        arr = _decode_bytes(bytes(item))
    elif isinstance(item, str):
        if item.startswith("data:"):
            _, _, payload = item.partition(",")
            try:
                raw = base64.b64decode(payload, validate=False)
            except ValueError as err:
                raise ValueError("image data URL is not valid base64") from err
            arr = _decode_bytes(raw)
        elif item.startswith(("http://", "https://")):
            raise ValueError("remote image URLs are not fetched; send a data: URL")
        else:
            bgr = cv2.imread(item.removeprefix("file://"), cv2.IMREAD_COLOR)
            if bgr is None:
                raise ValueError(f"cannot read image file {item!r}")
            arr = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    else:
        raise ValueError(f"unsupported image input {type(item).__name__}")
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"image must be HxWx3, got shape {arr.shape}")
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8, copy=False))


def _decode_bytes(raw: bytes) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("image bytes could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class TabletopProcessor(ProcessorMixin):
    """Tokenizer + image resizing/normalisation for ``TabletopForConditionalGeneration``."""

    tokenizer_class = "PreTrainedTokenizerFast"

    def __init__(
        self,
        tokenizer: Any = None,
        input_width: int = 512,
        input_height: int = 288,
        image_mean: Sequence[float] = (0.5, 0.5, 0.5),
        image_std: Sequence[float] = (0.25, 0.25, 0.25),
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.input_width = int(input_width)
        self.input_height = int(input_height)
        self.image_mean = [float(v) for v in image_mean]
        self.image_std = [float(v) for v in image_std]
        super().__init__(tokenizer, chat_template=chat_template)

    # -- images ------------------------------------------------------------------------------

    def preprocess_image(self, image: Any) -> np.ndarray:
        """(3, H, W) float32, resized with area averaging and normalised."""
        rgb = load_image(image)
        if rgb.shape[1] != self.input_width or rgb.shape[0] != self.input_height:
            rgb = cv2.resize(
                rgb, (self.input_width, self.input_height), interpolation=cv2.INTER_AREA
            )
        x = rgb.astype(np.float32) * (1.0 / 255.0)
        x = (x - np.asarray(self.image_mean, np.float32)) / np.asarray(self.image_std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    # -- the public calls --------------------------------------------------------------------

    def __call__(  # type: ignore[override]
        self,
        images: Any = None,
        text: str | list[str] | None = None,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> BatchFeature:
        """Tokenise ``text`` (one prompt or a batch) and preprocess ``images`` (one per prompt)."""
        texts = [text] if isinstance(text, str) else list(text or [""])
        ids = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        width = max(len(r) for r in ids)
        pad = self.tokenizer.pad_token_id or 0
        # left padding: the answer continues every row at the same position
        data: dict[str, Any] = {
            "input_ids": [[pad] * (width - len(r)) + r for r in ids],
            "attention_mask": [[0] * (width - len(r)) + [1] * len(r) for r in ids],
        }
        if images is not None:
            imgs = images if isinstance(images, (list, tuple)) else [images]
            data["pixel_values"] = np.stack([self.preprocess_image(im) for im in imgs])
        if return_tensors == "pt":
            data = {
                k: torch.tensor(
                    np.asarray(v), dtype=torch.float32 if k == "pixel_values" else torch.long
                )
                for k, v in data.items()
            }
        return BatchFeature(data=data)

    def render_prompt(
        self, conversation: Sequence[Mapping[str, Any]], add_generation_prompt: bool = True
    ) -> tuple[str, list[Any]]:
        """Render one conversation's prompt text; return it with the images it carries."""
        parts: list[str] = []
        images: list[Any] = []
        for msg in conversation:
            parts.append(_ROLE.get(str(msg.get("role", "user")), USER))
            content = msg.get("content") or []
            if isinstance(content, str):
                content = [{"type": "text", "text": content}]
            for c in content:
                kind = c.get("type")
                if kind in ("text", "input_text"):
                    parts.append(str(c.get("text", "")))
                elif kind in ("image", "image_url", "input_image"):
                    src = c.get("image", c.get("url", c.get("path", c.get("image_url"))))
                    if isinstance(src, Mapping):
                        src = src.get("url")
                    if src is None:
                        raise ValueError("image content part without image, url or path")
                    images.append(src)
                    parts.append(IMAGE)
            parts.append(END)
        if add_generation_prompt:
            parts.append(ASSISTANT)
        return "".join(parts), images

    def apply_chat_template(  # type: ignore[override]
        self,
        conversation: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        chat_template: str | None = None,
        add_generation_prompt: bool = True,
        tokenize: bool = True,
        return_dict: bool = True,
        return_tensors: str | None = "pt",
        **kwargs: Any,
    ) -> Any:
        """Messages -> prompt text, or (``tokenize``) a BatchFeature with ids and pixel values."""
        batch = (
            conversation
            if conversation and not isinstance(conversation[0], Mapping)
            else [conversation]
        )
        rendered = [self.render_prompt(conv, add_generation_prompt) for conv in batch]  # type: ignore[arg-type]
        texts = [r[0] for r in rendered]
        if not tokenize:
            return texts[0] if len(texts) == 1 and batch is not conversation else texts
        images = [r[1][-1] for r in rendered if r[1]]
        if images and len(images) != len(texts):
            raise ValueError("every conversation of a batch needs an image (or none does)")
        out = self(images=images or None, text=texts, return_tensors=return_tensors)
        return out if return_dict else out["input_ids"]

    def batch_decode(self, *args: Any, **kwargs: Any) -> list[str]:
        """Token ids -> texts (the tokenizer's)."""
        return self.tokenizer.batch_decode(*args, **kwargs)  # type: ignore[no-any-return]

    def decode(self, *args: Any, **kwargs: Any) -> str:
        """Token ids -> text (the tokenizer's)."""
        return self.tokenizer.decode(*args, **kwargs)  # type: ignore[no-any-return]

    @property
    def model_input_names(self) -> list[str]:
        """Names of the tensors the model takes."""
        return ["input_ids", "attention_mask", "pixel_values"]
