import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from step_perception.core.commands import COMMAND_RE, RejectReason, decide_command
from step_perception.core.parsing import ProposedAction
from step_perception.core.types import Box2D, Detection, Point3

ALLOWED = ("pick", "place", "move_to", "look_at", "stop")
CUBE = Detection("0", "red cube", Box2D(0, 0, 10, 10), position=Point3(0.1234, -0.05, 0.98765))
MUG = Detection("2", "blue mug", Box2D(20, 0, 30, 10))
MUG2 = Detection("3", "blue mug", Box2D(40, 0, 50, 10))
DETS = (CUBE, MUG, MUG2)


def test_accepted_command_with_position_matches_the_grammar():
    d = decide_command(ProposedAction("pick", "0"), DETS, ALLOWED, "camera_optical")
    assert d.reason is None and d.command is not None
    text = d.command.text()
    assert text == 'pick target="red cube" id=0 x=0.123 y=-0.050 z=0.988 frame=camera_optical'
    m = COMMAND_RE.fullmatch(text)
    assert m is not None and m["action"] == "pick" and m["z"] == "0.988"


def test_accepted_command_without_position_by_unique_label():
    d = decide_command(
        ProposedAction("look_at", "Red  Cube"),
        (MUG, CUBE.__class__(**{**CUBE.__dict__, "position": None})),
        ALLOWED,
        "cam",
    )
    assert d.command is not None
    assert d.command.text() == 'look_at target="red cube" id=0'


@pytest.mark.parametrize(
    ("proposal", "reason"),
    [
        (None, RejectReason.NO_ACTION),
        (ProposedAction("self_destruct", "0"), RejectReason.NOT_ALLOWED),
        (ProposedAction("pick; rm -rf /", "0"), RejectReason.NOT_ALLOWED),
        (ProposedAction("pick", None), RejectReason.NO_TARGET),
        (ProposedAction("pick", "9"), RejectReason.UNKNOWN_TARGET),
        (ProposedAction("pick", "green ball"), RejectReason.UNKNOWN_TARGET),
        (ProposedAction("place", "blue mug"), RejectReason.AMBIGUOUS_TARGET),
    ],
)
def test_rejections_have_reasons(proposal, reason):
    d = decide_command(proposal, DETS, ALLOWED, "cam")
    assert d.command is None and d.reason is reason and len(d.detail) < 200
    assert str(d.reason) == reason.value  # the stable code diagnostics count by


def test_allow_list_is_respected_and_empty_list_refuses_all():
    assert decide_command(ProposedAction("stop", "0"), DETS, ("pick",), "cam").reason == (
        RejectReason.NOT_ALLOWED
    )
    assert decide_command(ProposedAction("pick", "0"), DETS, (), "cam").command is None
    # An allow-list given as one string is never a substring test.
    for name in ("ick", "pick", "k, p"):
        assert decide_command(ProposedAction(name, "0"), DETS, "pick, place", "cam").reason == (
            RejectReason.NOT_ALLOWED
        )


def test_non_finite_position_or_bad_frame_or_label_is_refused():
    nan = Detection("0", "red cube", Box2D(0, 0, 1, 1), position=Point3(math.nan, 0, 1))
    assert decide_command(ProposedAction("pick", "0"), (nan,), ALLOWED, "cam").reason == (
        RejectReason.BAD_POSITION
    )
    assert (
        decide_command(ProposedAction("pick", "0"), DETS, ALLOWED, "").reason
        == RejectReason.GRAMMAR
    )
    assert (
        decide_command(ProposedAction("pick", "0"), DETS, ALLOWED, "a b").reason
        == RejectReason.GRAMMAR
    )
    odd = Detection("5", "cube\nstop target", Box2D(0, 0, 1, 1))
    assert (
        decide_command(ProposedAction("pick", "5"), (odd,), ALLOWED, "cam").reason
        == RejectReason.GRAMMAR
    )


@settings(max_examples=300, deadline=None)
@given(
    name=st.text(max_size=12),
    target=st.one_of(st.none(), st.text(max_size=12)),
    label=st.text(min_size=1, max_size=20),
    frame=st.text(max_size=12),
    pos=st.one_of(st.none(), st.tuples(*[st.floats(allow_nan=True, allow_infinity=True)] * 3)),
)
def test_anything_accepted_is_one_grammatical_line(name, target, label, frame, pos):
    dets = (
        Detection("0", label, Box2D(0, 0, 1, 1), position=None if pos is None else Point3(*pos)),
    )
    d = decide_command(ProposedAction(name, target), dets, ALLOWED, frame)
    if d.command is None:
        assert d.reason
    else:
        text = d.command.text()
        assert COMMAND_RE.fullmatch(text) and "\n" not in text
        assert d.command.action in ALLOWED


@pytest.mark.parametrize(
    "name",
    ["PIC\u212a", "P\u0130CK", "p\u0456ck", "\uff50\uff49\uff43\uff4b", "pick\u0301", "st\u043ep"],
)
def test_look_alike_actions_are_never_allowed(name):
    # Unicode lowercasing maps the Kelvin sign to "k": only ASCII names are case-folded.
    d = decide_command(ProposedAction(name, "0"), DETS, ALLOWED, "cam")
    assert d.command is None and d.reason is RejectReason.NOT_ALLOWED
    assert d.detail.isascii()
