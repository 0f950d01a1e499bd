"""Model profiles: the box convention, prompt wording and sampling defaults of a model family.

A profile *fixes* how the numbers in a box are read. The parser never guesses
the convention from the size of the numbers: a Qwen2.5-VL answer of
``[10, 20, 30, 40]`` is pixels, a Step-3.7-Flash answer of the same list is
thousandths of the image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType

from step_perception.core.errors import ConfigError
from step_perception.core.tokens import SendSize, step3_fewest_tokens_size, step3_image_tokens
from step_perception.core.types import SamplingParams

__all__ = ["PROFILES", "BoxConvention", "ModelProfile", "get_profile", "profile_names"]


class BoxConvention(str, Enum):
    """How the four numbers of a box in the model's answer are laid out."""

    ABS_PIXELS_SENT = "abs_pixels_sent"  # [x1, y1, x2, y2] pixels of the image as sent
    NORM_1000_XYXY = "norm_1000_xyxy"  # [x1, y1, x2, y2] in 0..1000 of the image as sent
    NORM_1000_YXYX = "norm_1000_yxyx"  # [ymin, xmin, ymax, xmax] in 0..1000 (Gemini)


@dataclass(frozen=True)
class ModelProfile:
    """Everything that differs between model families for the same task."""

    name: str
    box_convention: BoxConvention
    box_key: str  # the JSON key the prompt asks boxes under ("bbox_2d" or "box_2d")
    system_prompt: str
    sampling: SamplingParams
    supports_response_format: bool  # the usual server for it honours json_schema response_format
    # Prompt tokens of an image of the sent size, as the family's own processor counts them
    # (core/tokens.py); None = unknown, and detail low/balanced fall back to max_image_side.
    image_tokens: Callable[[int, int], int] | None = None
    image_token_budget: int = 0  # detail=balanced: most pixels within this many image tokens
    fewest_tokens: Callable[[int, int], SendSize] | None = None  # detail=low geometry

    def box_instruction(self, sent_width: int, sent_height: int) -> str:
        """One sentence telling the model how to write a box, for the image as sent."""
        if self.box_convention is BoxConvention.ABS_PIXELS_SENT:
            return (
                f'Give each box as "{self.box_key}": [x1, y1, x2, y2] in absolute pixel '
                f"coordinates of this {sent_width}x{sent_height} image "
                "(x1,y1 top-left corner, x2,y2 bottom-right corner)."
            )
        if self.box_convention is BoxConvention.NORM_1000_YXYX:
            return (
                f'Give each box as "{self.box_key}": [ymin, xmin, ymax, xmax] normalised to '
                "0-1000 of the image height and width."
            )
        return (
            f'Give each box as "{self.box_key}": [x1, y1, x2, y2] normalised to 0-1000 of the '
            "image width and height (x1,y1 top-left corner, x2,y2 bottom-right corner)."
        )


_SYSTEM = (
    "You are the perception module of a robot. You look at one camera image and answer "
    "with a single JSON object and nothing else. Only report what is visible in the image."
)

_PROFILES: dict[str, ModelProfile] = {
    p.name: p
    for p in (
        ModelProfile(
            name="step3p7",
            box_convention=BoxConvention.NORM_1000_XYXY,
            box_key="bbox_2d",
            system_prompt=_SYSTEM,
            # A reasoning model that always thinks (its template opens the answer inside
            # <think>; vLLM's step3p5 parser cannot switch it off): max_tokens includes the
            # thinking, and thinking_token_budget makes vLLM close <think> after 1024 tokens
            # (about 12 s at 12 ms/token on 4xH200), so an answer always follows.
            sampling=SamplingParams(
                temperature=0.0,
                max_tokens=4096,
                reasoning_effort="low",
                thinking_token_budget=1024,
            ),
            supports_response_format=True,
            image_tokens=step3_image_tokens,
            # What the classic 728 px long side costs for 16:9 (728x410): balanced spends it on
            # 1072x603 instead; low pads to 727x545 for 171.
            image_token_budget=337,
            fewest_tokens=step3_fewest_tokens_size,
        ),
        ModelProfile(
            name="qwen3_vl",
            box_convention=BoxConvention.NORM_1000_XYXY,
            box_key="bbox_2d",
            system_prompt=_SYSTEM,
            sampling=SamplingParams(temperature=0.0, max_tokens=1024, reasoning_effort=None),
            supports_response_format=True,
        ),
        ModelProfile(
            name="qwen2_5_vl",
            box_convention=BoxConvention.ABS_PIXELS_SENT,
            box_key="bbox_2d",
            system_prompt=_SYSTEM,
            sampling=SamplingParams(temperature=0.0, max_tokens=1024, reasoning_effort=None),
            supports_response_format=True,
        ),
        ModelProfile(
            name="generic",
            box_convention=BoxConvention.NORM_1000_XYXY,
            box_key="bbox_2d",
            system_prompt=_SYSTEM,
            sampling=SamplingParams(temperature=0.0, max_tokens=512, reasoning_effort=None),
            supports_response_format=False,
        ),
        ModelProfile(
            name="gemini",
            box_convention=BoxConvention.NORM_1000_YXYX,
            box_key="box_2d",
            system_prompt=_SYSTEM,
            sampling=SamplingParams(temperature=0.0, max_tokens=2048, reasoning_effort="low"),
            supports_response_format=True,
        ),
    )
}


#: Every known profile by name (read-only: a profile fixes a wire convention).
PROFILES: Mapping[str, ModelProfile] = MappingProxyType(_PROFILES)


def profile_names() -> tuple[str, ...]:
    """Return the names of the known profiles, sorted."""
    return tuple(sorted(PROFILES))


def get_profile(name: str) -> ModelProfile:
    """Return the profile called ``name``; ``ConfigError`` naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ConfigError(
            f"model_profile: unknown profile {name!r} (known: {', '.join(profile_names())})"
        ) from None
