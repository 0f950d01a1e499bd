"""The node's health on ``/diagnostics``: rates, drops by reason, latency, backend, failures.

``Diagnostics`` collects what the node counts (frames in, results out, drops
the gate and the node decided) and turns one snapshot into a
``diagnostic_msgs/DiagnosticStatus``. Rates are measured on the monotonic
clock over a sliding window; latency percentiles come from the perceiver.
"""

from __future__ import annotations

import math
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

from step_perception.core.frames import GateCounters
from step_perception.core.health import Level, ResultWatch, assess
from step_perception.core.pipeline import PerceiverStats
from step_perception.core.session import SessionStatus
from step_perception.core.types import BackendHealth

__all__ = ["FAILURE_KEYS", "Diagnostics", "DiagnosticsSnapshot", "RateMeter"]

# The status keys that count frames finished without a result (``PerceiverStats.failures``): what
# tools watching the node (``replay --lockstep-node``, the soak) add up.
FAILURE_KEYS = ("image_errors", "backend_errors", "parse_failures", "internal_errors")


class RateMeter:
    """Events per second over a sliding window of the monotonic clock (thread-safe)."""

    def __init__(self, window_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()
        self._lock = threading.Lock()
        self._start = clock()

    def tick(self) -> None:
        """Count one event now."""
        now = self._clock()
        with self._lock:
            self._times.append(now)
            self._trim(now)

    def rate(self) -> float:
        """Events per second over the window (or since creation, if younger)."""
        now = self._clock()
        with self._lock:
            self._trim(now)
            span = min(self._window_s, now - self._start)
            return len(self._times) / span if span > 0 else 0.0

    def _trim(self, now: float) -> None:
        while self._times and now - self._times[0] > self._window_s:
            self._times.popleft()


@dataclass(frozen=True)
class DiagnosticsSnapshot:
    """Everything one status report says."""

    lifecycle_state: str
    enabled: bool
    input_path: str  # "content_filter" or "plain"
    rate_limit_hz: float
    input_rate_hz: float
    processed_rate_hz: float
    gate: GateCounters
    node_drops: Mapping[str, int]
    stats: PerceiverStats
    health: BackendHealth | None
    backend_name: str = ""
    messages: tuple[str, ...] = field(default=())
    #: core.health.stall_after_s of the current config; inf: never an ERROR for missing results
    stall_after_s: float = math.inf


def _fmt(value: float, digits: int = 3) -> str:
    return "nan" if math.isnan(value) else f"{value:.{digits}f}"


def _since(t: float | None, now: float) -> float:
    return math.nan if t is None else now - t


class Diagnostics:
    """Counters of the node plus the report builder."""

    def __init__(
        self,
        name: str,
        hardware_id: str,
        window_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.hardware_id = hardware_id
        self._clock = clock
        self.input = RateMeter(window_s, clock)
        self.processed = RateMeter(window_s, clock)
        self._drops: Counter[str] = Counter()
        self._received: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._last_failures = 0
        self._watch = ResultWatch()
        self._stall_s = math.inf

    def frame(self) -> None:
        """Count a colour frame that arrived (input rate, and whether results are owed)."""
        self.input.tick()
        now = self._clock()
        with self._lock:
            self._watch = self._watch.frame(now, self._stall_s)

    def unanswered(self) -> None:
        """Note a request that ended without a published result: its frame is still owed one."""
        now = self._clock()
        with self._lock:
            self._watch = self._watch.unanswered(now)

    def result(self) -> None:
        """Count a published result."""
        self.processed.tick()
        now = self._clock()
        with self._lock:
            self._watch = self._watch.result(now)

    def restart(self) -> None:
        """Forget the stream (activated or enabled): a result is owed from the next frame on."""
        with self._lock:
            self._watch = self._watch.reset()

    def drop(self, reason: str) -> None:
        """Count a frame the node dropped before the gate (disabled, inactive, ...)."""
        with self._lock:
            self._drops[reason] += 1

    def received(self, what: str) -> None:
        """Count an auxiliary input message (depth, camera_info) for the report."""
        with self._lock:
            self._received[what] += 1

    def node_drops(self) -> dict[str, int]:
        """Snapshot of the node's own drop counters."""
        with self._lock:
            return dict(self._drops)

    def snapshot(
        self, session: SessionStatus, *, lifecycle_state: str, enabled: bool, input_path: str
    ) -> DiagnosticsSnapshot:
        """Compose one report: the node's state and counters with the session's status."""
        return DiagnosticsSnapshot(
            lifecycle_state=lifecycle_state,
            enabled=enabled,
            input_path=input_path,
            rate_limit_hz=session.rate_limit_hz,
            input_rate_hz=self.input.rate(),
            processed_rate_hz=self.processed.rate(),
            gate=session.gate,
            node_drops={**self.node_drops(), "out_of_order": session.out_of_order},
            stats=session.stats,
            health=session.health,
            backend_name=session.backend_name,
            stall_after_s=session.stall_after_s,
        )

    def _received_snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._received)

    def status(self, snap: DiagnosticsSnapshot) -> DiagnosticStatus:
        """One ``DiagnosticStatus`` for ``snap``: level, message and key/values."""
        st = snap.stats
        now = self._clock()
        failures = st.failures
        with self._lock:
            new_failures = failures - self._last_failures
            self._last_failures = failures
            self._stall_s = snap.stall_after_s
            watch = self._watch
        unhealthy = None
        if snap.health is not None and not snap.health.healthy:
            unhealthy = f"{snap.health.state}: {snap.health.detail}"
        verdict = assess(
            watch,
            now,
            snap.stall_after_s,
            running=snap.lifecycle_state == "active" and snap.enabled,
            new_failures=new_failures,
            backend_unhealthy=unhealthy,
            in_flight=st.inflight > 0,
        )
        level, problems = verdict.level, [*snap.messages, *verdict.problems]
        if snap.lifecycle_state == "active" and snap.enabled and snap.input_rate_hz == 0.0:
            level = max(level, Level.WARN)
            problems.append("no images arriving")
        if snap.lifecycle_state != "active":
            level = max(level, Level.WARN)
            problems.append(f"lifecycle state {snap.lifecycle_state}")
        elif not snap.enabled:
            problems.append("disabled (enable service)")
        message = "; ".join(problems) if problems else "ok"

        g = snap.gate
        values: list[tuple[str, str]] = [
            ("lifecycle_state", snap.lifecycle_state),
            ("enabled", str(snap.enabled).lower()),
            ("input_path", snap.input_path),
            ("rate_limit_hz", _fmt(snap.rate_limit_hz)),
            ("input_rate_hz", _fmt(snap.input_rate_hz, 2)),
            ("processed_rate_hz", _fmt(snap.processed_rate_hz, 2)),
            ("no_result_for_s", _fmt(_since(watch.last_result_s, now), 1)),
            ("error_after_s", _fmt(snap.stall_after_s, 1)),
            ("frames_offered", str(g.offered)),
            *((f"received_{k}", str(v)) for k, v in sorted(self._received_snapshot().items())),
            ("frames_sent", str(g.sent)),
            ("drops_rate", str(g.dropped_rate)),
            ("drops_stale", str(g.dropped_stale)),
            ("drops_older", str(g.dropped_older)),
            ("drops_replaced", str(g.replaced)),
        ]
        values += [(f"drops_{k}", str(v)) for k, v in sorted(snap.node_drops.items())]
        values += [
            ("results", str(st.completed)),
            ("inflight", str(st.inflight)),
            ("latency_p50_s", _fmt(st.latency_p50_s)),
            ("latency_p95_s", _fmt(st.latency_p95_s)),
            ("model_latency_p50_s", _fmt(st.model_latency_p50_s)),
            ("model_latency_p95_s", _fmt(st.model_latency_p95_s)),
            ("image_errors", str(st.image_errors)),
            ("backend_errors", str(st.backend_errors)),
            ("parse_failures", str(st.parse_failures)),
            ("internal_errors", str(st.internal_errors)),
            ("depth_errors", str(st.depth_errors)),
            ("missing_transforms", str(st.missing_transforms)),
            ("accepted_commands", str(st.accepted_commands)),
            ("rejected_commands", str(st.rejected_commands)),
        ]
        values += [(f"rejected_{reason}", str(n)) for reason, n in st.rejections]
        if snap.health is not None:
            values += [
                ("backend", snap.backend_name),
                ("backend_healthy", str(snap.health.healthy).lower()),
                ("backend_state", snap.health.state),
                ("backend_detail", snap.health.detail),
            ]
        return DiagnosticStatus(
            level=bytes([int(level)]),  # diagnostic_msgs' ``byte`` field
            name=self.name,
            message=message,
            hardware_id=self.hardware_id,
            values=[KeyValue(key=k, value=v) for k, v in values],
        )

    def array(self, header: Header, snap: DiagnosticsSnapshot) -> DiagnosticArray:
        """Build the ``/diagnostics`` message for ``snap``."""
        return DiagnosticArray(header=header, status=[self.status(snap)])
