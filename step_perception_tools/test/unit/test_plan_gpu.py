"""plan-gpu arithmetic against worked examples (the seed's, published checkpoint sizes, hand KV)."""

from __future__ import annotations

import argparse
import json

import pytest

from step_perception_tools import plan_gpu as pg

STEP = pg.PRESETS["step3p7-flash"]
H200 = pg.GPUS["H200-141GB"]


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    pg.add_arguments(parser)
    return parser.parse_args(list(argv))


# --- the seed's worked example: 201B parameters, every weight in the format ----------------


def test_seed_bf16_is_201b_times_two_bytes() -> None:
    assert pg.weight_bytes(STEP, pg.FORMATS["bf16"], quantize_all=True) == 201e9 * 2


def test_seed_8bit_is_about_200_gb() -> None:
    for name in ("fp8", "int8", "q8_0"):
        gb = pg.weight_bytes(STEP, pg.FORMATS[name], quantize_all=True) / 1e9
        assert 200 <= gb <= 215, (name, gb)  # 201 GB + scales (q8_0: 8.5 bits -> 213.6)


def test_seed_4bit_is_just_over_100_gb() -> None:
    for name in ("int4-awq", "int4-gptq", "mxfp4", "nvfp4", "q4_k"):
        gb = pg.weight_bytes(STEP, pg.FORMATS[name], quantize_all=True) / 1e9
        assert 100.5 < gb < 114, (name, gb)  # 100.5 GB of 4-bit codes + their scales


# --- per-weight overheads, from each format's block layout ----------------------------------


@pytest.mark.parametrize(
    ("name", "bits"),
    [
        ("bf16", 16.0),
        ("q8_0", 8.5),  # 32 int8 + one fp16 per block of 32: 34 bytes / 32
        ("q6_k", 6.5625),  # 210 bytes / 256
        ("q5_k", 5.5),  # 176 bytes / 256
        ("q4_k", 4.5),  # 144 bytes / 256
        ("int4-awq", 4.15625),  # 4 + (16 + 4) / 128
        ("nvfp4", 4.5),  # 4 + 8 / 16
        ("mxfp4", 4.25),  # 4 + 8 / 32
        ("fp8", 8 + 32 / 16384),
    ],
)
def test_bits_per_weight(name: str, bits: float) -> None:
    assert pg.FORMATS[name].bits_per_weight == pytest.approx(bits)


# --- published checkpoints: experts quantized, the rest BF16 --------------------------------


def test_step_fp8_matches_the_published_fp8_checkpoint() -> None:
    gb = pg.weight_bytes(STEP, pg.FORMATS["fp8"]) / 1e9
    assert gb == pytest.approx(212.5, rel=0.01)  # Step-3.7-Flash-FP8: 212.5 GB


def test_step_mxfp4_matches_the_published_mxfp4_checkpoint() -> None:
    gb = pg.weight_bytes(STEP, pg.FORMATS["mxfp4"]) / 1e9
    assert gb == pytest.approx(123.0, rel=0.02)  # olka-fi/Step-3.7-Flash-MXFP4: 123 GB


def test_step_fp8_does_not_fit_one_h200() -> None:
    weights = pg.weight_bytes(STEP, pg.FORMATS["fp8"])
    assert weights > H200.memory_bytes  # not even the weights, at zero headroom
    p = pg.plan(
        STEP,
        pg.FORMATS["fp8"],
        context_tokens=4096,
        concurrent_sequences=1,
        image_tokens_per_request=337,
        gpus=[H200],
    )
    (row,) = p.rows
    assert row.fits and row.gpus == 2
    single = pg.plan(
        STEP,
        pg.FORMATS["fp8"],
        context_tokens=4096,
        concurrent_sequences=1,
        image_tokens_per_request=337,
        gpus=[pg.unified_memory_gpu(H200.memory_bytes / 1e9)],  # one device of that size
    )
    assert not single.rows[0].fits


# --- KV cache by hand -------------------------------------------------------------------------


def test_step_kv_full_and_sliding_layers() -> None:
    # 12 full layers x (2 x 8 heads x 128) x 1000 tokens x 2 bytes
    # + 33 sliding layers x 2048 x 512 (window) x 2 bytes
    want = 12 * 2048 * 1000 * 2 + 33 * 2048 * 512 * 2
    assert pg.kv_bytes_per_sequence(STEP, 1000, 2.0) == want
    # below the window, every layer holds every token
    assert pg.kv_bytes_per_sequence(STEP, 100, 2.0) == 45 * 2048 * 100 * 2


def test_qwen25_vl_7b_kv_is_56_kib_per_token() -> None:
    qwen = pg.PRESETS["qwen2.5-vl-7b"]
    assert pg.kv_bytes_per_sequence(qwen, 1, 2.0) == 28 * 2 * 4 * 128 * 2 == 57344


def test_mla_layers_cache_the_latent() -> None:
    # DeepSeek-V3 style: 61 layers, kv_lora_rank 512 + rope 64 = 576 elements per token
    mla = pg.ModelSpec(
        name="mla",
        total_params=1e9,
        kept_bf16_params=0,
        attention=(pg.AttentionLayers(layers=61, kind=pg.KvKind.MLA, latent_dim=576),),
        default_image_tokens=0,
        max_context=1 << 20,
    )
    assert pg.kv_bytes_per_sequence(mla, 10, 2.0) == 61 * 576 * 10 * 2
    assert pg.kv_bytes_per_sequence(mla, 10, 2.0, tensor_parallel=8) == 8 * 61 * 576 * 10 * 2


def test_kv_heads_replicate_beyond_tensor_parallel() -> None:
    qwen = pg.PRESETS["qwen2.5-vl-7b"]  # 4 KV heads
    one = pg.kv_bytes_per_sequence(qwen, 1000, 2.0)
    assert pg.kv_bytes_per_sequence(qwen, 1000, 2.0, tensor_parallel=4) == one
    assert pg.kv_bytes_per_sequence(qwen, 1000, 2.0, tensor_parallel=8) == 2 * one
    # Step-3.7-Flash has 8 KV heads: no replication up to TP 8
    assert pg.kv_bytes_per_sequence(STEP, 1000, 2.0, 8) == pg.kv_bytes_per_sequence(STEP, 1000, 2.0)


def test_kv_scales_with_sequences_and_image_tokens() -> None:
    def kv(seqs: int, image_tokens: int, images: int = 1) -> float:
        p = pg.plan(
            STEP,
            pg.FORMATS["fp8"],
            context_tokens=4000,
            concurrent_sequences=seqs,
            image_tokens_per_request=image_tokens,
            images_per_request=images,
        )
        return p.kv_total_gb

    assert kv(4, 337) == pytest.approx(4 * kv(1, 337))
    # 4000 text + 836 image tokens (1920x1080) vs + 171 (640x480): 12 full layers x 4096 B
    assert (kv(1, 836) - kv(1, 171)) * 1e9 == pytest.approx(12 * 4096 * (836 - 171))
    assert kv(1, 337, images=3) > kv(1, 337)


def test_fp8_kv_halves_the_cache() -> None:
    a = pg.plan(
        STEP,
        pg.FORMATS["fp8"],
        context_tokens=8000,
        concurrent_sequences=2,
        image_tokens_per_request=337,
    )
    b = pg.plan(
        STEP,
        pg.FORMATS["fp8"],
        context_tokens=8000,
        concurrent_sequences=2,
        image_tokens_per_request=337,
        kv_dtype="fp8",
    )
    assert b.kv_total_gb == pytest.approx(a.kv_total_gb / 2)


def test_headroom_is_taken_from_each_gpu() -> None:
    p = pg.plan(
        STEP,
        pg.FORMATS["bf16"],
        context_tokens=0,
        concurrent_sequences=1,
        image_tokens_per_request=0,
        gpus=[H200],
        headroom=0.25,
    )
    assert p.rows[0].usable_per_gpu_gb == pytest.approx(H200.memory_bytes * 0.75 / 1e9)
    # 402 GB of weights on 113 GB usable per H200 -> 4 GPUs (3 would be 339 GB)
    assert p.rows[0].gpus == 4


def test_presets_name_a_node_profile() -> None:
    from step_perception.core.profiles import profile_names

    assert {m.profile for m in pg.PRESETS.values()} <= set(profile_names())


def test_moe_needs_every_expert_in_memory() -> None:
    # memory comes from total parameters: 201B, not the 11B active
    assert pg.weight_bytes(STEP, pg.FORMATS["bf16"]) == 402e9
    assert any("all 288 experts" in n for n in STEP.notes)


def test_bad_input_is_a_typed_error() -> None:
    with pytest.raises(pg.PlanError):
        pg.plan(
            STEP,
            pg.FORMATS["fp8"],
            context_tokens=10,
            concurrent_sequences=0,
            image_tokens_per_request=0,
        )
    with pytest.raises(pg.PlanError):
        pg.plan(
            STEP,
            pg.FORMATS["fp8"],
            context_tokens=300000,
            concurrent_sequences=1,
            image_tokens_per_request=0,
        )
    with pytest.raises(pg.PlanError):
        pg.unified_memory_gpu(0)


# --- the CLI ----------------------------------------------------------------------------------


def test_table_for_step37_flash(capsys: pytest.CaptureFixture[str]) -> None:
    assert pg.run(_args("--unified-gb", "128")) == 0
    out = capsys.readouterr().out
    assert out.startswith("step3p7-flash in fp8")
    for name in pg.GPUS:
        assert name in out
    assert "unified-128GB" in out and "does not fit" in out
    assert len(out.splitlines()) <= 24  # one screen


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert pg.run(_args("--dtype", "bf16", "--quantize-all", "--gpu", "H200-141GB", "--json")) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["weights_gb"] == pytest.approx(402.0)
    assert data["rows"][0]["gpu"] == "H200-141GB" and data["rows"][0]["gpus"] == 4


def test_injected_token_function_sees_the_send_size(capsys: pytest.CaptureFixture[str]) -> None:
    seen: list[tuple[int, int]] = []

    def tokens(w: int, h: int) -> int:
        seen.append((w, h))
        return (w // 28) * (h // 28)

    assert pg.run(_args("--image-side", "728", "--camera", "1280x720", "--json"), tokens) == 0
    big = json.loads(capsys.readouterr().out)
    assert seen == [(728, 410)]  # the node's target_size for 1280x720 at 728
    assert big["image_tokens_per_request"] == 26 * 14 and big["send_size"] == [728, 410]
    assert pg.run(_args("--image-side", "448", "--json"), tokens) == 0
    small = json.loads(capsys.readouterr().out)
    assert small["image_tokens_per_request"] < big["image_tokens_per_request"]
    assert small["kv_total_gb"] < big["kv_total_gb"]


def test_bad_cli_input_returns_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert pg.run(_args("--concurrency", "0")) == 2
    assert "concurrent sequences" in capsys.readouterr().err
