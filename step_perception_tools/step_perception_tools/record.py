"""Record the node's outputs to a bag (``step-perception record``).

Subscriptions are raw (``raw=True``): the received CDR bytes go unchanged into
a rosbag2 written by ``rosbags`` with full message definitions (our
``step_perception_msgs`` registered from the ``.msg`` files), so Foxglove and
``rosbags`` read the result. Each message is logged at its receive time on this
recorder's clock (ROS time: the wall clock, or ``/clock`` with
``use_sim_time``); ``step-perception eval`` takes latency from it.

Topic types are discovered from the graph (polled until every topic is found),
and each subscription's QoS follows its publishers': reliable when they all are,
transient-local when they all are.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rclpy
from rclpy.clock import Clock

try:
    from rclpy.clock_type import ClockType  # Jazzy and later
except ImportError:  # Humble: ClockType lives in rclpy.clock (rclpy.clock_type came with Jazzy)
    from rclpy.clock import ClockType  # type: ignore[attr-defined,no-redef]
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rich.console import Console
from rich.markup import escape
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Writer

from step_perception_tools.bags import BagError, Storage, open_writer, typestore
from step_perception_tools.ros_context import ros_context
from step_perception_tools.topics import matching_qos, message_class

__all__ = ["OUTPUT_TOPICS", "RecordOptions", "RecordStats", "Recorder", "record", "resolve"]

#: The node's outputs, relative to its namespace; plus /diagnostics (absolute).
OUTPUT_TOPICS = ("detections", "scene", "command", "debug_image", "markers")
DIAGNOSTICS_TOPIC = "/diagnostics"


@dataclass(frozen=True)
class RecordOptions:
    """What to record and where."""

    out: Path
    namespace: str = "/"
    topics: tuple[str, ...] | None = None  # None = the node's outputs
    diagnostics: bool = True
    duration_s: float | None = None  # wall seconds; None = until stopped
    storage: str = "mcap"
    use_sim_time: bool = False
    depth: int = 100  # subscription history depth
    discovery_period_s: float = 0.25
    drain_s: float = 0.3  # keep taking queued messages this long after the stop
    node_name: str = "step_perception_record"

    def wanted(self) -> tuple[str, ...]:
        """Absolute names of the topics to record."""
        names = OUTPUT_TOPICS if self.topics is None else self.topics
        out = [resolve(self.namespace, n) for n in names]
        if self.diagnostics and DIAGNOSTICS_TOPIC not in out:
            out.append(DIAGNOSTICS_TOPIC)
        return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class RecordStats:
    """What a recording holds."""

    path: Path
    counts: Mapping[str, int]  # topic -> messages written


def resolve(namespace: str, name: str) -> str:
    """Absolute topic name of ``name`` in ``namespace`` (absolute names stay)."""
    if name.startswith("/"):
        return name
    ns = "/" + namespace.strip("/")
    return f"{ns.rstrip('/')}/{name}"


class Recorder:
    """Subscriptions and the open bag; call ``spin_once`` until done, then ``close``."""

    def __init__(self, opts: RecordOptions, context: Context, console: Console | None) -> None:
        self._opts = opts
        self._console = console
        self._store = typestore()
        self._wanted = opts.wanted()
        self._pending = set(self._wanted)
        self._subs: list[Any] = []
        self._unmatched: dict[str, Any] = {}  # topic -> subscription without a publisher yet
        self.counts: Counter[str] = Counter()
        self._writer: Writer | None = open_writer(opts.out, Storage(opts.storage))
        overrides = [Parameter("use_sim_time", Parameter.Type.BOOL, opts.use_sim_time)]
        self.node = rclpy.create_node(
            opts.node_name, context=context, parameter_overrides=overrides
        )
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(self.node)
        # steady: with use_sim_time a ROS-time timer would wait for /clock
        self._timer = self.node.create_timer(
            opts.discovery_period_s, self._discover, clock=Clock(clock_type=ClockType.STEADY_TIME)
        )
        self._discover()

    @property
    def path(self) -> Path:
        """The bag folder."""
        return self._opts.out

    @property
    def subscribed(self) -> tuple[str, ...]:
        """Topics recorded so far (discovered)."""
        return tuple(t for t in self._wanted if t not in self._pending)

    def _say(self, text: str) -> None:
        if self._console is not None:
            self._console.print(text)

    @property
    def matched(self) -> tuple[str, ...]:
        """Topics whose subscription has matched a publisher (data can flow)."""
        return tuple(t for t in self.subscribed if t not in self._unmatched)

    def _discover(self) -> None:
        for topic, sub in list(self._unmatched.items()):
            if sub.get_publisher_count() > 0:
                del self._unmatched[topic]
                self._say(escape(f"matched {topic}"))
        if not self._pending and not self._unmatched:
            self._timer.cancel()
            return
        graph = dict(self.node.get_topic_names_and_types())
        for topic in sorted(self._pending & graph.keys()):
            types = graph[topic]
            msgtype = types[0]
            if len(types) > 1:
                self._say(
                    f"[yellow]{escape(topic)} has several types {escape(str(types))}; recording"
                )
            if msgtype not in self._store.types:
                self._say(
                    f"[yellow]{escape(topic)}: type {escape(msgtype)} unknown to rosbags, skipped"
                )
                self._pending.discard(topic)
                continue
            try:
                cls = message_class(msgtype)
            except BagError as err:
                self._say(f"[yellow]{escape(topic)}: {escape(str(err))}, skipped")
                self._pending.discard(topic)
                continue
            self._subscribe(topic, msgtype, cls)
            self._pending.discard(topic)

    def _subscribe(self, topic: str, msgtype: str, cls: Any) -> None:
        assert self._writer is not None
        conn = self._writer.add_connection(topic, msgtype, typestore=self._store)
        clock = self.node.get_clock()

        def on_message(raw: bytes, conn: Connection = conn) -> None:
            if self._writer is None:
                return
            self._writer.write(conn, clock.now().nanoseconds, raw)
            self.counts[conn.topic] += 1

        sub = self.node.create_subscription(
            cls, topic, on_message, matching_qos(self.node, topic, self._opts.depth), raw=True
        )
        self._subs.append(sub)
        self._unmatched[topic] = sub
        self._say(escape(f"recording {topic} [{msgtype}]"))

    def close(self) -> None:
        """Close the bag (index + metadata) and the node. Idempotent."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        self.executor.remove_node(self.node)
        self.node.destroy_node()
        self.executor.shutdown(timeout_sec=0)


def record(
    opts: RecordOptions,
    *,
    stop: threading.Event | None = None,
    console: Console | None = None,
    context: Context | None = None,
) -> RecordStats:
    """Record until ``stop`` is set or ``duration_s`` passed; the bag is always closed.

    Runs in its own rclpy context unless one is given (it is then neither
    initialised nor shut down here).
    """
    stop = stop or threading.Event()
    with ros_context(context) as ctx:
        recorder = Recorder(opts, ctx, console)
        try:
            end = None if opts.duration_s is None else time.monotonic() + opts.duration_s
            status = console.status("recording") if console is not None else None
            if status is not None:
                status.start()
            try:
                while not stop.is_set() and (end is None or time.monotonic() < end):
                    recorder.executor.spin_once(timeout_sec=0.1)
                    if status is not None:
                        total = sum(recorder.counts.values())
                        waiting = len(opts.wanted()) - len(recorder.matched)
                        status.update(
                            f"recording: {total} messages, {waiting} topic(s) not matched yet"
                        )
                # what already arrived still goes into the bag
                drain_end = time.monotonic() + opts.drain_s
                while time.monotonic() < drain_end:
                    recorder.executor.spin_once(timeout_sec=0.02)
            finally:
                if status is not None:
                    status.stop()
        finally:
            recorder.close()
        return RecordStats(path=recorder.path, counts=dict(recorder.counts))
