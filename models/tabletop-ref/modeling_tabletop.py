"""Tabletop reference model: a small CenterNet-style CNN detector behind a VLM-shaped interface.

``TabletopForConditionalGeneration`` takes ``input_ids`` (the chat prompt) and ``pixel_values`` (the
image, resized to ``input_width x input_height``) like any image-text-to-text model and answers
through ``generate()``.  What happens inside:

1. the **detector** (trained weights) runs once per ``generate()`` call: stride-4 heatmaps over the
   35 colour-shape labels plus box size and centre offset, decoded to boxes (peak picking,
   class-agnostic NMS);
2. the **text head** (``tabletop_text.answer``, deterministic code, no weights) reads the prompt's
   ``Task:`` / ``Request:`` / ``Allowed actions:`` lines and writes the JSON answer with boxes
   xyxy normalised to 0..1000 of the image;
3. ``forward()`` emits logits that force that answer token by token, then EOS, so the ordinary
   ``GenerationMixin`` machinery (greedy or sampling, streamers, ``transformers serve``) yields it.

It is a stand-in that speaks the VLM protocol on synthetic tabletop scenes, not a general VLM.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

try:
    from .configuration_tabletop import TabletopConfig
    from .tabletop_text import ASSISTANT, EOS, SPECIAL_TOKENS, answer, decode, encode
except ImportError:  # imported as a plain module (training script)
    from configuration_tabletop import TabletopConfig
    from tabletop_text import ASSISTANT, EOS, SPECIAL_TOKENS, answer, decode, encode

STRIDE = 4
_EOS_ID = SPECIAL_TOKENS.index(EOS)
_ASSISTANT_ID = SPECIAL_TOKENS.index(ASSISTANT)


def _cbr(cin: int, cout: int, k: int = 3, s: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class _Res(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.a = _cbr(c, c)
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.b(self.a(x)))


class TabletopDetector(nn.Module):
    """Backbone (strides 2..32) + top-down fusion to stride 4 + CenterNet heads."""

    def __init__(self, widths: list[int], head: int, n_classes: int) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.stem = _cbr(3, w0, 3, 2)
        self.s4 = _cbr(w0, w1, 3, 2)
        self.s8 = nn.Sequential(_cbr(w1, w2, 3, 2), _Res(w2))
        self.s16 = nn.Sequential(_cbr(w2, w3, 3, 2), _Res(w3), _Res(w3))
        self.s32 = nn.Sequential(_cbr(w3, w4, 3, 2), _Res(w4), _Res(w4))
        self.lat32 = nn.Conv2d(w4, head, 1)
        self.lat16 = nn.Conv2d(w3, head, 1)
        self.lat8 = nn.Conv2d(w2, head, 1)
        self.lat4 = nn.Conv2d(w1, head, 1)
        self.smooth8 = _cbr(head, head)
        self.smooth4 = _cbr(head, head)
        self.heatmap = nn.Conv2d(head, n_classes, 1)
        self.size = nn.Conv2d(head, 2, 1)
        self.offset = nn.Conv2d(head, 2, 1)
        nn.init.constant_(self.heatmap.bias, -2.19)  # prior 0.1 (CenterNet)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Heatmap logits (B,C,H/4,W/4), box size in stride-4 cells (B,2,..), offset (B,2,..)."""
        c4 = self.s4(self.stem(x))
        c8 = self.s8(c4)
        c16 = self.s16(c8)
        c32 = self.s32(c16)
        p = self.lat32(c32)
        p = F.interpolate(p, size=c16.shape[-2:], mode="nearest") + self.lat16(c16)
        p = F.interpolate(p, size=c8.shape[-2:], mode="nearest") + self.lat8(c8)
        p = self.smooth8(p)
        p = F.interpolate(p, size=c4.shape[-2:], mode="nearest") + self.lat4(c4)
        p = self.smooth4(p)
        return self.heatmap(p), self.size(p), self.offset(p)


@dataclass(frozen=True)
class Found:
    """One decoded detection: label index, score, box xyxy in input pixels."""

    cls: int
    score: float
    box: tuple[float, float, float, float]


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def decode_detections(
    heat: torch.Tensor,
    size: torch.Tensor,
    offset: torch.Tensor,
    threshold: float,
    nms_iou: float,
    max_objects: int,
    top_k: int = 64,
) -> list[list[Found]]:
    """Peaks of the heatmaps -> boxes (input pixels), class-agnostic NMS, best first."""
    prob = torch.sigmoid(heat.float())
    peaks = prob * (F.max_pool2d(prob, 3, 1, 1) == prob)
    b, c, h, w = prob.shape
    scores, idx = peaks.reshape(b, -1).topk(min(top_k, c * h * w))
    out: list[list[Found]] = []
    for i in range(b):
        keep: list[Found] = []
        for s, j in zip(scores[i].tolist(), idx[i].tolist(), strict=True):
            if s < threshold:
                break
            cls, pix = divmod(j, h * w)
            y, x = divmod(pix, w)
            cx = (x + float(offset[i, 0, y, x])) * STRIDE
            cy = (y + float(offset[i, 1, y, x])) * STRIDE
            bw = max(float(size[i, 0, y, x]), 0.0) * STRIDE
            bh = max(float(size[i, 1, y, x]), 0.0) * STRIDE
            box = (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2)
            if bw <= 0 or bh <= 0 or any(_iou(box, k.box) > nms_iou for k in keep):
                continue
            keep.append(Found(cls, s, box))
            if len(keep) >= max_objects:
                break
        out.append(keep)
    return out


class TabletopPreTrainedModel(PreTrainedModel):
    """Weight loading/saving glue."""

    config_class = TabletopConfig
    base_model_prefix = "tabletop"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = False
    _no_split_modules: list[str] = []

    def _init_weights(self, module: nn.Module) -> None:  # weights come from the checkpoint
        return


class TabletopForConditionalGeneration(TabletopPreTrainedModel, GenerationMixin):
    """Image + prompt in, JSON answer out (see the module docstring)."""

    def __init__(self, config: TabletopConfig) -> None:
        super().__init__(config)
        self.detector = TabletopDetector(config.widths, config.head_width, len(config.class_labels))
        # answers precomputed by generate() for the call in progress: (prompt length, ids per row)
        self._pending: tuple[int, list[list[int]]] | None = None
        self.post_init()

    # -- the parts -------------------------------------------------------------------------------

    @torch.no_grad()
    def detect(self, pixel_values: torch.Tensor) -> list[list[tuple[str, float, tuple[int, ...]]]]:
        """Detections per image: (label, score, xyxy normalised 0..1000), best first."""
        cfg = self.config
        heat, size, off = self.detector(pixel_values.to(self.device, torch.float32))
        found = decode_detections(heat, size, off, cfg.score_threshold, cfg.nms_iou, cfg.max_objects)
        w, h = pixel_values.shape[-1], pixel_values.shape[-2]
        out = []
        for dets in found:
            row = []
            for d in dets:
                x1, y1, x2, y2 = d.box
                box = (
                    int(round(min(max(x1 / w, 0.0), 1.0) * 1000)),
                    int(round(min(max(y1 / h, 0.0), 1.0) * 1000)),
                    int(round(min(max(x2 / w, 0.0), 1.0) * 1000)),
                    int(round(min(max(y2 / h, 0.0), 1.0) * 1000)),
                )
                row.append((cfg.class_labels[d.cls], d.score, box))
            out.append(row)
        return out

    def answer_ids(
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None
    ) -> list[list[int]]:
        """The full answer (token ids, EOS last) for each row of the batch."""
        dets = (
            self.detect(pixel_values)
            if pixel_values is not None
            else [[] for _ in range(input_ids.shape[0])]
        )
        out = []
        for row, d in zip(input_ids.tolist(), dets, strict=True):
            # the prompt is the text up to the last assistant marker
            cut = max((k for k, t in enumerate(row) if t == _ASSISTANT_ID), default=len(row) - 1)
            prompt = decode(row[: cut + 1], skip_special=True)
            out.append([*encode(answer(prompt, d)), _EOS_ID])
        return out

    # -- the generation interface ----------------------------------------------------------------

    def get_input_embeddings(self) -> nn.Module | None:  # no token embeddings
        return None

    @torch.no_grad()
    def generate(  # type: ignore[override]
        self,
        input_ids: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        **kwargs: object,
    ) -> torch.Tensor:
        """Run the detector once, then let GenerationMixin emit the answer token by token."""
        if input_ids is None:
            raise ValueError("TabletopForConditionalGeneration.generate needs input_ids")
        self._pending = (int(input_ids.shape[1]), self.answer_ids(input_ids, pixel_values))
        kwargs.setdefault("use_cache", False)
        try:
            return super().generate(input_ids=input_ids, pixel_values=pixel_values, **kwargs)  # type: ignore[no-any-return]
        finally:
            self._pending = None

    def prepare_inputs_for_generation(  # type: ignore[override]
        self, input_ids: torch.Tensor, pixel_values: torch.Tensor | None = None, **kwargs: object
    ) -> dict[str, object]:
        # The answer is precomputed: each step only needs the sequence so far.
        return {"input_ids": input_ids, "pixel_values": pixel_values}

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_dict: bool | None = None,
        **kwargs: object,
    ) -> CausalLMOutputWithPast:
        """Logits (B, 1, V) whose argmax is the next token of the answer (EOS when done)."""
        b, t = input_ids.shape
        if self._pending is not None:
            prompt_len, answers = self._pending
        else:
            prompt_len, answers = t, self.answer_ids(input_ids, pixel_values)
        step = t - prompt_len
        logits = torch.full((b, 1, self.config.vocab_size), -1e9, dtype=torch.float32)
        for i, ans in enumerate(answers):
            logits[i, 0, ans[step] if step < len(ans) else _EOS_ID] = 0.0
        return CausalLMOutputWithPast(logits=logits.to(self.device))
