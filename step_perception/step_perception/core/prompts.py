"""Build the one chat request a processed frame needs.

The user text always carries the machine-readable wire-contract lines
(``Task:``, ``Request:``, and for ``command`` ``Allowed actions:``) besides the
natural wording, and asks for boxes in the profile's convention. The JSON
schema of the answer goes with the request (sent as ``response_format`` where
the server honours it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from step_perception.core.config import PerceptionConfig
from step_perception.core.profiles import BoxConvention, ModelProfile, get_profile
from step_perception.core.types import ModelRequest, PreparedImage, RelationKind, Task

__all__ = [
    "DESCRIPTION_CHARS",
    "LABEL_CHARS",
    "MAX_PROMPT_CHARS",
    "SUMMARY_CHARS",
    "answer_schema",
    "build_request",
    "clean_prompt",
    "user_text",
]

#: Longest standing prompt sent (characters); longer ones are cut.
MAX_PROMPT_CHARS = 1000

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")
_RELATIONS = ", ".join(k.value for k in RelationKind)


def clean_prompt(prompt: str) -> str:
    """Return ``prompt`` on one line (control characters become spaces), trimmed and bounded."""
    return " ".join(_CONTROL_RE.sub(" ", prompt).split())[:MAX_PROMPT_CHARS]


#: Bounds the schema puts on an answer. A grammar-constrained server (vLLM, SGLang) can only
#: promise a *complete* answer when the answer is finite: an unbounded string, number or an
#: object open to extra keys runs until ``max_tokens`` cuts the JSON off (measured with vLLM 0.32,
#: xgrammar and random weights: one endless label; ``"type": "number"`` without a range, endless
#: digits). The limits are far above what a real answer needs and match what parsing keeps.
LABEL_CHARS = 64
DESCRIPTION_CHARS = 160
SUMMARY_CHARS = 400
MAX_RELATIONS = 64
#: Largest pixel coordinate a box may have in the ``abs_pixels_sent`` convention.
MAX_PIXEL_COORD = 8192


def answer_schema(
    profile: ModelProfile,
    task: Task,
    max_objects: int,
    allowed_actions: Sequence[str] = (),
    *,
    descriptions: bool | None = None,
) -> dict[str, Any]:
    """Return the JSON schema of the object-form answer for ``task``.

    It asks for no more than the task needs: a per-object ``description`` only for ``describe``
    (or when ``descriptions`` says so), a ``summary`` only for ``describe``. Every value is
    bounded and no object takes extra keys (see ``LABEL_CHARS``), so a grammar-constrained answer
    always ends.
    """
    if descriptions is None:
        descriptions = task is Task.DESCRIBE
    coord_max = MAX_PIXEL_COORD if profile.box_convention is BoxConvention.ABS_PIXELS_SENT else 1000
    obj_props: dict[str, Any] = {
        "label": {"type": "string", "maxLength": LABEL_CHARS},
        profile.box_key: {
            "type": "array",
            "items": {"type": "integer", "minimum": 0, "maximum": coord_max},
            "minItems": 4,
            "maxItems": 4,
        },
        "score": {"type": "number", "minimum": 0, "maximum": 1},
    }
    if descriptions:
        obj_props["description"] = {"type": "string", "maxLength": DESCRIPTION_CHARS}
    obj = {
        "type": "object",
        "properties": obj_props,
        "required": ["label", profile.box_key],
        "additionalProperties": False,
    }
    props: dict[str, Any] = {
        "objects": {"type": "array", "items": obj, "maxItems": max_objects},
    }
    required = ["objects"]
    if task is Task.DESCRIBE:
        index = {"type": "integer", "minimum": 0, "maximum": max(0, max_objects - 1)}
        props["relations"] = {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "subject": index,
                    "relation": {"type": "string", "enum": [k.value for k in RelationKind]},
                    "object": index,
                },
                "required": ["subject", "relation", "object"],
                "additionalProperties": False,
            },
            "maxItems": MAX_RELATIONS,
        }
        props["summary"] = {"type": "string", "maxLength": SUMMARY_CHARS}
        required += ["relations", "summary"]
    if task is Task.COMMAND:
        action: dict[str, Any] = {
            "type": "object",
            "properties": {
                "name": {"type": "string", "enum": list(allowed_actions)}
                if allowed_actions
                else {"type": "string", "maxLength": LABEL_CHARS},
                "target": {"type": "integer", "minimum": 0, "maximum": max(0, max_objects - 1)},
            },
            "required": ["name", "target"],
            "additionalProperties": False,
        }
        props["action"] = {"anyOf": [action, {"type": "null"}]}
        required.append("action")
    return {
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": False,
    }


def _example(profile: ModelProfile, task: Task) -> str:
    box = [120, 340, 260, 510]
    example: dict[str, Any] = {
        "objects": [
            {"label": "red cube", profile.box_key: box, "score": 0.9},
        ]
    }
    if task is Task.DESCRIBE:
        example["objects"][0]["description"] = "small, matte"
        example["objects"].append(
            {
                "label": "blue mug",
                profile.box_key: [400, 300, 520, 480],
                "score": 0.8,
                "description": "handle to the right",
            }
        )
        example["relations"] = [{"subject": 0, "relation": "left_of", "object": 1}]
        example["summary"] = "A red cube to the left of a blue mug on a table."
    if task is Task.COMMAND:
        example["action"] = {"name": "pick", "target": 0}
    return json.dumps(example)


def user_text(
    profile: ModelProfile,
    task: Task,
    prompt: str,
    *,
    sent_width: int,
    sent_height: int,
    max_objects: int,
    allowed_actions: Sequence[str] = (),
) -> str:
    """Return the user message text for one frame (natural wording + wire-contract lines)."""
    prompt = clean_prompt(prompt)
    if task is Task.DETECT:
        what = (
            f"Detect these objects in the image: {prompt}."
            if prompt
            else "Detect all salient objects in the image."
        )
    elif task is Task.LOCATE:
        what = (
            f"Locate the object or objects this description refers to: {prompt}. "
            "Report only the matching objects; an empty list if none matches."
        )
    elif task is Task.DESCRIBE:
        what = (
            "Describe the scene: list the objects, the spatial relations between them "
            f"(subject and object are indices into the objects list; relation is one of "
            f"{_RELATIONS}) and a one-sentence summary."
            + (f" Focus on: {prompt}." if prompt else "")
        )
    else:
        actions = ", ".join(allowed_actions) if allowed_actions else "(none)"
        what = (
            f"The robot's goal is: {prompt}. List the objects relevant to it and propose exactly "
            f"one next action, with name one of: {actions}, and target the index of the object "
            'in the objects list. Use "action": null if no allowed action fits.'
        )
    extra = " and an optional short description" if task is Task.DESCRIBE else ""
    lines = [
        what,
        "Label each object with a short lowercase noun phrase (colour and kind, e.g. "
        f'"red cube"), a score between 0 and 1{extra}.',
        profile.box_instruction(sent_width, sent_height),
        f"Report at most {max_objects} objects.",
        f"Answer with only one JSON object like this example: {_example(profile, task)}",
        "",
        f"Task: {task.value}",
        f"Request: {prompt}",
    ]
    if task is Task.COMMAND:
        lines.append(f"Allowed actions: {', '.join(allowed_actions)}")
    return "\n".join(lines)


def build_request(
    config: PerceptionConfig,
    image: PreparedImage,
    *,
    task: Task | None = None,
    prompt: str | None = None,
    deadline: float | None = None,
) -> ModelRequest:
    """Return the request for one frame; ``task``/``prompt`` override the config's standing ones."""
    profile = get_profile(config.model_profile)
    task = config.task if task is None else task
    prompt = config.prompt if prompt is None else prompt
    sampling = profile.sampling
    if config.max_tokens:
        sampling = replace(sampling, max_tokens=config.max_tokens)
    if config.thinking_token_budget:
        budget = None if config.thinking_token_budget < 0 else config.thinking_token_budget
        sampling = replace(sampling, thinking_token_budget=budget)
    if config.reasoning_effort == "none":
        sampling = replace(sampling, reasoning_effort=None)
    elif config.reasoning_effort:
        sampling = replace(sampling, reasoning_effort=config.reasoning_effort)
    use_rf = (
        profile.supports_response_format
        if config.use_response_format is None
        else config.use_response_format
    )
    return ModelRequest(
        model=config.model,
        profile=profile.name,
        system=profile.system_prompt,
        user=user_text(
            profile,
            task,
            prompt,
            sent_width=image.width,
            sent_height=image.height,
            max_objects=config.max_objects,
            allowed_actions=config.allowed_actions,
        ),
        image=image,
        sampling=sampling,
        json_schema=answer_schema(profile, task, config.max_objects, config.allowed_actions),
        use_response_format=use_rf,
        deadline=deadline,
    )
