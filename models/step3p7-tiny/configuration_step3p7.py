"""Config class of the tiny Step-3.7-architecture model (loaded by vLLM through ``auto_map``).

vLLM 0.32 has the model (``Step3p7ForConditionalGeneration``) but registers no config class for
``model_type: step3p7``, so the model folder brings one (``trust_remote_code``), as the real
checkpoint does. Its ``text_config`` must be vLLM's own ``Step3p5Config``: vLLM's
``Step3p5DecoderLayer`` asserts that exact class. The vision fields are the ones vLLM's
``step_vl.PerceptionEncoder`` reads. This file only runs inside the server's venv (.venv-vllm).
"""

from __future__ import annotations

from typing import Any

from transformers import PretrainedConfig
from vllm.transformers_utils.configs.step3p5 import Step3p5Config


class Step3p7VisionConfig(PretrainedConfig):
    """The perception encoder: a ViT with 2D RoPE and two stride-2 downsampling convolutions."""

    model_type = "step3p7_vision"

    def __init__(
        self,
        width: int = 1536,
        layers: int = 47,
        heads: int = 16,
        patch_size: int = 14,
        image_size: int = 728,
        mlp_ratio: float = 4.0,
        output_dim: int | None = None,
        hidden_act: str = "gelu",
        use_abs_posemb: bool = True,
        use_cls_token: bool = False,
        use_rope2d: bool = True,
        use_ln_pre: bool = True,
        use_ln_post: bool = False,
        ls_init_value: float | None = None,
        enable_patch: bool = True,
        **kwargs: Any,
    ) -> None:
        self.width = width
        self.layers = layers
        self.heads = heads
        self.patch_size = patch_size
        self.image_size = image_size
        self.mlp_ratio = mlp_ratio
        self.output_dim = output_dim
        self.hidden_act = hidden_act
        self.use_abs_posemb = use_abs_posemb
        self.use_cls_token = use_cls_token
        self.use_rope2d = use_rope2d
        self.use_ln_pre = use_ln_pre
        self.use_ln_post = use_ln_post
        self.ls_init_value = ls_init_value
        self.enable_patch = enable_patch
        super().__init__(**kwargs)


class Step3p7Config(PretrainedConfig):
    """Top-level config: vision encoder, projector and the Step-3.5 MoE text model."""

    model_type = "step3p7"

    def __init__(
        self,
        vision_config: dict[str, Any] | Step3p7VisionConfig | None = None,
        text_config: dict[str, Any] | Step3p5Config | None = None,
        projector_bias: bool = False,
        understand_projector_stride: int = 2,
        image_token_id: int = 3,
        **kwargs: Any,
    ) -> None:
        if not isinstance(vision_config, Step3p7VisionConfig):
            vision_config = Step3p7VisionConfig(**(vision_config or {}))
        if not isinstance(text_config, Step3p5Config):
            text_config = Step3p5Config(**(text_config or {}))
        self.vision_config = vision_config
        self.text_config = text_config
        self.projector_bias = projector_bias
        self.understand_projector_stride = understand_projector_stride
        self.image_token_id = image_token_id
        self.hidden_size = text_config.hidden_size
        super().__init__(**kwargs)
