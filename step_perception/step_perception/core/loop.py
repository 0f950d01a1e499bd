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
  result is still current (not from before a reset) and hands back the next
  frame to send.

Each method returns the ``Dispatch`` to send, if any; the caller (the node)
only converts and submits it. Times come from the injected clocks of the gate
and of the depth sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from step_perception.core.frames import Decision, FilterBounds, FrameGate, content_filter_bounds
from step_perception.core.sync import ClockJump, DepthSync, Held

__all__ = ["Dispatch", "Finished", "FrameLoop"]

C = TypeVar("C")  # colour payload
D = TypeVar("D")  # depth payload


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

    current: bool  # the request was admitted after the last reset: its result counts
    next: Dispatch[C, D] | None


class FrameLoop(Generic[C, D]):
    """The node's frame path for one configuration (see the module docstring)."""

    def __init__(
        self,
        gate: FrameGate[C],
        sync: DepthSync[C, D],
        clock_jump: ClockJump,
        *,
        use_depth: bool,
    ) -> None:
        self._gate = gate
        self._sync = sync
        self._clock_jump = clock_jump
        self._use_depth = use_depth

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

    def done(self, generation: int) -> Finished[C, D]:
        """Free the slot of a request admitted under ``generation``; see ``Finished``."""
        current = generation == self._gate.generation
        nxt = self._gate.done(generation)
        dispatch = None
        if nxt is not None:
            dispatch = self._route(nxt.stamp_ns, nxt.payload, nxt.generation, wait_depth=True)
        return Finished(current, dispatch)

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

    def reset(self) -> None:
        """Forget admitted frames and the held one (deactivate, clock jump)."""
        self._gate.reset()
        self._sync.drop_held()

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

    @staticmethod
    def _release(held: Held[C], depth: D | None) -> Dispatch[C, D]:
        return Dispatch(held.payload, held.stamp_ns, depth, held.generation)
