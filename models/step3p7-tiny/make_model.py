"""Write the tiny random-weight Step-3.7-architecture model folder (config + tokenizer, no weights).

Run with the server's venv, offline, at set-up time (``make vllm`` does)::

    .venv-vllm/bin/python models/step3p7-tiny/make_model.py --out .cache/step3p7-tiny

The folder is what vLLM 0.32's ``Step3p7ForConditionalGeneration`` loads with
``--trust-remote-code --load-format dummy`` (random weights, so none are written or shipped):

* ``config.json``: ``architectures: [Step3p7ForConditionalGeneration]``, ``model_type: step3p7`` and
  ``auto_map`` to ``configuration_step3p7.py`` (copied beside it). The dimensions are the smallest
  that vLLM's CPU kernels take: head_dim 64 everywhere (CPU attention rejects 16), GQA in the text
  model (2 query heads, 1 KV head), 4 experts with top-2 routing, a one-layer ViT with the real
  geometry (image 728, patch 14: 52x52 patches -> two stride-2 convolutions -> 13x13 = 169 image
  tokens, 9x9 = 81 per 504-px crop), so the server's token counts are the real model's.
* a byte-level BPE tokenizer trained here on a fixed corpus, with the special tokens vLLM's Step-3
  image processor (``<im_patch>``, ``<im_start>``, ``<im_end>``, ``<patch_start>``, ``<patch_end>``,
  ``<patch_newline>``) and the ``step3p5`` reasoning/tool parser (``<think>``, ``</think>``,
  ``<tool_call>``, ``</tool_call>``, ChatML turn markers) use;
* a ChatML chat template that puts ``<im_patch>`` for each image and opens the assistant turn
  inside ``<think>``, as Step-3.7-Flash's own template does (thinking cannot be switched off).

Deterministic: the same inputs give byte-identical files (checked by ``make vllm``'s stamp).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers

HERE = Path(__file__).resolve().parent

VOCAB_SIZE = 2048
# Chat and image tokens are special (never produced by splitting text, skipped when decoding).
SPECIAL = (
    "<unk>",
    "<|begin_of_sentence|>",
    "<|end_of_sentence|>",
    "<|im_end|>",
    "<|im_start|>",
    "<im_patch>",
    "<im_start>",
    "<im_end>",
    "<patch_start>",
    "<patch_end>",
    "<patch_newline>",
)
# Reasoning and tool markers stay in the decoded text, where the step3p5 parser looks for them.
MARKERS = ("<think>", "</think>", "<tool_call>", "</tool_call>")
BOS, EOS_IDS = "<|begin_of_sentence|>", ("<|end_of_sentence|>", "<|im_end|>")

CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "<|im_start|>{{ message['role'] }}\n"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] in ('image', 'image_url') -%}<im_patch>"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}<|im_end|>\n"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|im_start|>assistant\n<think>\n{%- endif -%}"
)

TEXT = dict(
    architectures=["Step3p5ForCausalLM"],
    model_type="step3p5",
    hidden_size=128,
    intermediate_size=256,
    num_attention_heads=2,
    num_attention_groups=1,
    head_dim=64,
    num_hidden_layers=2,  # layer 0 dense, layer 1 MoE (vLLM's default moe layer set: 1..n-1)
    max_seq_len=8192,
    max_position_embeddings=8192,
    vocab_size=VOCAB_SIZE,
    rms_norm_eps=1e-5,
    use_moe=True,
    moe_num_experts=4,
    moe_top_k=2,
    moe_intermediate_size=64,
    share_expert_dim=64,
    # vLLM-CPU's MoE router implements softmax scoring only (cpu_router.py asserts it).
    moe_router_activation="softmax",
    use_moe_router_bias=True,
    need_fp32_gate=True,
    norm_expert_weight=True,
    rope_theta=10000.0,
    att_impl_type="GQA",
    tie_word_embeddings=False,
)
VISION = dict(
    model_type="step3p7_vision",
    width=128,
    layers=1,
    heads=2,  # head_dim 64
    patch_size=14,
    image_size=728,
    mlp_ratio=2.0,
    hidden_act="gelu",
    use_abs_posemb=True,
    use_cls_token=False,
    use_rope2d=True,
    use_ln_pre=True,
    use_ln_post=False,
    enable_patch=True,
)


_WORDS = """
the a an of in on at to and or with without is are was left right above below behind
in_front_of near far next inside object objects label box bbox_2d score summary
relations relation subject action target name description scene image camera robot red
green blue yellow white black orange purple cube ball mug bottle cup bowl box table
plate apple banana book phone person hand gripper pick place push point detect
describe command query answer json only visible task request allowed actions none null
true false give each as x1 y1 x2 y2 normalised normalized 0-1000 width height corner
top bottom perception module you look one single nothing else report what is visible
"""


def _corpus() -> list[str]:
    """Return the fixed training corpus: perception prose, JSON answers, numbers (no randomness)."""
    words = re.findall(r"\S+", _WORDS)
    lines = [" ".join(words[i : i + 9]) for i in range(0, len(words), 3)]
    lines += [str(n) for n in range(1001)]
    for i, w in enumerate(words):
        box = [(i * 37) % 1000, (i * 53) % 1000, (i * 71) % 1000, (i * 97) % 1000]
        lines.append(
            json.dumps(
                {
                    "objects": [
                        {
                            "label": f"{w} {words[(i + 5) % len(words)]}",
                            "bbox_2d": box,
                            "score": round((i % 10) / 10, 1),
                        }
                    ],
                    "summary": " ".join(words[i : i + 6]),
                    "relations": [],
                }
            )
        )
    return lines * 3


def build_tokenizer() -> Tokenizer:
    """Train the byte-level BPE tokenizer and add the special tokens at fixed ids."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[*SPECIAL, *MARKERS],  # ids 0..14 in this order
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in MARKERS])
    return tok


def write(out: Path) -> None:
    """Write the model folder to ``out`` (created; existing files replaced)."""
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer()
    tok.save(str(out / "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in (*SPECIAL, *MARKERS)}
    assert list(ids.values()) == list(range(len(ids))), ids  # fixed ids, whatever BPE learnt
    assert tok.get_vocab_size() <= VOCAB_SIZE, tok.get_vocab_size()
    text = dict(TEXT, bos_token_id=ids[BOS], eos_token_id=[ids[t] for t in EOS_IDS])
    config = {
        "architectures": ["Step3p7ForConditionalGeneration"],
        "model_type": "step3p7",
        "auto_map": {"AutoConfig": "configuration_step3p7.Step3p7Config"},
        "text_config": text,
        "vision_config": VISION,
        "projector_bias": False,
        "understand_projector_stride": 2,
        "image_token_id": ids["<im_patch>"],
        "bos_token_id": ids[BOS],
        "eos_token_id": [ids[t] for t in EOS_IDS],
        "torch_dtype": "float32",
    }
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": BOS,
        "eos_token": "<|im_end|>",
        "pad_token": "<|end_of_sentence|>",
        "unk_token": "<unk>",
        "add_bos_token": False,
        "add_eos_token": False,
        "model_max_length": TEXT["max_position_embeddings"],
        "clean_up_tokenization_spaces": False,
    }
    files = {
        "config.json": config,
        "tokenizer_config.json": tokenizer_config,
        "special_tokens_map.json": {
            k: tokenizer_config[k] for k in ("bos_token", "eos_token", "pad_token", "unk_token")
        },
        "generation_config.json": {
            "bos_token_id": ids[BOS],
            "eos_token_id": [ids[t] for t in EOS_IDS],
        },
    }
    for name, payload in files.items():
        (out / name).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    shutil.copyfile(HERE / "configuration_step3p7.py", out / "configuration_step3p7.py")


def main() -> None:
    """Command line: ``--out DIR``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="model folder to write")
    write(parser.parse_args().out)


if __name__ == "__main__":
    main()
