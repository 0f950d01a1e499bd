"""The query's frame, time budget and reply text (core/query.py), with an injected clock."""

import threading
import time

import pytest
from step_perception.core.errors import ConfigError
from step_perception.core.query import FrameMailbox, format_stamp, query_reply, query_timeout
from step_perception.core.types import (
    Box2D,
    Command,
    Detection,
    FrameMeta,
    PerceptionResult,
    Task,
)


class Monotonic:
    def __init__(self):
        self.now = 10.0

    def __call__(self):
        return self.now


def test_fresh_frame_is_used_when_it_is_the_newest_and_young():
    clock = Monotonic()
    box: FrameMailbox[str] = FrameMailbox(clock)
    box.put(1, "f1")
    calls = []
    got = box.frame_for_query(
        clock.now + 1, max_age_s=2.0, latest_is_newest=True, on_change=lambda: calls.append(1)
    )
    assert got == "f1" and calls == []  # no wait: the filter was never opened
    assert box.latest_stamp_ns == 1


def test_too_old_or_filtered_latest_frame_waits_for_the_next():
    clock = Monotonic()
    box: FrameMailbox[str] = FrameMailbox(clock)
    box.put(1, "old")
    clock.now += 5.0
    assert box.fresh(2.0) is None
    changes = []

    def on_change():
        changes.append(box.waiting)
        if box.waiting:  # the next frame arrives while the query waits
            box.put(2, "next")

    got = box.frame_for_query(
        clock.now + 1, max_age_s=2.0, latest_is_newest=True, on_change=on_change
    )
    assert got == "next"
    assert changes == [True, False]  # registered (filter opens), then gone (filter closes)
    got = box.frame_for_query(
        clock.now + 1, max_age_s=2.0, latest_is_newest=False, on_change=on_change
    )
    assert got == "next"  # a filtered input: the latest frame is not trusted, the next one is


def test_waiting_query_gets_none_at_its_deadline_or_on_release():
    clock = Monotonic()
    box: FrameMailbox[str] = FrameMailbox(clock)
    assert box.next_frame(clock.now - 1, on_change=lambda: None) is None  # deadline passed
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(box.next_frame(clock.now + 30, lambda: None)))
    t.start()
    while not box.waiting:
        time.sleep(0.001)
    box.release_waiters()
    t.join(5)
    assert got == [None] and not box.waiting


def test_query_timeout():
    assert query_timeout(0.0, 10.0) == 10.0
    assert query_timeout(2.5, 10.0) == 2.5
    with pytest.raises(ConfigError, match="finite"):
        query_timeout(float("inf"), 10.0)


def _result(task, *, command=None, rejection=None, summary="a red cube"):
    det = Detection(id="0", label="cube", box=Box2D(1, 2, 3, 4))
    return PerceptionResult(
        frame=FrameMeta(5_000_000_001, "cam", 64, 48),
        task=task,
        query="",
        detections=(det,),
        summary=summary,
        command=command,
        command_rejection=rejection,
    )


def test_reply_text():
    assert format_stamp(5_000_000_001) == "5.000000001"
    reply = query_reply(_result(Task.DESCRIBE), 5_000_000_001)
    assert reply.answer == "a red cube"
    assert reply.message == "1 object(s) in frame 5.000000001"
    pick = Command("pick", "0", "cube", None, "cam")
    command = query_reply(_result(Task.COMMAND, command=pick), 0)
    assert command.answer == pick.text() and command.answer.startswith("pick")
    rejected = query_reply(_result(Task.COMMAND, rejection="unknown action 'fly'"), 0)
    assert rejected.answer == "a red cube"
    assert (
        rejected.message
        == "1 object(s) in frame 0.000000000; command rejected: unknown action 'fly'"
    )
