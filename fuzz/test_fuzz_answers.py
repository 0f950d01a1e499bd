"""Fuzz the model-answer path: ``strip_reasoning`` -> ``parse_answer`` -> ``decide_command``.

``make test`` runs these with a fast profile (a few hundred answers each). ``make fuzz``
(``STEP_PERCEPTION_FUZZ=1``) runs at least 10,000 generated answers per property and also
asserts the time budget: no answer may cost more than 50 ms of CPU in the path (thread CPU
time, so other jobs on a loaded machine do not count; the wall-clock maximum is reported).
"""

from __future__ import annotations

import gc
import os
import time
from collections.abc import Iterator

import pytest
from answer_strategies import ALLOWED, answers, check_decision, check_parsed, images
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from step_perception.core.commands import decide_command
from step_perception.core.errors import SNIPPET_CHARS, ParseError
from step_perception.core.parsing import parse_answer, strip_reasoning
from step_perception.core.profiles import get_profile
from step_perception.core.types import Point3

FUZZ = os.environ.get("STEP_PERCEPTION_FUZZ") == "1"
EXAMPLES = 10_000 if FUZZ else 100
BUDGET_S = 0.050  # issue 13: no input takes more than 50 ms
PROFILES = [get_profile(n) for n in ("step3p7", "qwen2_5_vl", "gemini", "generic")]

_fuzz = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

#: (property, CPU seconds, wall seconds) of every answer, for the budget check.
_COSTS: list[tuple[str, float, float, str]] = []


def _timed(name: str, text: str, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    # The collector is paused while timing: a full collection of hypothesis's own heap (GBs in a
    # 10,000-example run) would otherwise be billed to whichever answer it interrupted.
    gc.disable()
    cpu, wall = time.thread_time(), time.perf_counter()
    try:
        return fn(*args, **kwargs)
    finally:
        spent_cpu, spent_wall = time.thread_time() - cpu, time.perf_counter() - wall
        gc.enable()
        what = f"{len(text)} chars: {text[:60]!a}" if spent_cpu > BUDGET_S else ""
        _COSTS.append((name, spent_cpu, spent_wall, what))


@_fuzz
@given(
    text=answers,
    image=images,
    profile=st.sampled_from(PROFILES),
    max_objects=st.integers(1, 32),
    depth=st.one_of(st.none(), st.floats(0.1, 5.0)),
    frame_id=st.sampled_from(["camera_optical", "a b", "", "cam/0"]),
)
def test_answer_path_returns_only_valid_allow_listed_results(
    text: str, image, profile, max_objects: int, depth: float | None, frame_id: str
) -> None:
    def path() -> None:
        try:
            parsed = parse_answer(text, profile, image, max_objects=max_objects)
        except ParseError as err:
            assert len(err.snippet) <= SNIPPET_CHARS
            return
        check_parsed(parsed, image, max_objects)
        dets = parsed.detections
        if depth is not None:  # as core/geometry would add positions
            dets = tuple(
                d.__class__(**{**d.__dict__, "position": Point3(0.1, -0.2, depth)}) for d in dets
            )
        decision = decide_command(parsed.action, dets, ALLOWED, frame_id)
        check_decision(
            decision, parsed.__class__(**{**parsed.__dict__, "detections": dets}), frame_id
        )

    _timed("parse_answer + decide_command", text, path)


@_fuzz
@given(text=answers)
def test_strip_reasoning_is_idempotent_and_bounded(text: str) -> None:
    # The backends strip every reply, whole (up to max_response_bytes), before parsing.
    once = _timed("strip_reasoning", text, strip_reasoning, text)
    assert strip_reasoning(once) == once
    assert len(once) <= len(text)
    assert "<think>" not in once.lower() and "</think>" not in once.lower()


@pytest.fixture(scope="module", autouse=True)
def _budget() -> Iterator[None]:
    yield
    if not FUZZ:
        return  # speed is not asserted in the unit run (project rule); `make fuzz` does
    counts: dict[str, int] = {}
    for name, *_ in _COSTS:
        counts[name] = counts.get(name, 0) + 1
    worst_cpu = max(_COSTS, key=lambda c: c[1])
    worst_wall = max(c[2] for c in _COSTS)
    print(
        f"\nfuzz: {counts} answers; worst CPU {worst_cpu[1] * 1e3:.1f} ms ({worst_cpu[0]}), "
        f"worst wall {worst_wall * 1e3:.1f} ms"
    )
    assert all(n >= 10_000 for n in counts.values()), counts
    over = [c for c in _COSTS if c[1] > BUDGET_S]
    assert not over, f"{len(over)} answers over {BUDGET_S * 1e3:.0f} ms of CPU: {over[:5]}"
