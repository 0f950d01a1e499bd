"""One configuration of the node without ROS: the perceiver, its backend and the frame loop.

``Session.build`` is what the node's configure does once the backend exists:
the frame gate, depth pairing and clock-jump check (composed by
``core.loop.FrameLoop``) and the ``Perceiver``. ``reconfigure`` applies a
run-time parameter change to both, ``status`` is what ``/diagnostics`` reports
of them, and ``close`` frees them. The node keeps one ``Session`` (or none
while unconfigured) and only translates between ROS and it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from step_perception.core.backend import Backend
from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import StepPerceptionError
from step_perception.core.frames import FrameGate, GateCounters
from step_perception.core.health import stall_after_s
from step_perception.core.loop import FrameLoop
from step_perception.core.pipeline import Perceiver, PerceiverStats
from step_perception.core.sync import ClockJump, DepthSync
from step_perception.core.types import BackendHealth, PerceptionResult, TransformLookup

__all__ = ["CLOCK_JUMP_NS", "DEPTH_WAIT_S", "Session", "SessionStatus"]

C = TypeVar("C")  # colour payload
D = TypeVar("D")  # depth payload

#: [s] how long an admitted colour frame waits for its aligned depth. Measured (replayed
#: 1280x720 bags, reliable, LARGE_DATA, loaded 2-core machine): most depth frames arrive within
#: milliseconds, but about a third arrive seconds late (Fast DDS repairs lost fragments at its
#: next heartbeat); waiting longer would stall the loop, so those frames go out without 3D
#: positions and are counted as drops_no_depth_in_time.
DEPTH_WAIT_S = 0.5
#: [ns] a clock going back further than this resets the gate (a bag played in a loop).
CLOCK_JUMP_NS = 1_000_000_000


@dataclass(frozen=True)
class SessionStatus:
    """What ``/diagnostics`` reports of a session; the defaults describe none (unconfigured)."""

    rate_limit_hz: float = math.nan
    gate: GateCounters = field(default_factory=GateCounters)
    out_of_order: int = 0  # late older replies (max_inflight > 1), never published
    stats: PerceiverStats = field(default_factory=PerceiverStats)
    health: BackendHealth | None = None
    backend_name: str = ""
    #: core.health.stall_after_s of the config; inf: never an ERROR for missing results
    stall_after_s: float = math.inf


class Session(Generic[C, D]):
    """The perceiver, its backend and the frame loop of one configuration."""

    def __init__(
        self, perceiver: Perceiver, loop: FrameLoop[C, D, PerceptionResult], backend: Backend
    ) -> None:
        self._perceiver = perceiver
        self._loop = loop
        self._backend = backend

    @classmethod
    def build(
        cls,
        config: PerceptionConfig,
        backend: Backend,
        *,
        now_ns: Callable[[], int],
        depth_keep: int,
        on_complete: Callable[[], None],
        lookup_transform: TransformLookup | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> Session[C, D]:
        """Build the loop and the perceiver on ``backend`` (which the session then owns).

        ``now_ns`` is the clock stamps are compared with (the ROS clock), ``monotonic`` the
        one of the depth wait; ``on_complete`` is called (on a worker thread) whenever a sent
        request completes. A ``StepPerceptionError`` closes ``backend`` before it propagates.
        """
        try:
            gate: FrameGate[C] = FrameGate(
                now_ns,
                rate_hz=config.rate_hz,
                max_inflight=config.max_inflight,
                max_frame_age_s=config.max_frame_age_s,
            )
            sync: DepthSync[C, D] = DepthSync(monotonic, keep=depth_keep, wait_s=DEPTH_WAIT_S)
            loop: FrameLoop[C, D, PerceptionResult] = FrameLoop(
                gate,
                sync,
                ClockJump(CLOCK_JUMP_NS),
                use_depth=config.use_depth,
                on_complete=on_complete,
            )
            perceiver = Perceiver(config, backend, now_ns=now_ns, lookup_transform=lookup_transform)
        except StepPerceptionError:
            backend.close()
            raise
        return cls(perceiver, loop, backend)

    @property
    def config(self) -> PerceptionConfig:
        """Return the configuration in effect (changed by ``reconfigure``)."""
        return self._perceiver.config

    @property
    def perceiver(self) -> Perceiver:
        """Return the perceiver (submit frames, answer queries)."""
        return self._perceiver

    @property
    def loop(self) -> FrameLoop[C, D, PerceptionResult]:
        """Return the frame loop (which frame goes next, with which depth)."""
        return self._loop

    @property
    def backend(self) -> Backend:
        """Return the model backend (owned: ``close`` closes it)."""
        return self._backend

    def reconfigure(self, config: PerceptionConfig) -> bool:
        """Apply a run-time parameter change; ``False`` when ``config`` changes nothing.

        Only what may change at run time is applied: the perceiver takes the whole
        config (prompt, task, ...), the gate its rate limit and frame age.
        """
        if config == self.config:
            return False
        self._perceiver.update_config(config)
        self._loop.gate.reconfigure(rate_hz=config.rate_hz, max_frame_age_s=config.max_frame_age_s)
        return True

    def status(self) -> SessionStatus:
        """Return what ``/diagnostics`` reports now (counters, latencies, backend health)."""
        config = self.config
        return SessionStatus(
            rate_limit_hz=config.rate_hz,
            gate=self._loop.gate.counters(),
            out_of_order=self._loop.order_counters().dropped_out_of_order,
            stats=self._perceiver.stats(),
            health=self._backend.health(),
            backend_name=self._backend.name,
            stall_after_s=stall_after_s(config.rate_hz, config.request_timeout_s),
        )

    def close(self) -> None:
        """Stop the perceiver, then close the backend (and free the model it holds)."""
        self._perceiver.close()
        self._backend.close()
