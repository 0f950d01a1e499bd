"""Adversarial model answers for fuzzing ``parse_answer`` and the command path (issue 13, item 5).

Each strategy draws the text a hostile or broken model server could send as the answer:
near-valid JSON (one edit away from a real answer), huge numbers, ``NaN``/``Infinity``
literals, deep nesting, megabyte strings, Unicode confusables and invisible characters in
labels and actions, duplicate keys, and boxes meant for another image size. ``answers`` is
their union. ``check_parsed`` and ``check_decision`` state what may come out: nothing
invalid, nothing off the image, nothing outside the allow-list.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from hypothesis import strategies as st
from step_perception.core.commands import COMMAND_RE, CommandDecision
from step_perception.core.parsing import MAX_LABEL_CHARS, MAX_TEXT_CHARS, ParsedAnswer
from step_perception.core.types import PreparedImage, RelationKind, RelationSource

ALLOWED = ("pick", "place", "move_to", "look_at", "stop")

#: Look-alikes and invisible characters of the allow-listed words and of common labels.
CONFUSABLES = (
    "p\u0456ck",  # Cyrillic i
    "\u0440ick",  # Cyrillic er
    "\uff50\uff49\uff43\uff4b",  # fullwidth
    "PIC\u212a",  # Kelvin sign: lowercases to "k"
    "P\u0130CK",  # dotted capital I: lowercases to two code points
    "pick\u200b",  # zero-width space
    "pi\u00adck",  # soft hyphen
    "\u202epick",  # right-to-left override
    "pick\u0301",  # combining accent
    "st\u043ep",  # Cyrillic o
    "move\u2010to",  # hyphen lookalike
    "move_to\ufeff",  # BOM
    "look\u2028at",  # line separator
    "\ud800pick",  # lone surrogate (valid JSON escape, invalid UTF-8)
    "red cub\u0435",  # Cyrillic e in a label
    "red\u00a0cube",  # no-break space
    "red\x85cube",  # NEL
    "\U000e0070\U000e0069ck",  # tag characters
)

_words = st.sampled_from([*ALLOWED, "red cube", "blue mug", "0", "1", "self_destruct"])
_label = st.one_of(_words, st.sampled_from(CONFUSABLES), st.text(max_size=24))

_finite = st.floats(-2000, 3000, allow_nan=False)
_box = st.lists(st.one_of(_finite, st.integers(-5000, 5000)), min_size=4, max_size=4)


@st.composite
def valid_answers(draw: st.DrawFn) -> dict[str, Any]:
    """A well-formed answer in the wire contract's object form (boxes maybe off the image)."""
    objects = draw(
        st.lists(
            st.fixed_dictionaries(
                {"label": _label, "bbox_2d": _box},
                optional={"score": st.floats(-1, 2), "description": st.text(max_size=30)},
            ),
            max_size=6,
        )
    )
    n = max(1, len(objects))
    relations = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "subject": st.integers(-1, n),
                    "relation": st.sampled_from([k.value for k in RelationKind] + ["eats"]),
                    "object": st.integers(-1, n),
                }
            ),
            max_size=4,
        )
    )
    action = draw(
        st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {"name": _label, "target": st.one_of(st.integers(-1, n), _label, st.none())}
            ),
            _label,
        )
    )
    return {"objects": objects, "relations": relations, "summary": draw(_label), "action": action}


def _dump(value: object) -> str:
    return json.dumps(value, allow_nan=True, ensure_ascii=False)


_EDIT_CHARS = st.sampled_from([*"{}[],:\"\\'0-.eE \n", "NaN", "Infinity", "//", "```"])


@st.composite
def near_valid(draw: st.DrawFn) -> str:
    """A real answer with one to three edits: deleted, inserted or doubled characters, cuts."""
    text = _dump(draw(valid_answers()))
    for _ in range(draw(st.integers(1, 3))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["delete", "insert", "double", "cut", "quote", "comma"]))
        if op == "delete":
            text = text[:i] + text[i + 1 :]
        elif op == "insert":
            text = text[:i] + draw(_EDIT_CHARS) + text[i:]
        elif op == "double":
            j = draw(st.integers(i, min(len(text), i + 40)))
            text = text[:j] + text[i:j] + text[j:]
        elif op == "cut":
            text = text[:i]
        elif op == "quote":
            text = text.replace('"', "'", draw(st.integers(1, 4)))
        else:
            text = text.replace("]", ",]").replace("}", ",}")
    return text


_HUGE = st.sampled_from(
    [
        "1" * 5000,
        "-" + "9" * 4400,
        "1e999",
        "-1e400",
        "1" + "0" * 400 + ".5",
        "4.9e-324",
        "1.7976931348623157e308",
        "123456789012345678901234567890",
        "0." + "0" * 3000 + "1",
        "1E+9999999999",
    ]
)
_LITERALS = st.sampled_from(["NaN", "Infinity", "-Infinity", "-NaN", "infinity", "nan", "1e309"])


@st.composite
def numbers_answers(draw: st.DrawFn) -> str:
    """Boxes and scores of huge numbers and NaN/Infinity literals, written as raw JSON."""
    nums = [draw(st.one_of(_HUGE, _LITERALS, _finite.map(repr))) for _ in range(5)]
    label = _dump(draw(_label))
    return (
        f'{{"objects": [{{"label": {label}, "bbox_2d": [{nums[0]}, {nums[1]}, {nums[2]}, '
        f'{nums[3]}], "score": {nums[4]}}}], "action": {{"name": "pick", "target": {nums[0]}}}}}'
    )


@st.composite
def deep_answers(draw: st.DrawFn) -> str:
    """Nesting from a few levels to far past the decoder's recursion limit."""
    depth = draw(st.one_of(st.integers(1, 50), st.integers(900, 1100), st.integers(5000, 60000)))
    opener, closer = draw(st.sampled_from([("[", "]"), ('{"a":', "}"), ('{"objects":', "}")]))
    inner = _dump(draw(valid_answers()))
    closed = draw(st.booleans())
    return opener * depth + inner + (closer * depth if closed else "")


@st.composite
def huge_strings(draw: st.DrawFn) -> str:
    """Megabyte labels, summaries, prose, reasoning or whole answers."""
    size = draw(st.sampled_from([70_000, 300_000, 1_000_000, 2_000_000]))
    filler = draw(st.sampled_from(["x", "[", "{", "<think>", "</think>", '"', "\\", " ", "é"]))
    big = (filler * (size // len(filler) + 1))[:size]
    answer = draw(valid_answers())
    where = draw(st.sampled_from(["label", "summary", "before", "after", "think", "alone"]))
    if where == "label" and answer["objects"]:
        answer["objects"][0]["label"] = big
    elif where == "summary":
        answer["summary"] = big
    text = _dump(answer)
    if where == "before":
        return big + text
    if where == "after":
        return text + big
    if where == "think":
        return "<think>" + big + "</think>" + text
    if where == "alone":
        return big
    return text


@st.composite
def duplicate_keys(draw: st.DrawFn) -> str:
    """The same key twice (the decoder keeps the last): objects, labels, actions, boxes."""
    first, second = draw(valid_answers()), draw(valid_answers())
    a, b = _dump(first), _dump(second)
    label1, label2 = _dump(draw(_label)), _dump(draw(_label))
    return draw(
        st.sampled_from(
            [
                f'{{"objects": {_dump(first["objects"])}, '
                f'"objects": {_dump(second["objects"])}, "action": {_dump(first["action"])}}}',
                f'{{"objects": [{{"label": {label1}, "label": {label2}, '
                f'"bbox_2d": [1, 2, 300, 400], "bbox_2d": [5, 5, 5, 5]}}], '
                f'"action": {{"name": "pick", "name": {label2}, "target": 0, "target": 7}}}}',
                f'{{"action": "stop", "objects": [], "action": {label1}}}',
                a[:-1] + ", " + b[1:],
            ]
        )
    )


@st.composite
def wrapped(draw: st.DrawFn) -> str:
    """Any of the above inside fences, reasoning, prose or another object."""
    inner = draw(
        st.one_of(near_valid(), numbers_answers(), duplicate_keys(), valid_answers().map(_dump))
    )
    return draw(
        st.sampled_from(
            [
                f"```json\n{inner}\n```",
                f"<think>maybe [1, 2] or {{'x': 1}}</think>{inner}",
                f"Sure!\n{inner}\nHope that helps",
                f'{{"result": {inner}}}',
                f"{inner}<think>{inner}",
                f"{inner}</think>{inner}",
                "<THINK>" * 3 + inner,
            ]
        )
    )


#: Every kind of hostile answer.
answers = st.one_of(
    near_valid(),
    numbers_answers(),
    deep_answers(),
    huge_strings(),
    duplicate_keys(),
    wrapped(),
    valid_answers().map(_dump),
    st.text(max_size=200),
)

#: Images as sent next to their source size (another size than the boxes were written for).
images = st.builds(
    lambda sw, sh, w, h: PreparedImage(
        data=b"x",
        mime="image/jpeg",
        width=w,
        height=h,
        transform=_transform(sw / w, sh / h),
        source_width=sw,
        source_height=sh,
    ),
    sw=st.sampled_from([1, 64, 640, 1280, 1920, 3840, 8192]),
    sh=st.sampled_from([1, 48, 480, 720, 1080, 2160, 8192]),
    w=st.sampled_from([1, 16, 320, 728, 1000]),
    h=st.sampled_from([1, 16, 240, 410, 1000]),
)


def _transform(sx: float, sy: float) -> Any:
    from step_perception.core.types import ImageTransform

    return ImageTransform(sx, sy)


# -- what may come out ------------------------------------------------------------------------

#: Characters no published text may hold: C0/C1 controls, bidi and other format characters,
#: zero-width characters, variation selectors, tags, surrogates.
UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u2028-\u202e\u2060-\u206f"
    "\ufe00-\ufe0f\ufeff\ufff9-\ufffb\ud800-\udfff\U000e0000-\U000e0fff]"
)


def _safe_text(text: str, limit: int) -> None:
    assert isinstance(text, str) and len(text) <= limit, (len(text), limit)
    assert not UNSAFE.search(text), ascii(text[:80])
    assert text == text.strip() and "  " not in text, ascii(text[:80])
    text.encode("utf-8")  # publishable as a ROS string


def check_parsed(parsed: ParsedAnswer, image: PreparedImage, max_objects: int) -> None:
    """Everything ``parse_answer`` returned is valid and inside the source image."""
    sw, sh = image.source_width, image.source_height
    assert len(parsed.detections) <= max_objects
    ids = [d.id for d in parsed.detections]
    assert len(set(ids)) == len(ids) and all(i.isdigit() for i in ids), ids
    for d in parsed.detections:
        b = d.box
        assert all(math.isfinite(v) for v in (b.x1, b.y1, b.x2, b.y2)), b
        assert 0.0 <= b.x1 < b.x2 <= sw and 0.0 <= b.y1 < b.y2 <= sh, (b, sw, sh)
        assert math.isnan(d.score) or 0.0 <= d.score <= 1.0, d.score
        assert d.label and '"' not in d.label and "\\" not in d.label
        _safe_text(d.label, MAX_LABEL_CHARS)
        _safe_text(d.description, MAX_TEXT_CHARS)
        assert d.position is None
    seen = set()
    for r in parsed.relations:
        assert r.subject_id in ids and r.object_id in ids and r.subject_id != r.object_id
        assert isinstance(r.relation, RelationKind) and r.source is RelationSource.MODEL
        key = (r.subject_id, r.relation, r.object_id)
        assert key not in seen
        seen.add(key)
    _safe_text(parsed.summary, MAX_TEXT_CHARS)
    if parsed.action is not None:
        _safe_text(parsed.action.name, 64)
        assert parsed.action.name
        if parsed.action.target is not None:
            _safe_text(parsed.action.target, MAX_LABEL_CHARS)


def check_decision(decision: CommandDecision, parsed: ParsedAnswer, frame_id: str) -> None:
    """An accepted command is allow-listed, ASCII, one grammatical line about a detection."""
    if decision.command is None:
        assert decision.reason is not None
        assert len(decision.detail) < 200
        return
    command = decision.command
    assert command.action in ALLOWED
    text = command.text()
    assert text.isascii() and "\n" not in text, ascii(text)
    match = COMMAND_RE.fullmatch(text)
    assert match is not None, ascii(text)
    assert match["action"] == command.action
    targets = [d for d in parsed.detections if d.id == command.target_id]
    assert len(targets) == 1 and targets[0].label == command.target_label
    assert command.frame_id == frame_id
    assert parsed.action is not None and parsed.action.name.lower() == command.action
