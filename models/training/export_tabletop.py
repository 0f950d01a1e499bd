"""Write the transformers model folder of the tabletop reference model.

    python models/training/export_tabletop.py --checkpoint CKPT.pt --out models/tabletop-ref

Writes config.json (auto_map to the remote code), generation_config.json, tokenizer.json and its
config, processor_config.json and model.safetensors (detector weights from the training
checkpoint; random initial weights without ``--checkpoint``, for plumbing tests only).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from reference_model import MODEL_DIR, module
from safetensors.torch import save_file

TabletopConfig = module("configuration_tabletop").TabletopConfig
TabletopDetector = module("modeling_tabletop").TabletopDetector
_text = module("tabletop_text")
EOS, PAD, SPECIAL_TOKENS, UNK, build_tokenizer = (
    _text.EOS,
    _text.PAD,
    _text.SPECIAL_TOKENS,
    _text.UNK,
    _text.build_tokenizer,
)

AUTO_MAP = {
    "AutoConfig": "configuration_tabletop.TabletopConfig",
    "AutoModelForCausalLM": "modeling_tabletop.TabletopForConditionalGeneration",
    "AutoModelForImageTextToText": "modeling_tabletop.TabletopForConditionalGeneration",
    "AutoModelForMultimodalLM": "modeling_tabletop.TabletopForConditionalGeneration",
}


def write_folder(out: Path, state: dict[str, torch.Tensor], cfg: TabletopConfig) -> None:
    """Write every file of the model folder except the model card and the code."""
    out.mkdir(parents=True, exist_ok=True)
    cfg.architectures = ["TabletopForConditionalGeneration"]
    cfg.auto_map = dict(AUTO_MAP)
    cfg.to_json_file(str(out / "config.json"))
    gen = {
        "eos_token_id": SPECIAL_TOKENS.index(EOS),
        "pad_token_id": SPECIAL_TOKENS.index(PAD),
        "do_sample": False,
        "max_new_tokens": 1024,
        "use_cache": False,
    }
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    build_tokenizer().save(str(out / "tokenizer.json"))
    tok_cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "processor_class": "TabletopProcessor",
        "auto_map": {"AutoProcessor": "processing_tabletop.TabletopProcessor"},
        "eos_token": EOS,
        "pad_token": PAD,
        "unk_token": UNK,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1 << 20,
        "padding_side": "left",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tok_cfg, indent=2) + "\n")
    proc = {
        "processor_class": "TabletopProcessor",
        "auto_map": {"AutoProcessor": "processing_tabletop.TabletopProcessor"},
        "input_width": cfg.input_width,
        "input_height": cfg.input_height,
        "image_mean": cfg.image_mean,
        "image_std": cfg.image_std,
    }
    (out / "processor_config.json").write_text(json.dumps(proc, indent=2) + "\n")
    tensors = {
        f"detector.{k}": v.detach().contiguous()
        if k.endswith("num_batches_tracked")
        else v.detach().to(torch.float32).contiguous()
        for k, v in state.items()
    }
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})


def main() -> None:
    """Export a checkpoint (or random weights) to the model folder."""
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--checkpoint", type=Path, help="training checkpoint (.pt) with 'model' and 'config'"
    )
    ap.add_argument("--out", type=Path, default=MODEL_DIR)
    args = ap.parse_args()
    if args.checkpoint is not None:
        ck = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        cfg = TabletopConfig(**ck["config"])
        state = ck["model"]
    else:
        cfg = TabletopConfig()
        det = TabletopDetector(cfg.widths, cfg.head_width, len(cfg.class_labels))
        state = det.state_dict()
    write_folder(args.out, state, cfg)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
