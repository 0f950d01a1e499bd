"""Configuration of the tabletop reference model (a detector that speaks the VLM JSON protocol)."""

from __future__ import annotations

from transformers import PretrainedConfig

try:
    from .tabletop_text import EOS, LABELS, PAD, SPECIAL_TOKENS, vocabulary
except ImportError:  # imported as a plain module (training script)
    from tabletop_text import EOS, LABELS, PAD, SPECIAL_TOKENS, vocabulary


class TabletopConfig(PretrainedConfig):
    """Sizes of the detector and the decoding thresholds of its text head."""

    model_type = "tabletop_ref"

    def __init__(
        self,
        input_width: int = 512,
        input_height: int = 288,
        widths: tuple[int, ...] | list[int] = (16, 32, 64, 96, 128),
        head_width: int = 32,
        class_labels: tuple[str, ...] | list[str] = LABELS,
        score_threshold: float = 0.3,
        nms_iou: float = 0.6,
        max_objects: int = 12,
        image_mean: tuple[float, ...] | list[float] = (0.5, 0.5, 0.5),
        image_std: tuple[float, ...] | list[float] = (0.25, 0.25, 0.25),
        vocab_size: int | None = None,
        **kwargs: object,
    ) -> None:
        self.input_width = int(input_width)
        self.input_height = int(input_height)
        self.widths = list(widths)
        self.head_width = int(head_width)
        self.class_labels = list(class_labels)
        self.score_threshold = float(score_threshold)
        self.nms_iou = float(nms_iou)
        self.max_objects = int(max_objects)
        self.image_mean = list(image_mean)
        self.image_std = list(image_std)
        self.vocab_size = int(vocab_size) if vocab_size is not None else len(vocabulary())
        kwargs.setdefault("pad_token_id", SPECIAL_TOKENS.index(PAD))
        kwargs.setdefault("eos_token_id", SPECIAL_TOKENS.index(EOS))
        kwargs.setdefault("bos_token_id", None)
        kwargs.setdefault("use_cache", False)
        super().__init__(**kwargs)  # type: ignore[arg-type]


def _register_model_type() -> None:
    """Make ``transformers serve`` recognise this remote-code model as image-text-to-text.

    ``transformers serve`` (5.x) picks the loader and the request modality from transformers' own
    name tables (``MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES`` / ``..._IMAGE_TEXT_TO_TEXT_...``) and
    otherwise fails with ``AttributeError: module transformers has no attribute
    TabletopForConditionalGeneration``.  Adding our model type to those tables (this process only)
    routes it to ``AutoModelForMultimodalLM``, which loads the class named in ``auto_map`` here.
    """
    try:
        from transformers.models.auto import modeling_auto
    except ImportError:  # pragma: no cover - very old transformers
        return
    for table in (
        "MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES",
        "MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES",
    ):
        names = getattr(modeling_auto, table, None)
        if names is not None:
            names.setdefault(TabletopConfig.model_type, "TabletopForConditionalGeneration")


_register_model_type()
