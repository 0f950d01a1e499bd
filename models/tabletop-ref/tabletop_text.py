"""Vocabulary, tokenizer and the deterministic *text head* of the tabletop reference model.

The detector (``modeling_tabletop.py``) finds objects; this module turns its detections and the
prompt into the JSON answer of the step_perception wire contract:

* the prompt's machine-readable lines ``Task:``, ``Request:`` and ``Allowed actions:`` select the
  task, the named objects (colour / shape words) and the action;
* ``detect`` -> all objects (or those the request names), ``locate`` -> the named object(s),
  ``describe`` -> objects + relations computed from the boxes + a one-sentence summary,
  ``command`` -> objects + ``{"name": <first allowed action the request mentions, else the first
  allowed>, "target": <index of the named object>}`` (``null`` when nothing named is seen).

The tokenizer is lossless for ASCII text: whole JSON fragments, labels, numbers 0..1000 (alone and
followed by ", "), scores and common words are single tokens, every other character is a token of
its own.  A typical 4-object answer is ~40 tokens.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any

SHAPES = ("cube", "ball", "cylinder", "cone", "mug")
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white")
LABELS = tuple(f"{c} {s}" for c in COLOURS for s in SHAPES)
RELATIONS = (
    "left_of",
    "right_of",
    "above",
    "below",
    "in_front_of",
    "behind",
    "near",
    "on_top_of",
    "inside",
)

SPECIAL_TOKENS = (
    "<pad>",
    "<eos>",
    "<unk>",
    "<image>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
)
PAD, EOS, UNK, IMAGE, SYSTEM, USER, ASSISTANT, END = SPECIAL_TOKENS

_SHAPE_WORDS = {
    "cube": "cube", "cubes": "cube", "block": "cube", "blocks": "cube",
    "box": "cube", "boxes": "cube",
    "ball": "ball", "balls": "ball", "sphere": "ball", "spheres": "ball",
    "cylinder": "cylinder", "cylinders": "cylinder", "can": "cylinder", "cans": "cylinder",
    "cone": "cone", "cones": "cone",
    "mug": "mug", "mugs": "mug", "cup": "mug", "cups": "mug",
}  # fmt: skip
_COLOUR_WORDS = {c: c for c in COLOURS} | {"violet": "purple", "grey": "white", "gray": "white"}

_WORDS = (
    "Task: ", "Request: ", "Allowed actions: ", "detect", "locate", "describe", "command",
    "the ", "a ", "an ", "and ", "of ", "on ", "to ", "in ", "is ", "with ", "object", "objects",
    "table", "image", "The ", "A ", "JSON", "label", "score", "summary", "action", "target",
    "relations", "description", "bbox_2d", "pick", "place", "push", "point", "grasp", "give",
    "No ", "no ", "one ", "two ", "three ", "four ", "five ", "six ", "seven ", "eight ",
    "There ", "there ", "are ", "visible", "left", "right", "front", "behind", "near", " ",
    *(w for w in _SHAPE_WORDS), *(c for c in _COLOUR_WORDS),
)  # fmt: skip


@lru_cache(maxsize=1)
def vocabulary() -> tuple[str, ...]:
    """Every token string, in id order (ids are positions)."""
    toks: list[str] = list(SPECIAL_TOKENS)
    seen = set(toks)

    def add(t: str) -> None:
        if t not in seen:
            seen.add(t)
            toks.append(t)

    for c in range(32, 127):
        add(chr(c))
    for c in "\n\t’‘“”–—…°×éèàüöäß":
        add(c)
    add('{"objects": [')
    for lab in LABELS:
        add('{"label": "' + lab + '", "bbox_2d": [')
    for n in range(1001):
        add(str(n))
        add(f"{n}, ")
    for s in range(101):
        add(f'], "score": {s / 100:.2f}, "description": ""}}')
    for r in RELATIONS:
        add(f'"relation": "{r}", "object": ')
    for t in (
        ", ", "]", "}", '{"subject": ', ', "relations": [', ', "summary": "', '"}',
        ', "action": {"name": "', '", "target": ', ', "action": null}', "}}", '"',
        *_WORDS, *(f"{w} " for w in _WORDS if not w.endswith(" ")), *LABELS,
    ):  # fmt: skip
        add(t)
    return tuple(toks)


def split_pattern() -> str:
    """Regex (Oniguruma) that cuts text into vocabulary pieces: longest known piece first."""
    multi = sorted(
        (t for t in vocabulary()[len(SPECIAL_TOKENS) :] if len(t) > 1), key=len, reverse=True
    )
    return "|".join(re.escape(t) for t in multi) + r"|[\s\S]"


@lru_cache(maxsize=1)
def build_tokenizer() -> Any:
    """Build the ``tokenizers.Tokenizer``: WordLevel over regex pieces, decoded by concatenation."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(vocabulary())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(split_pattern()), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def encode(text: str) -> list[int]:
    """Token ids of ``text`` (no special tokens added)."""
    return list(build_tokenizer().encode(text, add_special_tokens=False).ids)


def decode(ids: list[int], skip_special: bool = False) -> str:
    """Text of token ids (inverse of :func:`encode` for ASCII text)."""
    voc = vocabulary()
    n_special = len(SPECIAL_TOKENS)
    return "".join(
        voc[i] for i in ids if 0 <= i < len(voc) and not (skip_special and i < n_special)
    )


# ------------------------------------------------------------------------------------------------
# prompt understanding
# ------------------------------------------------------------------------------------------------

_LINE_RE = {
    "task": re.compile(r"Task:[ \t]*([A-Za-z_]+)"),
    "request": re.compile(r"Request:[ \t]*([^\n]*)"),
    "actions": re.compile(r"Allowed actions:[ \t]*([^\n]*)"),
}
_TASKS = ("detect", "locate", "describe", "command")


def parse_prompt(prompt: str) -> tuple[str, str, list[str]]:
    """(task, request, allowed actions) from the wire-contract lines (last occurrence wins)."""
    found: dict[str, str] = {}
    for key, rx in _LINE_RE.items():
        hits = rx.findall(prompt)
        if hits:
            found[key] = hits[-1].strip()
    task = found.get("task", "detect").lower()
    if task not in _TASKS:
        task = "detect"
    actions = [a.strip() for a in found.get("actions", "").split(",") if a.strip()]
    return task, found.get("request", ""), actions


def named_targets(request: str) -> list[tuple[str | None, str | None]]:
    """(colour, shape) pairs the request names; None = any.  Empty list = nothing named."""
    words = re.findall(r"[a-z]+", request.lower())
    out: list[tuple[str | None, str | None]] = []
    pending: list[str] = []
    for w in words:
        if w in _COLOUR_WORDS:
            pending.append(_COLOUR_WORDS[w])
        elif w in _SHAPE_WORDS:
            shape = _SHAPE_WORDS[w]
            if pending:
                out.extend((c, shape) for c in pending)
            else:
                out.append((None, shape))
            pending = []
    out.extend((c, None) for c in pending)
    return out


def _matches(label: str, targets: list[tuple[str | None, str | None]]) -> bool:
    colour, _, shape = label.partition(" ")
    return any((c is None or c == colour) and (s is None or s == shape) for c, s in targets)


# ------------------------------------------------------------------------------------------------
# answer writing
# ------------------------------------------------------------------------------------------------

Detection = tuple[str, float, tuple[int, int, int, int]]  # label, score, xyxy 0..1000


def relations(dets: list[Detection], max_relations: int = 15) -> list[tuple[int, str, int]]:
    """Image-space relations between detections (subject index, relation, object index).

    One directional relation per pair: ``left_of`` / ``right_of`` when the pair is side by side,
    else ``in_front_of`` / ``behind`` by the boxes' bottom edges (lower in the image is nearer on
    a table seen from above); plus ``near`` for pairs closer than their mean size.
    """
    out: list[tuple[int, str, int]] = []
    for i in range(len(dets)):
        for j in range(i + 1, len(dets)):
            (_, _, a), (_, _, b) = dets[i], dets[j]
            acx, bcx = (a[0] + a[2]) / 2, (b[0] + b[2]) / 2
            acy, bcy = (a[1] + a[3]) / 2, (b[1] + b[3]) / 2
            dx, dy = bcx - acx, (b[3] - a[3])
            if abs(dx) >= abs(dy):
                out.append((i, "left_of" if dx > 0 else "right_of", j))
            else:
                out.append((i, "behind" if dy > 0 else "in_front_of", j))
            size = (a[2] - a[0] + a[3] - a[1] + b[2] - b[0] + b[3] - b[1]) / 4
            if ((bcx - acx) ** 2 + (bcy - acy) ** 2) ** 0.5 < 1.5 * size:
                out.append((i, "near", j))
    return out[:max_relations]


def _article(label: str) -> str:
    return ("an " if label[0] in "aeiou" else "a ") + label


def summary(dets: list[Detection]) -> str:
    """One sentence naming what is on the table."""
    if not dets:
        return "No objects are visible on the table."
    names = [_article(d[0]) for d in dets]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed[0].upper()}{listed[1:]} on the table."


def answer(prompt: str, dets: list[Detection]) -> str:
    """Write the JSON answer (compact, one line) for ``prompt`` over ``dets`` (best first)."""
    task, request, actions = parse_prompt(prompt)
    targets = named_targets(request)
    if task in ("detect", "locate") and targets:
        objs = [d for d in dets if _matches(d[0], targets)]
    else:
        objs = list(dets)
    parts = ['{"objects": [']
    parts.append(
        ", ".join(
            '{"label": "' + lab + '", "bbox_2d": [' + ", ".join(str(v) for v in box)
            + f'], "score": {min(max(score, 0.0), 1.0):.2f}, "description": ""}}'
            for lab, score, box in objs
        )
    )  # fmt: skip
    parts.append("]")
    if task == "describe":
        rels = relations(objs)
        parts.append(', "relations": [')
        parts.append(
            ", ".join(f'{{"subject": {s}, "relation": "{r}", "object": {o}}}' for s, r, o in rels)
        )
        parts.append("]")
        parts.append(', "summary": "' + summary(objs) + '"')
    if task == "command":
        idx = next((k for k, d in enumerate(objs) if _matches(d[0], targets)), None)
        if not targets and objs:
            idx = 0  # nothing named: the most confident object
        low = request.lower()
        name = next((a for a in actions if a.lower() in low), actions[0] if actions else None)
        if idx is None or name is None:
            parts.append(', "summary": "' + _no_target(targets) + '"')
            parts.append(', "action": null}')
            return "".join(parts)
        parts.append(', "summary": "' + f"{name} the {objs[idx][0]}." + '"')
        quoted = json.dumps(name)[1:-1]
        parts.append(', "action": {"name": "' + quoted + '", "target": ' + f"{idx}}}}}")
        return "".join(parts)
    parts.append("}")
    return "".join(parts)


def _no_target(targets: list[tuple[str | None, str | None]]) -> str:
    if not targets:
        return "No objects are visible on the table."
    c, s = targets[0]
    what = " ".join(x for x in (c, s or "object") if x)
    return f"No {what} is visible."
