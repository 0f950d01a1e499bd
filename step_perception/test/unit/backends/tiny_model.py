"""Build a tiny random-weight LLaVA-architecture model folder, entirely offline.

A tiny CLIP vision tower + a tiny Llama, a byte-level BPE tokenizer trained
locally with the ``tokenizers`` library (wrapped in ``PreTrainedTokenizerFast``
with a chat template), a ``CLIPImageProcessor`` and a ``LlavaProcessor``, all
saved with ``save_pretrained``. Random weights: it checks the wire and the
loading code, not the answers. Loadable by ``AutoProcessor`` +
``AutoModelForImageTextToText`` and servable by ``transformers serve``.

Reusable by any test: ``build_tiny_llava(folder)``; or from a shell:
``python step_perception/test/unit/backends/tiny_model.py OUT_DIR``.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

__all__ = ["IMAGE_SIZE", "build_tiny_llava"]

#: Side of the (square) image the vision tower takes [px].
IMAGE_SIZE = 32
_PATCH = 8

_SPECIAL = ["<pad>", "<s>", "</s>", "<unk>", "<image>", "<|system|>", "<|user|>", "<|assistant|>"]

# Renders OpenAI-style content lists (text parts and image parts) as transformers
# processors pass them; one "<image>" per image, which LlavaProcessor expands.
_CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|' + message['role'] + '|>' }}"
    "{%- if message['content'] is string -%}{{ message['content'] }}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'image' -%}{{ '<image>' }}"
    "{%- elif part['type'] == 'text' -%}{{ part['text'] }}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}{{ '</s>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)

_CORPUS = [
    'Task: detect\nRequest: the red cube\nAllowed actions: pick, place, point\n{"objects": [',
    '{"label": "red cube", "bbox_2d": [12, 40, 300, 512], "score": 0.93, "description": ""}',
    '"relations": [{"subject": 0, "relation": "left_of", "object": 1}], "summary": "a scene"',
    "red green blue yellow orange purple white cube ball cylinder cone mug",
    "left_of right_of above below in_front_of behind near on_top_of inside",
    "You are a robot's perception module. Answer with JSON only.",
]


def _build_tokenizer() -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    transformers: Any = importlib.import_module("transformers")

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=_SPECIAL,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        extra_special_tokens={"image_token": "<image>"},
        additional_special_tokens=_SPECIAL[4:],
        chat_template=_CHAT_TEMPLATE,
    )


def build_tiny_llava(folder: Path, seed: int = 0) -> Path:
    """Write a tiny LLaVA model + processor into ``folder`` and return it.

    Generation never emits special tokens (they are suppressed in the saved
    generation config), so every answer is ``max_tokens`` of printable text.
    """
    import torch

    # Untyped on purpose: transformers' partial stubs would need ignores everywhere.
    tf: Any = importlib.import_module("transformers")

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer()
    vocab = len(tokenizer)
    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in _SPECIAL}

    vision = tf.CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        image_size=IMAGE_SIZE,
        patch_size=_PATCH,
        projection_dim=32,
    )
    text = tf.LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
        tie_word_embeddings=False,
    )
    config = tf.LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=ids["<image>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        image_seq_length=(IMAGE_SIZE // _PATCH) ** 2,
    )
    torch.manual_seed(seed)
    model = tf.LlavaForConditionalGeneration(config).eval()
    model.generation_config = tf.GenerationConfig(
        bos_token_id=ids["<s>"],
        eos_token_id=ids["</s>"],
        pad_token_id=ids["<pad>"],
        do_sample=False,
        max_new_tokens=32,
        suppress_tokens=sorted(ids.values()),
    )
    model.save_pretrained(folder)

    image_processor = tf.CLIPImageProcessor(
        size={"shortest_edge": IMAGE_SIZE},
        crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
    )
    processor = tf.LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=_PATCH,
        vision_feature_select_strategy="default",
        image_token="<image>",
        num_additional_image_tokens=1,
        chat_template=_CHAT_TEMPLATE,
    )
    processor.save_pretrained(folder)
    return folder


if __name__ == "__main__":
    out = build_tiny_llava(Path(sys.argv[1] if len(sys.argv) > 1 else "tiny_llava"))
    print(out)
