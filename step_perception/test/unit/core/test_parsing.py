import contextlib
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from step_perception.core.errors import SNIPPET_CHARS, ParseError
from step_perception.core.parsing import extract_json, parse_answer
from step_perception.core.profiles import get_profile
from step_perception.core.types import ImageTransform, PreparedImage, RelationKind, RelationSource

STEP = get_profile("step3p7")
QWEN25 = get_profile("qwen2_5_vl")
GEMINI = get_profile("gemini")


def sent_image(sw=1920, sh=1080, w=728, h=410):
    return PreparedImage(
        data=b"x",
        mime="image/jpeg",
        width=w,
        height=h,
        transform=ImageTransform(sw / w, sh / h),
        source_width=sw,
        source_height=sh,
    )


IMG = sent_image()
OBJ = {
    "objects": [
        {"label": "red cube", "bbox_2d": [100, 200, 300, 400], "score": 0.9},
        {"label": "blue mug", "bbox_2d": [500, 500, 700, 900], "description": "a mug"},
    ],
    "relations": [{"subject": 0, "relation": "left_of", "object": 1}],
    "summary": "Two things.",
    "action": {"name": "pick", "target": 0},
}


def test_object_form_norm1000_maps_to_source_pixels():
    a = parse_answer(json.dumps(OBJ), STEP, IMG)
    d0, d1 = a.detections
    assert (d0.id, d0.label, d0.score) == ("0", "red cube", 0.9)
    assert d0.box.x1 == pytest.approx(192.0) and d0.box.y1 == pytest.approx(216.0)
    assert d0.box.x2 == pytest.approx(576.0) and d0.box.y2 == pytest.approx(432.0)
    assert math.isnan(d1.score) and d1.description == "a mug"
    assert a.relations[0].relation is RelationKind.LEFT_OF
    assert a.relations[0].source is RelationSource.MODEL
    assert a.summary == "Two things." and a.action is not None
    assert (a.action.name, a.action.target) == ("pick", "0")


def test_profile_fixes_the_convention_never_the_numbers():
    text = '[{"label": "cube", "bbox_2d": [100, 50, 200, 150]}]'
    abs_px = parse_answer(text, QWEN25, IMG).detections[0].box
    norm = parse_answer(text, STEP, IMG).detections[0].box
    s = 1920 / 728
    assert abs_px.x1 == pytest.approx(100 * s) and abs_px.x2 == pytest.approx(200 * s)
    assert norm.x1 == pytest.approx(192.0) and norm.x2 == pytest.approx(384.0)


def test_gemini_box_2d_is_yxyx():
    text = '[{"label": "cube", "box_2d": [100, 200, 300, 400]}]'
    b = parse_answer(text, GEMINI, IMG).detections[0].box
    assert b.x1 == pytest.approx(384.0) and b.y1 == pytest.approx(108.0)
    assert b.x2 == pytest.approx(768.0) and b.y2 == pytest.approx(324.0)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda j: f"```json\n{j}\n```",
        lambda j: f"<think>The cube is at [1, 2, 3, 4]; maybe {{'x': 1}}.</think>\n{j}",
        lambda j: (
            f'Let me look. First draft: {{"objects": []}} Final answer:\n{j}\nHope this helps!'
        ),
        lambda j: f"reasoning without an opening tag...</think>{j}",
        lambda j: f"Sure! Here you go:\n```\n{j}\n```\nThe red cube is on the left.",
        lambda j: j.replace("]}", "],}").replace('"}', '",}'),  # trailing commas
    ],
)
def test_tolerant_extraction(wrap):
    a = parse_answer(wrap(json.dumps(OBJ)), STEP, IMG)
    assert [d.label for d in a.detections] == ["red cube", "blue mug"]


def test_single_bare_object_and_empty_list():
    a = parse_answer('{"label": "ball", "bbox_2d": [0, 0, 500, 500]}', STEP, IMG)
    (ball,) = a.detections
    assert ball.label == "ball"
    assert (ball.box.x1, ball.box.y1) == (0.0, 0.0)
    assert ball.box.x2 == pytest.approx(960.0) and ball.box.y2 == pytest.approx(540.0)
    assert parse_answer("[]", STEP, IMG).detections == ()
    empty = parse_answer('{"objects": [], "summary": "empty table"}', STEP, IMG)
    assert empty.detections == () and empty.summary == "empty table"


def test_validation_drops_bad_objects_and_clamps():
    objs = [
        {"label": "ok", "bbox_2d": [-50, -50, 1200, 2000], "score": 7},  # clamped
        {"label": "nan", "bbox_2d": [float("nan"), 0, 10, 10]},
        {"label": "str", "bbox_2d": ["1", 0, 10, 10]},
        {"label": "bool", "bbox_2d": [True, 0, 10, 10]},
        {"label": "three", "bbox_2d": [1, 2, 3]},
        {"label": "flat", "bbox_2d": [10, 10, 10, 500]},
        {"label": "", "bbox_2d": [10, 10, 100, 100]},
        {"bbox_2d": [10, 10, 100, 100]},
        "not an object",
        {"label": "reversed", "bbox_2d": [300, 400, 100, 200]},
        {"label": 'say "hi"\\', "bbox_2d": [[10, 10, 100, 100]]},
    ]
    text = json.dumps({"objects": objs}).replace("NaN", "NaN")
    a = parse_answer(text, STEP, IMG)
    assert [d.label for d in a.detections] == ["ok", "reversed", "say hi"]
    ok = a.detections[0]
    assert (ok.box.x1, ok.box.y1, ok.box.x2, ok.box.y2) == (0.0, 0.0, 1920.0, 1080.0)
    assert ok.score == 1.0
    rev = a.detections[1].box
    assert rev.x1 < rev.x2 and rev.y1 < rev.y2
    assert [d.id for d in a.detections] == ["0", "9", "10"]  # ids are the model's indices
    assert a.dropped_objects == 8


def test_object_cap_and_relation_validation():
    objs = [{"label": f"o{i}", "bbox_2d": [i, i, i + 50, i + 50]} for i in range(10)]
    rels = [
        {"subject": 0, "relation": "left of", "object": 1},  # normalised name
        {"subject": 0, "relation": "teleports_to", "object": 1},  # unknown
        {"subject": 0, "relation": "near", "object": 9},  # 9 is over the cap
        {"subject": 2, "relation": "near", "object": 2},  # self
        {"subject": "1", "relation": "ABOVE", "object": 2},
        {"subject": 0, "relation": "left_of", "object": 1},  # duplicate
        "junk",
    ]
    a = parse_answer(json.dumps({"objects": objs, "relations": rels}), STEP, IMG, max_objects=3)
    assert len(a.detections) == 3 and a.dropped_objects == 7
    assert [(r.subject_id, r.relation.value, r.object_id) for r in a.relations] == [
        ("0", "left_of", "1"),
        ("1", "above", "2"),
    ]
    assert a.dropped_relations == 5


@pytest.mark.parametrize(
    "action, expected",
    [
        ({"name": " PICK ", "target": "1"}, ("pick", "1")),
        ({"name": "place", "target": "red cube"}, ("place", "red cube")),
        ({"name": "stop"}, ("stop", None)),
        ("look_at", ("look_at", None)),
        (None, None),
        ({"target": 0}, None),
        (42, None),
    ],
)
def test_action_shapes(action, expected):
    a = parse_answer(json.dumps({"objects": OBJ["objects"], "action": action}), STEP, IMG)
    got = None if a.action is None else (a.action.name, a.action.target)
    assert got == expected


@pytest.mark.parametrize(
    "text",
    [
        "I cannot see anything useful.",
        "",
        '{"foo": 1}',
        "[1, 2, 3]",
        '[{"label": "x", "bbox_2d": [1, 1, 1, 1]}]',
        "```json\n{broken\n```",
        "[" * 5000,
    ],
)
def test_parse_errors_are_typed_with_bounded_snippet(text):
    with pytest.raises(ParseError) as exc:
        parse_answer(text + "x" * 1000, STEP, IMG)
    assert len(exc.value.snippet) <= SNIPPET_CHARS


def test_last_qualifying_json_wins():
    text = '{"objects": [{"label": "draft", "bbox_2d": [0,0,9,9]}]} ... {"objects": []}'
    assert extract_json(text) == {"objects": []}


def test_stray_list_of_other_dicts_in_trailing_prose_does_not_win():
    text = json.dumps(OBJ) + '\nNotes: [{"step": 1}, {"step": 2}]'
    assert [d.label for d in parse_answer(text, STEP, IMG).detections] == ["red cube", "blue mug"]


def test_reasoning_tags_in_any_case_are_ignored():
    # Were the block not stripped, its (later) JSON would win as the last answer.
    text = json.dumps(OBJ) + '<THINK>or maybe {"objects": []}</Think>'
    assert [d.label for d in parse_answer(text, STEP, IMG).detections] == ["red cube", "blue mug"]


# -- property tests -------------------------------------------------------------------------

_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**12), 10**12),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
_json = st.recursive(
    _json_leaf,
    lambda c: st.lists(c, max_size=5) | st.dictionaries(st.text(max_size=8), c, max_size=5),
    max_leaves=30,
)
_num = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**6), 10**6),
    st.text(max_size=3),
    st.booleans(),
)
_obj = st.fixed_dictionaries(
    {
        "label": st.one_of(st.text(max_size=20), st.integers()),
        "bbox_2d": st.one_of(st.lists(_num, min_size=0, max_size=6), _json),
    },
    optional={"score": _num, "description": _json},
)
_answer = st.one_of(
    st.lists(_obj, max_size=8),
    st.fixed_dictionaries(
        {"objects": st.one_of(st.lists(_obj, max_size=8), _json)},
        optional={
            "relations": st.lists(
                st.fixed_dictionaries(
                    {
                        "subject": st.one_of(st.integers(-2, 9), _json_leaf),
                        "relation": st.one_of(
                            st.sampled_from([k.value for k in RelationKind]), st.text(max_size=9)
                        ),
                        "object": st.one_of(st.integers(-2, 9), _json_leaf),
                    }
                ),
                max_size=6,
            ),
            "summary": _json,
            "action": _json,
        },
    ),
    _json,
)
_images = st.builds(
    sent_image,
    sw=st.integers(1, 5000),
    sh=st.integers(1, 5000),
    w=st.integers(1, 1000),
    h=st.integers(1, 1000),
)
_profiles = st.sampled_from([get_profile(n) for n in ("step3p7", "qwen2_5_vl", "gemini")])


def _check_inside(answer, img):
    ids = {d.id for d in answer.detections}
    for d in answer.detections:
        b = d.box
        for v in (b.x1, b.y1, b.x2, b.y2):
            assert math.isfinite(v)
        assert 0 <= b.x1 < b.x2 <= img.source_width
        assert 0 <= b.y1 < b.y2 <= img.source_height
        assert math.isnan(d.score) or 0.0 <= d.score <= 1.0
        assert '"' not in d.label and "\n" not in d.label
    for r in answer.relations:
        assert r.subject_id in ids and r.object_id in ids and r.subject_id != r.object_id


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(answer=_answer, img=_images, profile=_profiles, prefix=st.text(max_size=40))
def test_parser_never_crashes_and_never_leaves_the_image(answer, img, profile, prefix):
    text = prefix + json.dumps(answer, allow_nan=True)
    try:
        parsed = parse_answer(text, profile, img, max_objects=5)
    except ParseError as err:
        assert len(err.snippet) <= SNIPPET_CHARS
        return
    assert len(parsed.detections) <= 5
    _check_inside(parsed, img)


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=300), img=_images, profile=_profiles)
def test_parser_on_arbitrary_text(text, img, profile):
    with contextlib.suppress(ParseError):
        _check_inside(parse_answer(text, profile, img), img)


@settings(max_examples=300, deadline=None)
@given(
    img=_images,
    fx=st.floats(0.0, 0.9),
    fy=st.floats(0.0, 0.9),
    fw=st.floats(0.05, 1.0),
    fh=st.floats(0.05, 1.0),
)
def test_norm1000_round_trip_through_the_transform(img, fx, fy, fw, fh):
    # A box in source pixels -> as the model would write it (0..1000 of the sent image) -> back.
    sw, sh = img.source_width, img.source_height
    x1, y1 = fx * sw, fy * sh
    x2, y2 = min(sw, x1 + fw * sw), min(sh, y1 + fh * sh)
    # written out, not the transform under test: the sent image is the source resized
    kx, ky = img.width / sw, img.height / sh
    sx1, sy1, sx2, sy2 = x1 * kx, y1 * ky, x2 * kx, y2 * ky
    if sx2 - sx1 < 1.001 or sy2 - sy1 < 1.001:  # 1 px, give or take the float round trip
        return  # degenerate in the sent image: dropping it is correct
    norm = [
        sx1 / img.width * 1000,
        sy1 / img.height * 1000,
        sx2 / img.width * 1000,
        sy2 / img.height * 1000,
    ]
    text = json.dumps([{"label": "thing", "bbox_2d": norm}])
    (d,) = parse_answer(text, STEP, img).detections
    for got, want, size in (
        (d.box.x1, x1, sw),
        (d.box.y1, y1, sh),
        (d.box.x2, x2, sw),
        (d.box.y2, y2, sh),
    ):
        assert got == pytest.approx(want, abs=1e-6 * size + 1e-6)


def test_answer_wrapped_in_another_object_is_found():
    text = json.dumps({"result": {"answer": OBJ}})
    assert [d.label for d in parse_answer(text, STEP, IMG).detections] == ["red cube", "blue mug"]


def test_long_reasoning_with_many_brackets_before_the_answer():
    reasoning = "Looking at [region 1] and [x, y] candidates {maybe}. " * 2000
    a = parse_answer(reasoning + json.dumps(OBJ), STEP, IMG)
    assert [d.label for d in a.detections] == ["red cube", "blue mug"]
    assert a.detections[0].box.x1 == pytest.approx(192.0)  # 100/1000 of 1920


def test_invisible_and_control_characters_never_reach_labels_or_actions():
    objs = [
        {"label": "red\u202e cube\u200b", "bbox_2d": [0, 0, 500, 500]},
        {"label": "\ud800blue\x85mug\u2028", "bbox_2d": [500, 500, 900, 900]},
    ]
    answer = {"objects": objs, "summary": "a\u00adb\ufeff", "action": {"name": "PIC\u212a"}}
    a = parse_answer(json.dumps(answer), STEP, IMG)  # json.dumps escapes them as \\uXXXX
    assert [d.label for d in a.detections] == ["red cube", "blue mug"]
    assert a.summary == "ab"
    assert a.action is not None and a.action.name == "PIC\u212a"  # kept as written, not "pick"
