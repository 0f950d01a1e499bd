"""Tolerant extraction and strict validation of the model's answer.

Extraction accepts the answer inside code fences, after reasoning text or a
``<think>…</think>`` block, and followed by prose; both the Qwen-style bare
list ``[{"label", "bbox_2d"}]`` and the object form ``{"objects", "relations",
"summary", "action"}`` (see the wire contract in core/prompts.py). When several
JSON values qualify, the last one wins (reasoning comes before the answer).

Validation is strict: boxes are read in the profile's convention (never
guessed from the numbers' size), must be four finite numbers, are clamped to
the image and dropped when degenerate; the object count is capped; relations
with unknown names or dangling indices are dropped and counted. Surviving
boxes are mapped to source pixels through the image's kept transform.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from step_perception.core.errors import ParseError
from step_perception.core.profiles import BoxConvention, ModelProfile
from step_perception.core.types import (
    Box2D,
    Detection,
    ImageTransform,
    PreparedImage,
    Relation,
    RelationKind,
    RelationSource,
)

__all__ = [
    "MAX_ANSWER_CHARS",
    "MAX_LABEL_CHARS",
    "MIN_BOX_PX",
    "ParsedAnswer",
    "ProposedAction",
    "box_to_sent",
    "extract_json",
    "parse_answer",
    "strip_reasoning",
]

#: Only the last this-many characters of an answer are searched for JSON.
MAX_ANSWER_CHARS = 65536
#: Longest label kept (characters).
MAX_LABEL_CHARS = 64
#: Longest summary / description kept (characters).
MAX_TEXT_CHARS = 2000
#: A box narrower or lower than this in sent pixels (after clamping) is dropped.
MIN_BOX_PX = 1.0
#: Characters the JSON decoder may read in failed attempts per answer (bounds adversarial work).
_SCAN_BUDGET = 2_000_000
_DEEP_COST = 1000
_FAIL_COST = 64

_THINK_RE = re.compile(r"<think>.*?</think>", re.S | re.I)
_FENCE_RE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)```", re.S)
_TRAILING_COMMA_RE = re.compile(r",\s*([\]}])")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]+")
_OPEN_RE = re.compile(r"[\[{]")
_ANSWER_KEYS = ("objects", "relations", "summary", "action")
_BOX_KEYS = ("bbox_2d", "box_2d", "bbox", "box")


@dataclass(frozen=True)
class ProposedAction:
    """The action the model proposed; untrusted until core/commands.py accepts it."""

    name: str  # as written (trimmed, lowercased, bounded)
    target: str | None  # a detection id (the model's object index) or a label; None = absent


@dataclass(frozen=True)
class ParsedAnswer:
    """A validated answer; boxes in source pixels, ids = the model's object indices."""

    detections: tuple[Detection, ...]
    relations: tuple[Relation, ...] = ()
    summary: str = ""
    action: ProposedAction | None = None
    dropped_objects: int = 0  # invalid, degenerate or over the cap
    dropped_relations: int = 0  # unknown name, bad or dangling index


def strip_reasoning(text: str) -> str:
    """Drop a reasoning model's ``<think>…</think>`` thoughts from an answer (any letter case).

    Also handles a server that strips the opening tag (the answer starts with the
    reasoning and ``</think>``) and an unclosed ``<think>`` cut off by
    ``max_tokens`` (everything after it is reasoning). The backends call it on
    every reply; ``parse_answer`` calls it again (idempotent) for replies from
    elsewhere.
    """
    text = _THINK_RE.sub(" ", text)
    # An unmatched closing tag: the reasoning ran before it (the server ate the opening one).
    idx = text.lower().rfind("</think>")
    if idx >= 0:
        text = text[idx + len("</think>") :]
    idx = text.lower().find("<think>")
    if idx >= 0:
        text = text[:idx]
    return text.strip()


def _qualifies(value: object) -> bool:
    if isinstance(value, dict):
        return any(k in value for k in _ANSWER_KEYS) or any(k in value for k in _BOX_KEYS)
    if isinstance(value, list):
        # A list of objects: empty (nothing seen), or dicts of which at least one has a box.
        # A stray list of other dicts in trailing prose must not win over the real answer.
        return all(isinstance(v, dict) for v in value) and (
            not value or any(k in v for v in value for k in _BOX_KEYS)
        )
    return False


def _find(value: object, depth: int = 0) -> object | None:
    """Return ``value`` if it is an answer, else the last answer nested in it (a wrapper)."""
    if _qualifies(value):
        return value
    if depth >= 4:
        return None
    children = value.values() if isinstance(value, dict) else value
    if not isinstance(children, (list, type({}.values()))):
        return None
    found = None
    for child in children:
        if isinstance(child, (dict, list)):
            hit = _find(child, depth + 1)
            if hit is not None:
                found = hit
    return found


def _scan(text: str, budget: list[int]) -> list[object]:
    """Return every answer-shaped JSON value in ``text``, in order.

    A value that parses is skipped as a whole (searched inside for a wrapped
    answer). Failed starts cost ``budget`` by how far the decoder read, which
    bounds the work on adversarial text (e.g. ``[[[[…``) to a few ms.
    """
    decoder = json.JSONDecoder()
    found: list[object] = []
    i, n = 0, len(text)
    while i < n and budget[0] > 0:
        m = _OPEN_RE.search(text, i)
        if m is None:
            break
        i = m.start()
        try:
            value, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError as err:
            budget[0] -= max(_FAIL_COST, err.pos - i)  # how far the decoder read
            i += 1
            continue
        except (ValueError, RecursionError):  # digit limits, nesting deeper than Python's stack
            budget[0] -= _DEEP_COST
            i += 1
            continue
        hit = _find(value)
        if hit is not None:
            found.append(hit)
        i = end
    return found


def extract_json(text: str) -> object:
    """Return the answer's JSON value (the last qualifying one); ``ParseError`` if none."""
    if not isinstance(text, str):
        raise ParseError(f"answer is not text ({type(text).__name__})")
    body = strip_reasoning(text[-MAX_ANSWER_CHARS:])
    budget = [_SCAN_BUDGET]
    # Trailing commas (",]" / ",}") are the commonest near-JSON slip; fixing them first keeps
    # the scan from settling on an inner fragment of an otherwise complete answer.
    fixed = _TRAILING_COMMA_RE.sub(r"\1", body)
    for attempt in (fixed, body) if fixed != body else (body,):
        fenced = [m.group(1) for m in _FENCE_RE.finditer(attempt)]
        for chunk in reversed(fenced):
            found = _scan(chunk, budget)
            if found:
                return found[-1]
        found = _scan(attempt, budget)
        if found:
            return found[-1]
    raise ParseError("no JSON answer found", text)


def _number(v: object) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        f = float(v)
    except OverflowError:
        return None
    return f if math.isfinite(f) else None


def box_to_sent(
    values: object, convention: BoxConvention, sent_width: int, sent_height: int
) -> Box2D | None:
    """Read four numbers in ``convention`` as a box in sent pixels, clamped; None if invalid."""
    if (
        isinstance(values, list)
        and len(values) == 1
        and isinstance(values[0], list)  # [[x1, y1, x2, y2]]
    ):
        values = values[0]
    if not isinstance(values, list) or len(values) != 4:
        return None
    nums = [_number(v) for v in values]
    if any(n is None for n in nums):
        return None
    a, b, c, d = (n for n in nums if n is not None)
    if convention is BoxConvention.NORM_1000_YXYX:
        x1, y1, x2, y2 = b, a, d, c
    else:
        x1, y1, x2, y2 = a, b, c, d
    if convention is not BoxConvention.ABS_PIXELS_SENT:
        x1, x2 = x1 * sent_width / 1000.0, x2 * sent_width / 1000.0
        y1, y2 = y1 * sent_height / 1000.0, y2 * sent_height / 1000.0
    x1, x2 = sorted((min(max(x1, 0.0), sent_width), min(max(x2, 0.0), sent_width)))
    y1, y2 = sorted((min(max(y1, 0.0), sent_height), min(max(y2, 0.0), sent_height)))
    if x2 - x1 < MIN_BOX_PX or y2 - y1 < MIN_BOX_PX:
        return None
    return Box2D(x1, y1, x2, y2)


def _to_source(box: Box2D, t: ImageTransform, width: float, height: float) -> Box2D | None:
    x1, y1 = t.to_source(box.x1, box.y1)
    x2, y2 = t.to_source(box.x2, box.y2)
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    if not (x2 > x1 and y2 > y1):
        return None
    return Box2D(x1, y1, x2, y2)


def _clean(text: object, limit: int) -> str:
    if not isinstance(text, str):
        return ""
    return " ".join(_CONTROL_RE.sub(" ", text).split())[:limit]


def _label(v: object) -> str:
    # Quotes and backslashes never help a label and would break the command grammar.
    return (
        _clean(v, MAX_LABEL_CHARS * 2).replace('"', "").replace("\\", "").strip()[:MAX_LABEL_CHARS]
    )


def _index(v: object) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e9:
        return int(v)
    if isinstance(v, str) and v.strip().isdigit() and len(v.strip()) < 10:
        return int(v.strip())
    return None


def _relation_kind(v: object) -> RelationKind | None:
    if not isinstance(v, str):
        return None
    name = re.sub(r"[\s\-]+", "_", v.strip().lower())
    try:
        return RelationKind(name)
    except ValueError:
        return None


def _action(v: object) -> ProposedAction | None:
    if isinstance(v, str):
        name = _clean(v, 64).lower()
        return ProposedAction(name, None) if name else None
    if not isinstance(v, dict):
        return None
    name = _clean(v.get("name", v.get("action")), 64).lower()
    if not name:
        return None
    raw_target = v.get("target")
    idx = _index(raw_target)
    if idx is not None:
        target: str | None = str(idx)
    elif isinstance(raw_target, str) and _label(raw_target):
        target = _label(raw_target)
    else:
        target = None
    return ProposedAction(name, target)


def parse_answer(
    text: str,
    profile: ModelProfile,
    image: PreparedImage,
    *,
    max_objects: int = 32,
) -> ParsedAnswer:
    """Extract, validate and map the answer to source pixels; ``ParseError`` if nothing is valid.

    An answer with no objects is valid (the model saw none). It is an error
    when no JSON answer is found, or when the answer listed objects, none
    survived validation, and it carries neither a summary nor an action.
    """
    value = extract_json(text)
    raw_objects: Sequence[object]
    answer: Mapping[str, Any]
    if isinstance(value, list):
        raw_objects, answer = value, {}
    elif isinstance(value, dict) and not any(k in value for k in _ANSWER_KEYS):
        raw_objects, answer = [value], {}  # one bare object
    elif isinstance(value, dict):
        objs = value.get("objects", [])
        raw_objects = objs if isinstance(objs, list) else []
        answer = value
    else:  # pragma: no cover - _qualifies admits only lists and dicts
        raise ParseError("answer is neither a list nor an object", text)

    sw = image.source_width or image.width * image.transform.scale_x
    sh = image.source_height or image.height * image.transform.scale_y
    detections: list[Detection] = []
    dropped = 0
    for index, item in enumerate(raw_objects):
        if len(detections) >= max_objects:
            dropped += len(raw_objects) - index
            break
        det = _detection(index, item, profile, image, sw, sh)
        if det is None:
            dropped += 1
        else:
            detections.append(det)

    ids = {d.id for d in detections}
    relations: list[Relation] = []
    seen: set[tuple[str, RelationKind, str]] = set()
    dropped_rel = 0
    raw_rel = answer.get("relations", [])
    for item in raw_rel if isinstance(raw_rel, list) else [raw_rel]:
        rel = _relation(item, ids)
        if rel is None or (key := (rel.subject_id, rel.relation, rel.object_id)) in seen:
            dropped_rel += 1  # invalid, or a duplicate
        else:
            seen.add(key)
            relations.append(rel)

    summary = _clean(answer.get("summary"), MAX_TEXT_CHARS)
    action = _action(answer.get("action"))
    if raw_objects and not detections and not summary and action is None:
        raise ParseError(f"none of the {len(raw_objects)} objects is valid", text)
    return ParsedAnswer(
        detections=tuple(detections),
        relations=tuple(relations),
        summary=summary,
        action=action,
        dropped_objects=dropped,
        dropped_relations=dropped_rel,
    )


def _detection(
    index: int,
    item: object,
    profile: ModelProfile,
    image: PreparedImage,
    sw: float,
    sh: float,
) -> Detection | None:
    if not isinstance(item, dict):
        return None
    label = _label(item.get("label", item.get("name")))
    if not label:
        return None
    raw_box = item.get(profile.box_key)
    if raw_box is None:
        raw_box = next((item[k] for k in _BOX_KEYS if k in item), None)
    sent = box_to_sent(raw_box, profile.box_convention, image.width, image.height)
    if sent is None:
        return None
    box = _to_source(sent, image.transform, sw, sh)
    if box is None:
        return None
    score = _number(item.get("score", item.get("confidence")))
    return Detection(
        id=str(index),
        label=label,
        box=box,
        score=math.nan if score is None else min(max(score, 0.0), 1.0),
        description=_clean(item.get("description"), MAX_TEXT_CHARS),
    )


def _relation(item: object, ids: set[str]) -> Relation | None:
    if not isinstance(item, dict):
        return None
    kind = _relation_kind(item.get("relation"))
    s, o = _index(item.get("subject")), _index(item.get("object"))
    if kind is None or s is None or o is None or s == o:
        return None
    if str(s) not in ids or str(o) not in ids:
        return None
    return Relation(str(s), kind, str(o), RelationSource.MODEL)
