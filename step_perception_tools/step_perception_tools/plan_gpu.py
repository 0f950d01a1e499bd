"""``step-perception plan-gpu``: how much GPU memory a model server needs, and how many GPUs.

The seed's arithmetic as a tool, with the overheads it leaves out:

* **Weights**: parameters x bits per weight of the storage format, where a quantized format
  pays for its scales and zero points (``WeightFormat.bits_per_weight``). Published quantized
  checkpoints keep part of the model in BF16 (vision tower, embeddings, and for Step-3.7-Flash
  everything except the routed experts); a preset says how much (``ModelSpec.kept_bf16_params``),
  and ``--quantize-all`` applies the format to every weight instead (the seed's estimate).
  A mixture-of-experts model needs **all** its experts in memory: the router picks experts per
  token, so every expert is read within a few tokens. Active parameters set the compute, never
  the memory.
* **KV cache**: per token and layer ``2 x kv_heads x head_dim x bytes`` (MLA: the compressed
  latent plus its RoPE part), a sliding-window layer holding at most ``window`` tokens, times
  the tokens of one sequence (prompt incl. image tokens + answer) times concurrent sequences;
  on more GPUs than KV heads the heads are replicated, and an MLA latent is on every GPU.
* **Runtime headroom**: a fixed fraction of each GPU is left for activations, CUDA graphs,
  NCCL buffers and the allocator (``DEFAULT_HEADROOM``, documented there).

Pure code (no ROS, no network): ``plan()`` computes a ``Plan``; ``render_text``/``render_json``
print it; ``add_arguments``/``run`` are the ``plan-gpu`` subcommand of ``step-perception``.
Units: GB = 10^9 bytes, as vendors and the seed write them; a GPU's capacity is in bytes as
its driver reports it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum

from step_perception.core.errors import ConfigError, StepPerceptionError
from step_perception.core.imaging import target_size

__all__ = [
    "DEFAULT_HEADROOM",
    "FORMATS",
    "GPUS",
    "PRESETS",
    "AttentionLayers",
    "GpuFit",
    "GpuSpec",
    "ImageTokenFn",
    "KvKind",
    "ModelSpec",
    "Plan",
    "PlanError",
    "WeightFormat",
    "add_arguments",
    "kv_bytes_per_sequence",
    "plan",
    "render_json",
    "render_text",
    "run",
    "weight_bytes",
]

GB = 1e9
MIB = 1024 * 1024

# Fraction of each GPU's memory NOT available to weights + KV cache. 0.10 is what vLLM leaves
# by default (--gpu-memory-utilization 0.9: CUDA context, NCCL, other processes); a further
# 0.05 covers what vLLM itself takes inside its budget before the KV cache: activations of
# the largest prefill batch, the vision encoder's activations, CUDA graphs and allocator
# fragmentation (a few GB per GPU on an 80-141 GB part). Override with --headroom.
DEFAULT_HEADROOM = 0.15

# GPUs per node for tensor/expert parallel without crossing a node (HGX/DGX boards hold 8).
GPUS_PER_NODE = 8

ImageTokenFn = Callable[[int, int], int]
"""Image tokens of one image sent at (width, height): a model profile's token function."""


class PlanError(ConfigError):
    """Bad planner input (impossible numbers, a sequence longer than the model's context)."""


# --------------------------------------------------------------------------- weight formats


@dataclass(frozen=True)
class WeightFormat:
    """How a weight is stored: its bits, plus per-group scale and zero-point bits.

    ``bits_per_weight = weight_bits + (scale_bits + zero_bits) / group_size``. For llama.cpp's
    mixed ``_M``/``_S`` recipes (different tensors at different types) ``weight_bits`` is the
    measured whole-model figure and ``group_size`` is 0.
    """

    name: str
    weight_bits: float
    group_size: int = 0
    scale_bits: int = 0
    zero_bits: int = 0
    source: str = ""

    @property
    def bits_per_weight(self) -> float:
        """Effective storage bits per weight, overheads included."""
        if self.group_size <= 0:
            return self.weight_bits
        return self.weight_bits + (self.scale_bits + self.zero_bits) / self.group_size

    @property
    def is_quantized(self) -> bool:
        """Below 16 bits: a preset's BF16-kept parts stay BF16."""
        return self.bits_per_weight < 16.0


_LLAMA_QUANT = "https://github.com/ggml-org/llama.cpp/blob/master/tools/quantize/README.md"
_GGML_QUANTS = "https://github.com/ggml-org/llama.cpp/blob/master/ggml/src/ggml-common.h"

FORMATS: dict[str, WeightFormat] = {
    f.name: f
    for f in (
        WeightFormat("bf16", 16.0, source="2 bytes per weight"),
        WeightFormat("fp16", 16.0, source="2 bytes per weight"),
        # Block-wise FP8 (E4M3) with one FP32 scale per 128x128 block: DeepSeek's block size
        # (quantization_config weight_block_size [128, 128]), assumed for Step-3.7-Flash-FP8,
        # whose experts are block-FP8 (olka-fi/Step-3.7-Flash-MXFP4 card). The scale adds
        # 0.002 bits per weight, so the assumption moves no answer.
        WeightFormat(
            "fp8",
            8.0,
            group_size=128 * 128,
            scale_bits=32,
            source="E4M3 + FP32 scale per 128x128 block (weight_block_size [128, 128])",
        ),
        # W8A8 INT8 with one FP16 scale per output channel; 4096 inputs per row assumed.
        WeightFormat(
            "int8",
            8.0,
            group_size=4096,
            scale_bits=16,
            source="INT8 + FP16 scale per output channel (rows of 4096)",
        ),
        WeightFormat(
            "int4-awq",
            4.0,
            group_size=128,
            scale_bits=16,
            zero_bits=4,
            source="AWQ w4 g128: FP16 scale + packed 4-bit zero per 128 weights",
        ),
        WeightFormat(
            "int4-gptq",
            4.0,
            group_size=128,
            scale_bits=16,
            zero_bits=4,
            source="GPTQ w4 g128: FP16 scale + packed 4-bit zero per 128 (g_idx adds ~0.01)",
        ),
        WeightFormat(
            "nvfp4",
            4.0,
            group_size=16,
            scale_bits=8,
            source="NVFP4: E2M1 + FP8 E4M3 scale per 16 weights (+1 FP32 per tensor)",
        ),
        WeightFormat(
            "mxfp4",
            4.0,
            group_size=32,
            scale_bits=8,
            source="OCP MXFP4: E2M1 + E8M0 scale per 32 weights",
        ),
        WeightFormat(
            "q8_0", 8.0, group_size=32, scale_bits=16, source=f"block_q8_0, {_GGML_QUANTS}"
        ),
        WeightFormat(
            "q6_k",
            6.0,
            group_size=256,
            scale_bits=16 * 8 + 16,
            source=f"block_q6_K: 16 int8 scales + FP16 d per 256, {_GGML_QUANTS}",
        ),
        WeightFormat(
            "q5_k",
            5.0,
            group_size=256,
            scale_bits=12 * 8 + 2 * 16,
            source=f"block_q5_K: 12 bytes scales/mins + 2 FP16 per 256, {_GGML_QUANTS}",
        ),
        WeightFormat(
            "q4_k",
            4.0,
            group_size=256,
            scale_bits=12 * 8 + 2 * 16,
            source=f"block_q4_K: 12 bytes scales/mins + 2 FP16 per 256, {_GGML_QUANTS}",
        ),
        WeightFormat("q5_k_m", 5.68, source=f"mixed recipe, Llama-2-7B figure, {_LLAMA_QUANT}"),
        WeightFormat("q4_k_m", 4.84, source=f"mixed recipe, Llama-2-7B figure, {_LLAMA_QUANT}"),
        WeightFormat("q4_k_s", 4.58, source=f"mixed recipe, Llama-2-7B figure, {_LLAMA_QUANT}"),
        WeightFormat("q3_k_m", 3.91, source=f"mixed recipe, Llama-2-7B figure, {_LLAMA_QUANT}"),
        WeightFormat("q2_k", 3.35, source=f"mixed recipe, Llama-2-7B figure, {_LLAMA_QUANT}"),
    )
}

# --------------------------------------------------------------------------- GPUs


@dataclass(frozen=True)
class GpuSpec:
    """One accelerator type: memory in bytes, and whether several can share a model."""

    name: str
    memory_bytes: float
    multi_gpu: bool = True  # False: unified memory of one machine, one device
    source: str = ""


GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec("A100-80GB", 81920 * MIB, source="80 GiB HBM2e (A100 80GB)"),
        GpuSpec("H100-80GB", 81920 * MIB, source="80 GiB HBM3 (H100 SXM 80GB)"),
        GpuSpec(
            "H200-141GB",
            143771 * MIB,
            source="nvidia-smi memory.total 143771 MiB, measured on an H200 2026-12-01",
        ),
        GpuSpec(
            "B200-180GB",
            180 * GB,
            source="DGX B200: 8 GPUs, 1,440 GB total GPU memory "
            "(https://docs.nvidia.com/dgx/dgxb200-user-guide/introduction-to-dgxb200.html); "
            "the die carries 192 GB HBM3e",
        ),
        GpuSpec("RTX4090-24GB", 24576 * MIB, source="24 GiB GDDR6X"),
    )
}


def unified_memory_gpu(size_gb: float) -> GpuSpec:
    """Return a unified-memory machine (Mac Studio, GB10-class) of ``size_gb`` GB: one device."""
    if not size_gb > 0:
        raise PlanError(f"unified memory size must be > 0 GB, got {size_gb}")
    return GpuSpec(
        f"unified-{size_gb:g}GB",
        size_gb * GB,
        multi_gpu=False,
        source="unified memory shared with the OS and CPU: the headroom covers both "
        "(macOS also caps GPU-wired memory below the total by default)",
    )


# --------------------------------------------------------------------------- models


class KvKind(str, Enum):
    """How a layer's attention caches a token."""

    GQA = "gqa"  # K and V per KV head
    MLA = "mla"  # one compressed latent (kv_lora_rank) + shared RoPE key per token


@dataclass(frozen=True)
class AttentionLayers:
    """A group of decoder layers that cache a token the same way."""

    layers: int
    kv_heads: int = 0  # GQA
    head_dim: int = 0  # GQA
    window: int = 0  # sliding window in tokens; 0 = full attention
    kind: KvKind = KvKind.GQA
    latent_dim: int = 0  # MLA: kv_lora_rank + qk_rope_head_dim

    def elements_per_token(self) -> int:
        """Return the cached elements of one token in one layer of this group."""
        if self.kind is KvKind.MLA:
            return self.latent_dim
        return 2 * self.kv_heads * self.head_dim

    def cached_tokens(self, seq_len: int) -> int:
        """Tokens of a ``seq_len``-token sequence this layer keeps."""
        return min(seq_len, self.window) if self.window > 0 else seq_len


@dataclass(frozen=True)
class ModelSpec:
    """What the planner needs of a model, each number from its published config or card."""

    name: str
    total_params: float  # every weight the server loads (experts, vision tower, MTP heads)
    kept_bf16_params: float  # left in BF16 by the published quantized checkpoints
    attention: tuple[AttentionLayers, ...]
    default_image_tokens: int  # one 728-px-class camera frame, when no token function is given
    max_context: int
    profile: str = "generic"  # the node's model_profile of this family: its image-token function
    moe: str = ""  # e.g. "288 routed experts, top-8 (+1 shared)"; "" = dense
    sources: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    def kv_bytes_per_token(self, kv_bytes: float, seq_len: int) -> float:
        """Average KV bytes per token of a ``seq_len`` sequence (windows make it shrink)."""
        return kv_bytes_per_sequence(self, seq_len, kv_bytes) / max(1, seq_len)


_STEP37_RECIPE = "https://vllm-recipes-6nwqixkam-inferact-inc.vercel.app/stepfun-ai/Step-3.7-Flash"
_STEP37_SGL = "https://docs.sglang.io/cookbook/autoregressive/StepFun/Step-3.7-Flash"
_STEP3P5_VLLM = (
    "https://github.com/vllm-project/vllm/blob/main/vllm/transformers_utils/configs/step3p5.py"
)
_STEP3P5_MODEL = (
    "https://github.com/vllm-project/vllm/blob/main/vllm/model_executor/models/step3p5.py"
)

# Step-3.7-Flash text model (Step3p5Config inside Step3p7's text_config): 45 decoder layers,
# hidden 4096, full-attention layers 64 query heads, sliding layers 96 (attention_other_setting),
# both with num_attention_groups 8 KV heads of head_dim 128; layer_types put full attention on
# every 4th layer (3:1 sliding:full, so 12 of 45 full), sliding window 512 tokens.
# Routed experts: MoE layers 3..44 (42 layers) x 288 experts x 3 matrices x 4096 x 1280.
_STEP37_EXPERTS = 42 * 288 * 3 * 4096 * 1280  # 190.25e9
_STEP37_TOTAL = 201e9

PRESETS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            name="step3p7-flash",
            total_params=_STEP37_TOTAL,
            kept_bf16_params=_STEP37_TOTAL - _STEP37_EXPERTS,
            attention=(
                AttentionLayers(layers=12, kv_heads=8, head_dim=128),
                AttentionLayers(layers=33, kv_heads=8, head_dim=128, window=512),
            ),
            # 728x410 (a 16:9 frame at the node's default max_image_side 728): 337 image
            # tokens from vLLM's Step-3 image processor (354 prompt tokens minus 17 text),
            # measured here (shared/README.md, 2026-12-01).
            default_image_tokens=337,
            max_context=262144,
            profile="step3p7",
            moe="288 routed experts top-8 + 1 shared expert per MoE layer; ~11B active",
            sources=(
                f"198B total (196B language + 1.8B perception encoder), 11B active, 256k "
                f"context, SWA window 512 at 3:1, BF16/FP8/NVFP4: {_STEP37_RECIPE}",
                f"4x H200 (TP=4) in BF16 or FP8 listed as supported: {_STEP37_SGL}",
                f"Step3p5Config fields (num_attention_groups, attention_other_setting, "
                f"layer_types, moe_*): {_STEP3P5_VLLM}",
                f"per-layer heads from attention_other_setting on sliding layers: {_STEP3P5_MODEL}",
                "201B in the checkpoint (the seed's figure): the card's 198B plus the 3 MTP "
                "layers 45-47 (https://huggingface.co/olka-fi/Step-3.7-Flash-MXFP4: "
                "45 layers + 3 MTP, FP8 source 212.5 GB, MXFP4 123 GB)",
            ),
            notes=(
                "MoE: all 288 experts of every layer must be in memory; 11B active sets "
                "the compute per token, not the memory.",
                "FP8/NVFP4 checkpoints quantize only the routed experts (190.3B); attention, "
                "dense layers, shared experts, MTP, embeddings and the vision tower stay BF16.",
                "GPUs here is the memory floor; the vLLM recipe runs BF16 and FP8 on 8x H200 "
                "(TP 8 + EP) and SGLang on 4x H200 (TP 4), for throughput and KV room.",
            ),
        ),
        ModelSpec(
            name="qwen2.5-vl-7b",
            total_params=8.29e9,
            kept_bf16_params=0.67e9 + 2 * 152064 * 3584,  # vision tower, embed + lm_head
            attention=(AttentionLayers(layers=28, kv_heads=4, head_dim=128),),
            # 728x410 -> smart_resize to multiples of 28 (728x420) -> 26x15 = 390 tokens.
            default_image_tokens=390,
            max_context=128000,
            profile="qwen2_5_vl",
            sources=(
                "8.29B params; 28 layers, hidden 3584, 28 heads, 4 KV heads, vocab 152064: "
                "https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct/blob/main/config.json",
                "one token per 28x28 pixels (patch 14, 2x2 merge): "
                "https://huggingface.co/Qwen/Qwen2.5-VL-7B-Instruct",
            ),
        ),
        ModelSpec(
            name="qwen2.5-vl-72b",
            total_params=73.4e9,
            kept_bf16_params=0.67e9 + 2 * 152064 * 8192,
            attention=(AttentionLayers(layers=80, kv_heads=8, head_dim=128),),
            default_image_tokens=390,
            max_context=128000,
            profile="qwen2_5_vl",
            sources=(
                "73.4B params; 80 layers, hidden 8192, 64 heads, 8 KV heads: "
                "https://huggingface.co/Qwen/Qwen2.5-VL-72B-Instruct/blob/main/config.json",
            ),
        ),
        ModelSpec(
            name="qwen3-vl-30b-a3b",
            total_params=31.1e9,
            kept_bf16_params=31.1e9 - 48 * 128 * 3 * 2048 * 768,  # all but routed experts
            attention=(AttentionLayers(layers=48, kv_heads=4, head_dim=128),),
            # 728x410 -> multiples of 32 (patch 16, 2x2 merge): 736x416 -> 23x13 = 299.
            default_image_tokens=299,
            max_context=262144,
            profile="qwen3_vl",
            moe="128 routed experts top-8; ~3B active",
            sources=(
                "31.1B params; 48 layers, hidden 2048, 32 heads, 4 KV heads, head_dim 128, "
                "128 experts top-8, moe_intermediate 768: "
                "https://huggingface.co/Qwen/Qwen3-VL-30B-A3B-Instruct/blob/main/config.json",
            ),
            notes=("MoE: all 128 experts of every layer must be in memory.",),
        ),
    )
}

# --------------------------------------------------------------------------- arithmetic


def weight_bytes(model: ModelSpec, fmt: WeightFormat, *, quantize_all: bool = False) -> float:
    """Bytes of the model's weights stored in ``fmt``.

    With ``quantize_all`` every weight takes ``fmt``'s bits (the seed's estimate); otherwise
    a quantized format leaves ``model.kept_bf16_params`` in BF16, as published checkpoints do.
    """
    if quantize_all or not fmt.is_quantized:
        return model.total_params * fmt.bits_per_weight / 8
    quantized = model.total_params - model.kept_bf16_params
    return quantized * fmt.bits_per_weight / 8 + model.kept_bf16_params * 2


def kv_bytes_per_sequence(
    model: ModelSpec, seq_len: int, kv_bytes: float, tensor_parallel: int = 1
) -> float:
    """KV cache of one ``seq_len``-token sequence over all GPUs, every layer group counted.

    Tensor parallel splits KV heads over the GPUs, but each GPU keeps at least one: beyond
    ``kv_heads`` GPUs the heads are replicated (vLLM's ``get_num_kv_heads``). An MLA latent is
    not split at all, so every GPU holds a copy.
    """
    total = 0.0
    for g in model.attention:
        if g.kind is KvKind.MLA:
            copies = float(tensor_parallel)
        else:
            copies = max(1.0, tensor_parallel / g.kv_heads)
        total += g.layers * g.elements_per_token() * g.cached_tokens(seq_len) * kv_bytes * copies
    return total


@dataclass(frozen=True)
class GpuFit:
    """The answer for one GPU type."""

    gpu: str
    memory_gb: float  # one device
    gpus: int  # devices needed (0 = does not fit)
    fits: bool
    used_per_gpu_gb: float  # weights + KV per device at that count
    usable_per_gpu_gb: float  # after headroom
    reason: str = ""


@dataclass(frozen=True)
class Plan:
    """The whole answer: inputs as resolved, the memory parts, one row per GPU type."""

    model: str
    weight_format: str
    bits_per_weight: float
    quantize_all: bool
    kv_dtype: str
    context_tokens: int
    image_tokens_per_request: int
    images_per_request: int
    concurrent_sequences: int
    headroom: float
    weights_gb: float
    kv_per_sequence_gb: float
    kv_total_gb: float
    total_gb: float
    rows: tuple[GpuFit, ...]
    send_size: tuple[int, int] | None = None
    notes: tuple[str, ...] = field(default=())


def _fit(
    gpu: GpuSpec, need_bytes: Callable[[int], float], headroom: float, max_gpus: int
) -> GpuFit:
    usable = gpu.memory_bytes * (1.0 - headroom)
    counts = [1] if not gpu.multi_gpu else [n for n in (1, 2, 4, 8, 16, 32) if n <= max_gpus]
    for n in counts:
        if need_bytes(n) <= n * usable:
            return GpuFit(
                gpu.name, gpu.memory_bytes / GB, n, True, need_bytes(n) / n / GB, usable / GB
            )
    reason = (
        "one device only (unified memory)" if not gpu.multi_gpu else f"more than {counts[-1]} GPUs"
    )
    n = counts[-1]
    return GpuFit(
        gpu.name, gpu.memory_bytes / GB, 0, False, need_bytes(n) / n / GB, usable / GB, reason
    )


def plan(
    model: ModelSpec,
    fmt: WeightFormat,
    *,
    context_tokens: int,
    concurrent_sequences: int,
    image_tokens_per_request: int,
    images_per_request: int = 1,
    kv_dtype: str = "bf16",
    headroom: float = DEFAULT_HEADROOM,
    gpus: Sequence[GpuSpec] = tuple(GPUS.values()),
    quantize_all: bool = False,
    max_gpus: int = 4 * GPUS_PER_NODE,
    send_size: tuple[int, int] | None = None,
) -> Plan:
    """Memory of one server for ``model`` in ``fmt`` and the GPUs of each type it needs.

    ``context_tokens`` is the text of one request (system prompt, question, answer and
    thinking); each of its ``images_per_request`` images adds ``image_tokens_per_request``.
    """
    if context_tokens < 0 or image_tokens_per_request < 0 or images_per_request < 0:
        raise PlanError("token counts must be >= 0")
    if concurrent_sequences < 1:
        raise PlanError(f"concurrent sequences must be >= 1, got {concurrent_sequences}")
    if not 0.0 <= headroom < 1.0:
        raise PlanError(f"headroom must be in [0, 1), got {headroom}")
    if kv_dtype not in _KV_BYTES:
        raise PlanError(f"kv dtype {kv_dtype!r} not one of {sorted(_KV_BYTES)}")
    seq_len = context_tokens + image_tokens_per_request * images_per_request
    if seq_len > model.max_context:
        raise PlanError(
            f"{seq_len} tokens per sequence exceed {model.name}'s context of {model.max_context}"
        )
    weights = weight_bytes(model, fmt, quantize_all=quantize_all)
    kv_seq = kv_bytes_per_sequence(model, seq_len, _KV_BYTES[kv_dtype])
    kv_total = kv_seq * concurrent_sequences
    need = weights + kv_total

    def need_on(n: int) -> float:  # KV heads replicate once n exceeds them
        kv_n = kv_bytes_per_sequence(model, seq_len, _KV_BYTES[kv_dtype], n)
        return weights + kv_n * concurrent_sequences

    rows = tuple(_fit(g, need_on, headroom, max_gpus) for g in gpus)
    return Plan(
        model=model.name,
        weight_format=fmt.name,
        bits_per_weight=fmt.bits_per_weight,
        quantize_all=quantize_all,
        kv_dtype=kv_dtype,
        context_tokens=context_tokens,
        image_tokens_per_request=image_tokens_per_request,
        images_per_request=images_per_request,
        concurrent_sequences=concurrent_sequences,
        headroom=headroom,
        weights_gb=weights / GB,
        kv_per_sequence_gb=kv_seq / GB,
        kv_total_gb=kv_total / GB,
        total_gb=need / GB,
        rows=rows,
        send_size=send_size,
        notes=model.notes,
    )


_KV_BYTES = {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0}

# --------------------------------------------------------------------------- output


def render_text(p: Plan) -> str:
    """Render the plan as a table that fits one screen."""
    size = f" sent {p.send_size[0]}x{p.send_size[1]}," if p.send_size else ""
    scope = "every weight" if p.quantize_all else "as published checkpoints"
    lines = [
        f"{p.model} in {p.weight_format} ({p.bits_per_weight:.3f} bits/weight, {scope})",
        f"  weights            {p.weights_gb:9.1f} GB",
        f"  KV cache ({p.kv_dtype})    {p.kv_total_gb:9.1f} GB  = {p.concurrent_sequences} seq x "
        f"{p.kv_per_sequence_gb:.3f} GB ({p.context_tokens} text +{size} "
        f"{p.images_per_request}x{p.image_tokens_per_request} image tokens)",
        f"  weights + KV       {p.total_gb:9.1f} GB   headroom {p.headroom:.0%} of each GPU",
        "",
        f"  {'GPU':<16}{'GPUs':>5}{'used/GPU':>10}{'usable/GPU':>12}  result",
    ]
    for r in p.rows:
        if not r.fits:
            result = f"does not fit: {r.reason}"
        elif r.gpus > GPUS_PER_NODE:
            result = f"fits on {r.gpus} ({math.ceil(r.gpus / GPUS_PER_NODE)} nodes of 8)"
        else:
            result = f"fits on {r.gpus}"
        count = str(r.gpus) if r.fits else "-"
        lines.append(
            f"  {r.gpu:<16}{count:>5}{r.used_per_gpu_gb:>8.1f}GB{r.usable_per_gpu_gb:>10.1f}GB"
            f"  {result}"
        )
    lines += ["", *(f"  note: {n}" for n in p.notes)]
    return "\n".join(lines).rstrip() + "\n"


def render_json(p: Plan) -> str:
    """Render the plan as JSON (every field of ``Plan`` and its rows)."""
    return json.dumps(asdict(p), indent=2)


# --------------------------------------------------------------------------- CLI


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, got {text!r}") from err
    if w <= 0 or h <= 0:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return w, h


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``plan-gpu`` subcommand's options to ``parser``."""
    parser.add_argument("--model", default="step3p7-flash", choices=sorted(PRESETS))
    parser.add_argument("--dtype", default="fp8", choices=sorted(FORMATS), help="weight format")
    parser.add_argument(
        "--quantize-all",
        action="store_true",
        help="apply --dtype to every weight (the seed's estimate), not only to the parts "
        "published checkpoints quantize",
    )
    parser.add_argument("--kv-dtype", default="bf16", choices=sorted(_KV_BYTES))
    parser.add_argument(
        "--context", type=int, default=8192, help="text tokens per request incl. answer"
    )
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent sequences")
    parser.add_argument("--images", type=int, default=1, help="images per request")
    parser.add_argument(
        "--image-tokens",
        type=int,
        default=None,
        help="tokens per image (default: the preset's figure for a 728-px 16:9 frame)",
    )
    parser.add_argument(
        "--image-side",
        type=int,
        default=728,
        help="longest side sent (the node's max_image_side); used with a token function",
    )
    parser.add_argument(
        "--camera", type=_size, default=(1280, 720), help="camera frame WIDTHxHEIGHT"
    )
    parser.add_argument("--headroom", type=float, default=DEFAULT_HEADROOM)
    parser.add_argument("--gpu", action="append", choices=sorted(GPUS), help="GPU types")
    parser.add_argument(
        "--unified-gb", type=float, action="append", default=[], help="unified memory size"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of the table")


def run(args: argparse.Namespace, image_tokens: ImageTokenFn | None = None) -> int:
    """Print the plan for ``args``; 0 on success, 2 on bad input.

    ``image_tokens`` is the model profile's token function (the one of
    ``PRESETS[args.model].profile``); with it, the tokens per image come from the size the node
    sends (``--camera`` scaled to ``--image-side``), and an explicit ``--image-tokens`` still wins.
    """
    try:
        model = PRESETS[args.model]
        fmt = FORMATS[args.dtype]
        send = target_size(args.camera[0], args.camera[1], args.image_side)
        if args.image_tokens is not None:
            tokens = int(args.image_tokens)
        elif image_tokens is not None:
            tokens = image_tokens(*send)
        else:
            tokens = model.default_image_tokens
            send = (0, 0)
        gpus = [GPUS[g] for g in (args.gpu or list(GPUS))]
        gpus += [unified_memory_gpu(s) for s in args.unified_gb]
        result = plan(
            model,
            fmt,
            context_tokens=args.context,
            concurrent_sequences=args.concurrency,
            image_tokens_per_request=tokens,
            images_per_request=args.images,
            kv_dtype=args.kv_dtype,
            headroom=args.headroom,
            gpus=gpus,
            quantize_all=args.quantize_all,
            send_size=send if send != (0, 0) else None,
        )
    except StepPerceptionError as err:
        print(f"plan-gpu: {err}", file=sys.stderr)
        return 2
    print(render_json(result) if args.json else render_text(result), end="")
    return 0
