"""GPU side of a VLM answer: prefill and per-token decode of a realistic VLM in-process (#14.6).

    python3 bench/bench_gpu_vlm.py --out results.json            # on one CUDA GPU (H200 here)
    python3 bench/bench_gpu_vlm.py --tiny --device cpu           # plumbing check, any machine

The model is Qwen2.5-VL-7B-Instruct's architecture (the numbers of its published config.json:
28 layers, hidden 3584, 28 query / 4 KV heads of 128, MLP 18944, vocabulary 152064; the 32-block
ViT of width 1280 with 2x2 patch merging), built from the config with random weights in bf16, so
nothing is downloaded.  Random weights cost the same arithmetic as trained ones; the output length
is fixed (``min_new_tokens = max_new_tokens``) so EOS never ends a run early.

For each send geometry of the node's profiles (640x480, 728x410, 1280x720, 1920x1080) and batch
1 and 4 it times, with CUDA synchronisation and ``transformers``' own ``generate``:

* ``qwen2_5_vl``: the full model on the image tokens Qwen2.5-VL's own processor gives at that size
  (``smart_resize``: 28 px per token side, min 3136 px, max 12845056 px), i.e. the ViT on the
  patches plus the language model;
* ``step3p7``: the same 7B language model on as many image tokens as vLLM's Step-3 ``ImagePatcher``
  gives at that size (171 / 337 / 670 / 836, from the vLLM issue), as placeholder tokens: the
  language-model side of that token count on a 7B model (Step-3.7-Flash's own ViT and its
  ~200B MoE are not modelled).

Prefill = median time of ``generate(max_new_tokens=1)``; decode per token = median of
``(generate(N) - generate(1)) / (N - 1)``.  GPU memory: the weights after loading
(``torch.cuda.memory_allocated``), the peak per run (``max_memory_allocated``), and the KV cache
that arithmetic predicts (2 x layers x KV heads x head dim x 2 bytes per token).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import platform
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

GEOMETRIES: tuple[tuple[int, int], ...] = ((640, 480), (728, 410), (1280, 720), (1920, 1080))
# vLLM's Step-3 ImagePatcher at these send sizes (measured in the vLLM issue, #11)
STEP3P7_TOKENS: dict[tuple[int, int], int] = {
    (640, 480): 171,
    (728, 410): 337,
    (1280, 720): 670,
    (1920, 1080): 836,
}
TEXT_TOKENS = 160  # system prompt + the node's user text, about this many tokens

# Qwen2.5-VL-7B-Instruct config.json (Hugging Face model card), text and vision parts
QWEN7B_TEXT = {
    "hidden_size": 3584,
    "intermediate_size": 18944,
    "num_hidden_layers": 28,
    "num_attention_heads": 28,
    "num_key_value_heads": 4,
    "vocab_size": 152064,
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_theta": 1000000.0,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "hidden_act": "silu",
    "tie_word_embeddings": False,
}
QWEN7B_VISION = {
    "depth": 32,
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "out_hidden_size": 3584,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
    "in_chans": 3,
    "hidden_act": "silu",
}
TINY_TEXT = {**QWEN7B_TEXT, "hidden_size": 256, "intermediate_size": 256, "num_hidden_layers": 2,
             "num_attention_heads": 2, "num_key_value_heads": 1, "vocab_size": 152064}  # fmt: skip
TINY_VISION = {**QWEN7B_VISION, "depth": 2, "hidden_size": 32, "intermediate_size": 64,
               "num_heads": 2, "out_hidden_size": 256, "fullatt_block_indexes": [1]}  # fmt: skip
IMAGE_TOKEN, VISION_START, VISION_END = 151655, 151652, 151653


@dataclass(frozen=True)
class Row:
    """One measured configuration."""

    profile: str
    send_w: int
    send_h: int
    image_tokens: int
    prompt_tokens: int
    batch: int
    prefill_ms: float
    decode_ms_per_token: float
    answer_ms: float  # prefill + (new_tokens - 1) decode steps, median of the full runs
    peak_gib: float
    kv_arith_gib: float


def _smart_resize(
    h: int, w: int, factor: int = 28, lo: int = 3136, hi: int = 12845056
) -> tuple[int, int]:
    """Qwen2-VL's ``smart_resize``: sides rounded to ``factor``, pixels kept in ``lo..hi``."""
    hb, wb = round(h / factor) * factor, round(w / factor) * factor
    if hb * wb > hi:
        beta = math.sqrt(h * w / hi)
        hb, wb = math.floor(h / beta / factor) * factor, math.floor(w / beta / factor) * factor
    elif hb * wb < lo:
        beta = math.sqrt(lo / (h * w))
        hb, wb = math.ceil(h * beta / factor) * factor, math.ceil(w * beta / factor) * factor
    return hb, wb


def qwen_tokens(w: int, h: int) -> tuple[int, int, int]:
    """Qwen2.5-VL processor: (merged image tokens, patch grid h, patch grid w) at w x h."""
    rh, rw = _smart_resize(h, w)
    try:  # the processor's own function where it imports (it needs torchvision)
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        assert smart_resize(h, w, factor=28, min_pixels=3136, max_pixels=12845056) == (rh, rw)
    except ImportError:
        pass
    gh, gw = rh // 14, rw // 14
    return gh * gw // 4, gh, gw


def build(tiny: bool, device: torch.device) -> torch.nn.Module:
    """Qwen2.5-VL-7B-sized model (or a tiny one) with random bf16 weights, on ``device``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    cfg = Qwen2_5_VLConfig(
        text_config=TINY_TEXT if tiny else QWEN7B_TEXT,
        vision_config=TINY_VISION if tiny else QWEN7B_VISION,
        image_token_id=IMAGE_TOKEN,
        video_token_id=151656,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
        bos_token_id=151643,
        eos_token_id=151645,
    )
    torch.manual_seed(0)
    with device:
        try:
            model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, dtype=torch.bfloat16)
        except TypeError:  # transformers < 5 names it torch_dtype
            model = Qwen2_5_VLForConditionalGeneration._from_config(cfg, torch_dtype=torch.bfloat16)
    return model.eval()


def inputs_for(
    n_img: int, grid: tuple[int, int] | None, batch: int, vision: bool, device: torch.device
) -> dict[str, torch.Tensor]:
    """Token ids (text + image placeholders) and, with ``vision``, random patches for the ViT."""
    g = torch.Generator().manual_seed(n_img)
    text = torch.randint(1000, 150000, (TEXT_TOKENS,), generator=g)
    if vision:
        img = torch.full((n_img,), IMAGE_TOKEN)
    else:  # the language-model side only: as many ordinary tokens as the image would cost
        img = torch.randint(1000, 150000, (n_img,), generator=g)
    ids = torch.cat([text[:20], torch.tensor([VISION_START]), img, torch.tensor([VISION_END]),
                     text[20:]])  # fmt: skip
    out: dict[str, torch.Tensor] = {
        "input_ids": ids.repeat(batch, 1).to(device),
        "attention_mask": torch.ones(batch, ids.numel(), dtype=torch.long, device=device),
    }
    if vision:
        assert grid is not None
        gh, gw = grid
        patches = torch.randn(gh * gw, 3 * 2 * 14 * 14, generator=g).to(torch.bfloat16)
        out["pixel_values"] = patches.repeat(batch, 1).to(device)
        out["image_grid_thw"] = torch.tensor([[1, gh, gw]] * batch, device=device)
    return out


def timed(fn: object, device: torch.device) -> float:
    """Seconds one call of ``fn`` takes, synchronised with the GPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()  # type: ignore[operator]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    """Run the sweep and print / write the table (see the module docstring)."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a tiny model (plumbing check)")
    ap.add_argument("--new-tokens", type=int, default=64, help="fixed output length")
    ap.add_argument("--reps", type=int, default=3, help="timed full runs per configuration")
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        # `make bench` runs every bench script; a 7B model on a CPU would take hours
        print("bench_gpu_vlm: no CUDA GPU here, skipped (--tiny --device cpu checks the plumbing)")
        return
    t0 = time.perf_counter()
    model = build(args.tiny, device)
    load_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    weights_gib = torch.cuda.memory_allocated() / 2**30 if device.type == "cuda" else 0.0
    tc = model.config.text_config
    kv_per_token = 2 * tc.num_hidden_layers * tc.num_key_value_heads * (
        tc.hidden_size // tc.num_attention_heads
    ) * 2  # fmt: skip
    print(f"params {n_params / 1e9:.3f} B, weights {weights_gib:.2f} GiB on the GPU "
          f"(arithmetic {n_params * 2 / 2**30:.2f} GiB), built in {load_s:.1f} s, "
          f"KV {kv_per_token} B/token", flush=True)  # fmt: skip
    n = args.new_tokens
    gen = {"do_sample": False, "use_cache": True, "pad_token_id": 0}
    rows: list[Row] = []
    for batch in (int(b) for b in args.batches.split(",")):
        for w, h in GEOMETRIES:
            q_tok, gh, gw = qwen_tokens(w, h)
            for profile, n_img, vision in (
                ("qwen2_5_vl", q_tok, True),
                ("step3p7", STEP3P7_TOKENS[(w, h)], False),
            ):
                inp = inputs_for(n_img, (gh, gw), batch, vision, device)
                prompt = int(inp["input_ids"].shape[1])

                def run(k: int, inp: dict[str, torch.Tensor] = inp) -> None:
                    with torch.inference_mode():
                        model.generate(**inp, max_new_tokens=k, min_new_tokens=k, **gen)

                run(2)  # warm-up (kernels, allocator) at this shape
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                pre = statistics.median(timed(lambda: run(1), device) for _ in range(args.reps + 2))
                full = [timed(lambda: run(n), device) for _ in range(args.reps)]
                peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else 0.0
                med = statistics.median(full)
                row = Row(
                    profile, w, h, n_img, prompt, batch,
                    round(pre * 1e3, 1),
                    round((med - pre) / (n - 1) * 1e3, 2),
                    round(med * 1e3, 1),
                    round(peak, 2),
                    round(kv_per_token * (prompt + n) * batch / 2**30, 3),
                )  # fmt: skip
                rows.append(row)
                print(json.dumps(asdict(row)), flush=True)
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else platform.processor()
    smi = ""
    if device.type == "cuda":
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv"],
                capture_output=True, text=True, check=False, timeout=20,
            ).stdout.strip()  # fmt: skip
        except OSError:
            smi = ""
    result = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": gpu,
        "nvidia_smi": smi,
        "torch": torch.__version__,
        "transformers": __import__("transformers").__version__,
        "params": n_params,
        "weights_gib": round(weights_gib, 3),
        "weights_arith_gib": round(n_params * 2 / 2**30, 3),
        "kv_bytes_per_token": kv_per_token,
        "new_tokens": n,
        "text_tokens": TEXT_TOKENS,
        "build_s": round(load_s, 1),
        "rows": [asdict(r) for r in rows],
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"done in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
