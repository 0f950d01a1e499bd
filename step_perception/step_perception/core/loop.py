"""The continuous loop's decisions: which admitted frame goes to the model, with which depth.

``FrameLoop`` composes the frame gate (core/frames.py), depth pairing and the
clock-jump check (core/sync.py) into the node's data path, without ROS:

* ``check_clock`` on every colour frame: a clock that went back (bag loop)
  resets the gate and drops a held frame;
* ``offer`` a colour frame: the gate decides; an admitted frame is paired with
  its depth (``use_depth``) or held until its depth comes;
* ``add_depth`` / ``expired``: a held frame goes with its depth, or without it
  once the wait is over;
* ``done`` when a request finished: frees the gate's slot, says whether the
  result is still current (not from before a reset, and not older than a result
  already published: with ``max_inflight`` > 1 a late older reply is dropped and
  counted, ``core/ordering.py``) and hands back the next frame to send;
* ``track`` a sent request's future: when it completes (on a worker thread) it
  is queued and ``on_complete`` wakes the caller, whose thread then takes the
  queue with ``take_completed`` (``done`` for each: publish or not, what next).

Each method returns the ``Dispatch`` to send, if any; the caller (the node)
only converts and submits it. Times come from the injected clocks of the gate
and of the depth sync.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

from step_perception.core.frames import Decision, FilterBounds, FrameGate, content_filter_bounds
from step_perception.core.ordering import OrderCounters, StampOrder
from step_perception.core.sync import ClockJump, DepthSync, Held

__all__ = ["Completed", "Dispatch", "Finished", "FrameLoop"]

C = TypeVar("C")  # colour payload
D = TypeVar("D")  # depth payload
R = TypeVar("R")  # what a request answers


@dataclass(frozen=True)
class Dispatch(Generic[C, D]):
    """A frame to send now: its payload, stamp, paired depth and gate generation."""

    payload: C
    stamp_ns: int
    depth: D | None
    generation: int


@dataclass(frozen=True)
class Finished(Generic[C, D]):
    """What ``done`` says: publish the result or not, and the next frame to send."""

    current: bool  # publish it: admitted after the last reset, and newer than what is out
    next: Dispatch[C, D] | None
    late: bool = False  # dropped: an answer to a newer frame was published before it


@dataclass(frozen=True)
class Completed(Generic[C, D, R]):
    """A tracked request whose future completed (``FrameLoop.take_completed``)."""

    sent: Dispatch[C, D]  # the frame it answers
    answer: Future[R]  # done: a result or the exception
    publish: bool  # ``Finished.current``: the answer is still wanted
    next: Dispatch[C, D] | None  # the frame to send now in the freed slot


def _nothing() -> None:
    pass


class FrameLoop(Generic[C, D, R]):
    """The node's frame path for one configuration (see the module docstring)."""

    def __init__(
        self,
        gate: FrameGate[C],
        sync: DepthSync[C, D],
        clock_jump: ClockJump,
        *,
        use_depth: bool,
        on_complete: Callable[[], None] = _nothing,
    ) -> None:
        self._gate = gate
        self._sync = sync
        self._clock_jump = clock_jump
        self._use_depth = use_depth
        self._order = StampOrder()
        self._on_complete = on_complete
        self._completed: queue.SimpleQueue[tuple[Dispatch[C, D], Future[R]]] = queue.SimpleQueue()

    @property
    def gate(self) -> FrameGate[C]:
        """Return the frame gate (counters, reconfiguration)."""
        return self._gate

    def check_clock(self, now_ns: int) -> bool:
        """Reset the gate (and drop a held frame) when the clock jumped back; ``True`` then."""
        if not self._clock_jump.jumped_back(now_ns):
            return False
        self.reset()
        return True

    def offer(self, stamp_ns: int, payload: C) -> tuple[Decision, Dispatch[C, D] | None]:
        """Offer a colour frame to the gate; returns its decision and what to send now."""
        decision = self._gate.offer(stamp_ns, payload)
        if decision is not Decision.SEND_NOW:
            return decision, None
        return decision, self._route(stamp_ns, payload, self._gate.generation, wait_depth=True)

    def add_depth(self, stamp_ns: int, depth: D) -> Dispatch[C, D] | None:
        """Keep a depth frame; the held colour frame it matches, to send now."""
        held = self._sync.add_depth(stamp_ns, depth)
        return None if held is None else self._release(held, depth)

    def expired(self) -> Dispatch[C, D] | None:
        """Release the held frame whose depth did not come in time (sent without depth)."""
        held = self._sync.expired()
        return None if held is None else self._release(held, None)

    def done(self, generation: int, stamp_ns: int | None = None) -> Finished[C, D]:
        """Free the slot of a request admitted under ``generation``; see ``Finished``.

        ``stamp_ns`` (the frame's stamp) keeps results in stamp order: a result whose
        stamp is not newer than the last current one is ``late`` and not current.
        """
        current = generation == self._gate.generation
        late = current and stamp_ns is not None and not self._order.admit(stamp_ns)
        nxt = self._gate.done(generation)
        dispatch = None
        if nxt is not None:
            dispatch = self._route(nxt.stamp_ns, nxt.payload, nxt.generation, wait_depth=True)
        return Finished(current and not late, dispatch, late)

    def track(self, sent: Dispatch[C, D], answer: Future[R]) -> None:
        """Queue ``sent`` once ``answer`` completes, then call ``on_complete`` (any thread)."""
        answer.add_done_callback(lambda f: self._complete(sent, f))

    def take_completed(self) -> list[Completed[C, D, R]]:
        """Take the tracked requests completed so far, oldest first, each through ``done``.

        Call it from the thread that offers frames: it frees the gate's slots. A
        request completing meanwhile calls ``on_complete`` again, so none is left behind.
        """
        out: list[Completed[C, D, R]] = []
        while True:
            try:
                sent, answer = self._completed.get_nowait()
            except queue.Empty:
                return out
            finished = self.done(sent.generation, sent.stamp_ns)
            out.append(Completed(sent, answer, finished.current, finished.next))

    def order_counters(self) -> OrderCounters:
        """Results let out and late ones dropped (``done`` with a stamp)."""
        return self._order.counters()

    def depth_for(self, stamp_ns: int) -> D | None:
        """Return the depth paired with a colour stamp now (``None`` without ``use_depth``)."""
        return self._sync.match(stamp_ns) if self._use_depth else None

    def filter_bounds(
        self, *, enabled: bool, query_waiting: bool, latest_stamp_ns: int | None
    ) -> FilterBounds:
        """Where the content filters go now (``core.frames.content_filter_bounds``)."""
        held = self._sync.held
        return content_filter_bounds(
            self._gate.next_accept_stamp_ns(),
            enabled=enabled,
            query_waiting=query_waiting,
            latest_stamp_ns=latest_stamp_ns,
            held_stamp_ns=held.stamp_ns if held is not None else None,
        )

    def clear_depth(self) -> None:
        """Forget the held frame and every kept depth frame (the camera was unsubscribed)."""
        self._sync.clear()

    def reset(self) -> None:
        """Forget admitted frames, the held one, the last result stamp (deactivate, clock jump)."""
        self._gate.reset()
        self._sync.drop_held()
        self._order.reset()

    def _route(
        self, stamp_ns: int, payload: C, generation: int, *, wait_depth: bool
    ) -> Dispatch[C, D] | None:
        depth = None
        if self._use_depth:
            depth = self._sync.match(stamp_ns)
            if depth is None and wait_depth:
                self._sync.hold(stamp_ns, payload, generation)
                return None
        return Dispatch(payload, stamp_ns, depth, generation)

    def _complete(self, sent: Dispatch[C, D], answer: Future[R]) -> None:
        # Worker thread: queue it and wake the caller; nothing else happens here.
        self._completed.put((sent, answer))
        self._on_complete()

    @staticmethod
    def _release(held: Held[C], depth: D | None) -> Dispatch[C, D]:
        return Dispatch(held.payload, held.stamp_ns, depth, held.generation)
