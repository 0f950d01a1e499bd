"""Play a rosbag2 into the ROS graph with rclpy (``step-perception replay``), as ros2 bag play.

Messages are published as the bag's CDR bytes (no deserialise/serialise round
trip), so header stamps are the bag's. Timing follows the bag's log times,
scaled by ``rate``. With ``clock_hz``, ``/clock`` carries the bag time (before
every message and at ``clock_hz`` in between) for nodes with ``use_sim_time``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rich.console import Console
from rich.markup import escape
from rosbags.interfaces import Connection
from rosbags.rosbag2 import ReaderError
from step_perception.ros.diagnostics import FAILURE_KEYS

from step_perception_tools.bags import BagError, header_stamp_ns, open_reader
from step_perception_tools.progress import progress_bar
from step_perception_tools.ros_context import ros_context
from step_perception_tools.topics import matching_qos, message_class

__all__ = ["ReplayOptions", "ReplayStats", "replay"]

_NS = 1_000_000_000


@dataclass(frozen=True)
class ReplayOptions:
    """What to play and how."""

    bag: Path
    rate: float = 1.0  # bag seconds per wall second
    loop: bool = False
    clock_hz: float | None = None  # publish /clock at this wall rate; None = no /clock
    remap: Mapping[str, str] = field(default_factory=dict)  # bag topic -> published topic
    topics: tuple[str, ...] = ()  # bag topics to play; empty = all
    reliable: bool = False  # reliable publishers (default best effort, sensor-data QoS)
    delay_s: float = 0.5  # wait after creating publishers (and after wait_subscribers_s)
    wait_subscribers_s: float = 0.0  # wait up to this long until every topic has a subscriber
    linger_s: float = 0.5  # keep publishers alive after the last message, for delivery
    depth: int = 10  # publisher history depth
    node_name: str = "step_perception_replay"
    # Lockstep: before the next frame, wait for the answer to the previous one on this topic
    # (matched by header stamp); bag time pauses meanwhile. None = play on the bag's schedule.
    lockstep_output: str | None = None
    lockstep_input: str = "/camera/image_raw"  # bag topic whose messages are the frames
    lockstep_timeout_s: float = 30.0
    # Lockstep with this node's fully qualified name (e.g. /camera/step_perception): a frame the
    # node finished without publishing (its /diagnostics failure counters went up: a parse
    # failure, a backend error) counts as failed and the replay goes on, instead of timing out.
    lockstep_node: str | None = None

    def __post_init__(self) -> None:
        if not self.rate > 0:
            raise BagError(f"rate must be > 0, got {self.rate}")
        if self.clock_hz is not None and not self.clock_hz > 0:
            raise BagError(f"clock rate must be > 0 Hz, got {self.clock_hz}")


@dataclass(frozen=True)
class ReplayStats:
    """What a replay did."""

    messages: int
    passes: int  # completed or started passes over the bag
    answered: int = 0  # lockstep: frames whose answer arrived
    unanswered: int = 0  # lockstep: frames given up on because of a stop (a timeout raises)
    failed: int = 0  # lockstep_node: frames the node finished with a failure, nothing published
    # lockstep: per answered frame, wall seconds from publishing the frame to its answer's arrival
    round_trips_s: tuple[float, ...] = ()


class _Lockstep:
    """Collects the header stamps of the answers on the lockstep output topic."""

    def __init__(self, node: Any, opts: ReplayOptions, stop: threading.Event) -> None:
        assert opts.lockstep_output is not None
        self._topic = opts.lockstep_output
        self._timeout = opts.lockstep_timeout_s
        self._stop = stop
        self._stamps: set[int] = set()
        self._published: dict[int, float] = {}  # header stamp -> monotonic time of the publish
        self.round_trips_s: list[float] = []
        self.answered = self.unanswered = self.failed = 0
        self._executor = SingleThreadedExecutor(context=node.context)
        self._executor.add_node(node)
        end = time.monotonic() + max(self._timeout, opts.wait_subscribers_s)
        self._failures: int | None = None  # the node's failure count, newest /diagnostics
        self._failures_base = 0
        if opts.lockstep_node is not None:
            self._watch_failures(node, opts.lockstep_node, end, stop)
        msgtype = None
        while msgtype is None:
            types = dict(node.get_topic_names_and_types()).get(self._topic)
            if types:
                msgtype = types[0]
            elif time.monotonic() >= end or stop.wait(0.05):
                raise BagError(f"lockstep: nobody publishes {self._topic}")
        node.create_subscription(
            message_class(msgtype),
            self._topic,
            self._on_answer,
            matching_qos(node, self._topic, 100),
            raw=True,
        )

    def _watch_failures(self, node: Any, name: str, end: float, stop: threading.Event) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        prefix = f"{name}:"

        def on_diagnostics(msg: DiagnosticArray) -> None:
            for status in msg.status:
                if status.name.startswith(prefix):
                    values = {kv.key: kv.value for kv in status.values}
                    with contextlib.suppress(ValueError):
                        self._failures = sum(int(values.get(k, "0")) for k in FAILURE_KEYS)

        node.create_subscription(DiagnosticArray, "/diagnostics", on_diagnostics, 10)
        # The count before the first frame; the node publishes /diagnostics at 1 Hz.
        while self._failures is None:
            if time.monotonic() >= end or stop.is_set():
                raise BagError(f"lockstep: no /diagnostics from {name}")
            self._executor.spin_once(timeout_sec=0.05)
        self._failures_base = self._failures

    def _failed_now(self) -> bool:
        # One frame at a time: the node's k-th failure since the start is this frame's.
        failures = self._failures
        return failures is not None and failures - self._failures_base > self.failed

    def _on_answer(self, raw: bytes) -> None:
        stamp = header_stamp_ns(raw)
        if stamp not in self._stamps and stamp in self._published:
            self.round_trips_s.append(time.monotonic() - self._published[stamp])
        self._stamps.add(stamp)

    def published(self, stamp_ns: int) -> None:
        """Note that the frame ``stamp_ns`` was just published (its round trip starts now)."""
        self._published.setdefault(stamp_ns, time.monotonic())

    def wait(self, stamp_ns: int) -> None:
        """Spin until the answer for ``stamp_ns`` arrived or a stop; ``BagError`` on a timeout.

        A frame the node never answered fails the replay rather than being counted: lockstep
        exists so that every frame is scored.
        """
        end = time.monotonic() + self._timeout
        while stamp_ns not in self._stamps:
            if self._failed_now():
                self.failed += 1
                return
            if self._stop.is_set():
                self.unanswered += 1
                return
            if time.monotonic() >= end:
                raise BagError(
                    f"lockstep: no answer on {self._topic} to frame {self.answered + 1} "
                    f"(stamp {stamp_ns} ns) within {self._timeout:g} s"
                )
            self._executor.spin_once(timeout_sec=0.02)
        self.answered += 1

    def close(self) -> None:
        """Stop spinning (the node is destroyed by its owner)."""
        self._executor.shutdown(timeout_sec=0)


def _select(connections: list[Connection], topics: tuple[str, ...], bag: Path) -> list[Connection]:
    present = {c.topic for c in connections}
    missing = sorted(set(topics) - present)
    if missing:
        raise BagError(f"bag {bag} has no topic(s) {missing}; it has {sorted(present)}")
    chosen = [c for c in connections if not topics or c.topic in topics]
    types: dict[str, str] = {}
    for c in chosen:
        if types.setdefault(c.topic, c.msgtype) != c.msgtype:
            raise BagError(
                f"topic {c.topic} has two types in the bag ({types[c.topic]}, {c.msgtype})"
            )
    if not chosen:
        raise BagError(f"bag {bag} has no topics to play")
    return chosen


def replay(
    opts: ReplayOptions,
    *,
    stop: threading.Event | None = None,
    console: Console | None = None,
    context: Context | None = None,
) -> ReplayStats:
    """Play the bag until its end (or ``stop``, with ``loop``); returns what was published.

    Runs in its own rclpy context unless one is given (it is then neither
    initialised nor shut down here).
    """
    stop = stop or threading.Event()
    with ros_context(context) as ctx:
        node = rclpy.create_node(opts.node_name, context=ctx)
        try:
            with open_reader(opts.bag) as reader:
                conns = _select(reader.connections, opts.topics, opts.bag)
                reliability = (
                    ReliabilityPolicy.RELIABLE if opts.reliable else ReliabilityPolicy.BEST_EFFORT
                )
                qos = QoSProfile(
                    history=HistoryPolicy.KEEP_LAST,
                    depth=opts.depth,
                    reliability=reliability,
                    durability=DurabilityPolicy.VOLATILE,
                )
                pubs: dict[int, Any] = {}
                by_topic: dict[str, Any] = {}
                for c in conns:
                    if c.topic not in by_topic:
                        out_topic = opts.remap.get(c.topic, c.topic)
                        by_topic[c.topic] = node.create_publisher(
                            message_class(c.msgtype), out_topic, qos
                        )
                    pubs[c.id] = by_topic[c.topic]
                clock_pub = None
                if opts.clock_hz is not None:
                    clock_cls = message_class("rosgraph_msgs/msg/Clock")
                    clock_pub = node.create_publisher(clock_cls, "/clock", QoSProfile(depth=1))
                per_pass = sum(c.msgcount for c in conns)
                unmatched = _wait_for_subscribers(by_topic, opts.wait_subscribers_s, stop)
                if unmatched and opts.wait_subscribers_s > 0 and console is not None:
                    console.print(f"[yellow]no subscriber yet on {escape(', '.join(unmatched))}")
                lockstep = None
                if opts.lockstep_output is not None:
                    if opts.lockstep_input not in {c.topic for c in conns}:
                        raise BagError(
                            f"lockstep: {opts.lockstep_input} is not among the played topics"
                        )
                    lockstep = _Lockstep(node, opts, stop)
                stop.wait(max(0.0, opts.delay_s))
                player = _Player(opts, pubs, clock_pub, stop, lockstep)
                progress = None
                if console is not None:
                    progress = progress_bar(console, total=not opts.loop)
                    progress.start()
                    task = progress.add_task(
                        f"replay {opts.bag}", total=None if opts.loop else per_pass
                    )
                passes = 0
                try:
                    while not stop.is_set():
                        passes += 1
                        for conn, log_ns, raw in reader.messages(connections=conns):
                            if not player.play(conn, log_ns, raw):
                                break
                            if progress is not None:
                                progress.advance(task)
                        player.finish_frame()
                        player.restart()
                        if not opts.loop:
                            break
                except ReaderError as err:
                    raise BagError(f"cannot read bag {opts.bag}: {err}") from err
                finally:
                    if progress is not None:
                        progress.stop()
                    if lockstep is not None:
                        lockstep.close()
                stop.wait(max(0.0, opts.linger_s))
                return ReplayStats(
                    messages=player.sent,
                    passes=passes,
                    answered=lockstep.answered if lockstep is not None else 0,
                    unanswered=lockstep.unanswered if lockstep is not None else 0,
                    failed=lockstep.failed if lockstep is not None else 0,
                    round_trips_s=tuple(lockstep.round_trips_s) if lockstep is not None else (),
                )
        finally:
            node.destroy_node()


def _wait_for_subscribers(
    pubs: Mapping[str, Any], timeout_s: float, stop: threading.Event
) -> list[str]:
    """Wait until every publisher has a matched subscription; returns the topics still without."""
    end = time.monotonic() + timeout_s
    while True:
        unmatched = sorted(t for t, p in pubs.items() if p.get_subscription_count() == 0)
        if not unmatched or time.monotonic() >= end or stop.wait(0.02):
            return unmatched


class _Player:
    """Publishes one pass of messages on the bag's schedule, with /clock in between."""

    def __init__(
        self,
        opts: ReplayOptions,
        pubs: dict[int, Any],
        clock_pub: Any,
        stop: threading.Event,
        lockstep: _Lockstep | None = None,
    ) -> None:
        self._opts = opts
        self._pubs = pubs
        self._clock_pub = clock_pub
        self._stop = stop
        self._lockstep = lockstep
        self._pending: tuple[int, int] | None = None  # lockstep: (header stamp, log time)
        self.sent = 0
        self.restart()

    def finish_frame(self) -> None:
        """Lockstep: wait for the answer to the frame last played, if any."""
        if self._lockstep is not None and self._pending is not None:
            self._lockstep.wait(self._pending[0])
            self._pending = None

    def restart(self) -> None:
        """Start a new pass: the next message sets the time origin."""
        self._bag0: int | None = None
        self._wall0 = 0.0
        self._last_clock = -1.0

    def _clock(self, bag_ns: int) -> None:
        if self._clock_pub is not None:
            msg = self._clock_pub.msg_type()
            msg.clock.sec, msg.clock.nanosec = divmod(bag_ns, _NS)
            self._clock_pub.publish(msg)
            self._last_clock = time.monotonic()

    def play(self, conn: Connection, log_ns: int, raw: bytes | memoryview) -> bool:
        """Wait for ``log_ns``'s turn and publish; False when stopped."""
        rate = self._opts.rate
        if self._pending is not None and log_ns > self._pending[1]:
            self.finish_frame()
            self._bag0 = None  # the wait paused bag time: resume the schedule from here
        if self._bag0 is None:
            self._bag0, self._wall0 = log_ns, time.monotonic()
        due = self._wall0 + (log_ns - self._bag0) / _NS / rate
        period = 1.0 / self._opts.clock_hz if self._opts.clock_hz else None
        while True:
            now = time.monotonic()
            if now >= due:
                break
            wait = due - now
            if period is not None:
                next_clock = self._last_clock + period
                if now >= next_clock:
                    self._clock(self._bag0 + round((now - self._wall0) * rate * _NS))
                    continue
                wait = min(wait, next_clock - now)
            if self._stop.wait(wait):
                return False
        if self._stop.is_set():
            return False
        self._clock(log_ns)
        self._pubs[conn.id].publish(bytes(raw))
        self.sent += 1
        if self._lockstep is not None and conn.topic == self._opts.lockstep_input:
            self._pending = (header_stamp_ns(raw), log_ns)
            self._lockstep.published(self._pending[0])
        return True
