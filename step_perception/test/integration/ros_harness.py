"""Real-DDS test harness: the node as a subprocess, a camera, collectors and service calls.

Everything runs over real DDS (Fast DDS): the node under test is the
``perception_node`` console script (or ``python -m step_perception.ros.main``)
started with ``--ros-args``; the test side is an rclpy node in its own context,
spun by a multi-threaded executor on a background thread.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from rclpy.context import Context
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from step_perception.ros.dds_profile import profile_env

PACKAGE_DIR = Path(__file__).resolve().parents[2]  # step_perception/ (the ROS package)
REPO = PACKAGE_DIR.parent
PARAMS_FILE = PACKAGE_DIR / "config" / "params.yaml"
DOMAIN_ID = int(os.environ.get("ROS_DOMAIN_ID", "42") or "42")

W, H = 640, 480  # default test frame size


def node_command() -> list[str]:
    """How to start the node: the console script if built, else ``python -m``."""
    found = shutil.which("perception_node")
    if found:
        return [found]
    built = REPO / "install" / "step_perception" / "lib" / "step_perception" / "perception_node"
    if built.is_file():
        return [str(built)]
    return [sys.executable, "-m", "step_perception.ros.main"]


def child_env() -> dict[str, str]:
    """Environment of the node process: same domain, the shipped DDS profile, our sources first."""
    env = dict(os.environ)
    env["ROS_DOMAIN_ID"] = str(DOMAIN_ID)
    env.pop("FASTDDS_BUILTIN_TRANSPORTS", None)  # the profile chooses the transports
    env.update(dds_env())
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONFAULTHANDLER"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(PACKAGE_DIR), env.get("PYTHONPATH", "")) if p
    )
    return env


def dds_env() -> dict[str, str]:
    """The middleware settings of every process of a test: Fast DDS with the shipped profile.

    The profile (config/fastdds.xml) is what env.sh and the launch file load; the tests use it
    even when env.sh was not sourced (config/fastdds3.xml on Kilted). ``child_env`` drops
    ``FASTDDS_BUILTIN_TRANSPORTS``: the profile chooses the transports.
    """
    env = {"RMW_IMPLEMENTATION": os.environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")}
    env.update(profile_env(os.environ.get("ROS_DISTRO", ""), PACKAGE_DIR / "config", os.environ))
    return env


def frame_boxes(index: int) -> list[tuple[int, int, int, int]]:
    """Ground-truth white boxes (x1, y1, x2, y2 pixel edges) of test frame ``index``."""
    k = index % 12
    boxes = [(40 + 30 * k, 100 + 10 * k, 120 + 30 * k, 160 + 10 * k)]
    if k % 2 == 0:
        boxes.append((480, 300, 560, 360))
    return boxes


def frame_pixels(index: int, width: int = W, height: int = H) -> np.ndarray[Any, Any]:
    """The bgr8 pixels of test frame ``index`` (12 distinct images, then they repeat)."""
    img = np.full((height, width, 3), 40, dtype=np.uint8)
    sx, sy = width / W, height / H
    for x1, y1, x2, y2 in frame_boxes(index):
        img[round(y1 * sy) : round(y2 * sy), round(x1 * sx) : round(x2 * sx)] = 255
    return img


def image_msg(
    index: int, stamp_ns: int, frame_id: str = "camera_optical", width: int = W, height: int = H
) -> Image:
    """A real sensor_msgs/Image (bgr8) of test frame ``index``."""
    msg = Image()
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    msg.header.frame_id = frame_id
    msg.height, msg.width, msg.encoding, msg.is_bigendian = height, width, "bgr8", 0
    msg.step = width * 3
    msg.data = frame_pixels(index, width, height).tobytes()
    return msg


def qos(reliable: bool, depth: int = 1) -> QoSProfile:
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
    )


def wait_for(pred: Callable[[], bool], timeout: float, step: float = 0.02) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Collector:
    """Keeps every message of one topic with its monotonic arrival time."""

    def __init__(self, node: Node, msg_type: Any, topic: str, reliable: bool = True) -> None:
        self._lock = threading.Lock()
        self._items: list[tuple[float, Any]] = []
        self.sub = node.create_subscription(msg_type, topic, self._cb, qos(reliable, depth=50))

    def _cb(self, msg: Any) -> None:
        with self._lock:
            self._items.append((time.monotonic(), msg))

    @property
    def msgs(self) -> list[Any]:
        with self._lock:
            return [m for _, m in self._items]

    @property
    def timed(self) -> list[tuple[float, Any]]:
        with self._lock:
            return list(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def wait(self, count: int, timeout: float) -> list[Any]:
        wait_for(lambda: len(self.msgs) >= count, timeout)
        return self.msgs


class Camera:
    """Publishes test frames at ``fps`` from a thread; remembers what it sent."""

    def __init__(
        self,
        node: Node,
        topic: str,
        fps: float = 30.0,
        *,
        reliable: bool = True,
        width: int = W,
        height: int = H,
        stamp_ns: Callable[[], int] = time.time_ns,
        frame_id: str = "camera_optical",
    ) -> None:
        self.pub = node.create_publisher(Image, topic, qos(reliable))
        self.fps, self.width, self.height = fps, width, height
        self.stamp_ns, self.frame_id = stamp_ns, frame_id
        self.sent: list[tuple[float, int, int]] = []  # (monotonic, stamp_ns, index)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index = 0
        self._msgs = [image_msg(i, 0, frame_id, width, height) for i in range(12)]

    def wait_matched(self, timeout: float = 10.0) -> bool:
        return wait_for(lambda: self.pub.get_subscription_count() > 0, timeout)

    def publish_one(self, index: int | None = None, stamp_ns: int | None = None) -> Image:
        i = self._index if index is None else index
        self._index = i + 1
        msg = self._msgs[i % 12]
        stamp = self.stamp_ns() if stamp_ns is None else stamp_ns
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp, 1_000_000_000)
        self.pub.publish(msg)
        self.sent.append((time.monotonic(), stamp, i))
        return msg

    def start(self) -> Camera:
        self.wait_matched()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        period = 1.0 / self.fps
        t0 = time.monotonic()
        n = 0
        while not self._stop.is_set():
            self.publish_one()
            n += 1
            self._stop.wait(max(0.0, t0 + n * period - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None

    def index_of(self, stamp_ns: int) -> int | None:
        for _, s, i in self.sent:
            if s == stamp_ns:
                return i
        return None


class Ros:
    """The test side of the graph: one context, one executor thread, nodes on demand."""

    def __init__(self) -> None:
        self.context = Context()
        rclpy.init(context=self.context, domain_id=DOMAIN_ID)
        self.executor = MultiThreadedExecutor(num_threads=2, context=self.context)
        self._nodes: list[Node] = []
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        with contextlib.suppress(Exception):
            self.executor.spin()

    def node(self, name: str) -> Node:
        node = Node(name, context=self.context)
        self.executor.add_node(node)
        self._nodes.append(node)
        return node

    def remove(self, node: Node) -> None:
        self.executor.remove_node(node)
        node.destroy_node()
        self._nodes.remove(node)

    def call(
        self,
        node: Node,
        srv_type: Any,
        name: str,
        request: Any,
        timeout: float = 10.0,
        *,
        idempotent: bool = False,
    ) -> Any:
        """Call service ``name`` from ``node``; raise ``TimeoutError`` after ``timeout``.

        ``idempotent`` (a query such as ``get_state``): send the request again every 2 s until
        one is answered. A fresh client is matched to the service when ``wait_for_service``
        returns, but the server's reply writer may not have matched the client's reply reader
        yet, so the first reply can be lost (seen once on Kilted: a ``get_state`` of a node that
        had just started went unanswered for 10 s). A request that changes state is sent once.
        """
        client = node.create_client(srv_type, name)
        try:
            deadline = time.monotonic() + timeout
            if not client.wait_for_service(timeout_sec=timeout):
                raise TimeoutError(f"service {name} not available")
            done = threading.Event()
            futures = []
            while True:
                future = client.call_async(request)
                future.add_done_callback(lambda _f: done.set())
                futures.append(future)
                left = deadline - time.monotonic()
                if done.wait(min(left, 2.0) if idempotent else max(left, 0.0)):
                    return next(f for f in futures if f.done()).result()
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"service {name} did not answer in {timeout} s ({len(futures)} sent)"
                    )
        finally:
            node.destroy_client(client)

    def close(self) -> None:
        for node in list(self._nodes):
            self.remove(node)
        self.executor.shutdown(timeout_sec=2.0)
        rclpy.try_shutdown(context=self.context)
        self._thread.join(5.0)


@dataclass
class NodeProcess:
    """A running node under test."""

    namespace: str
    proc: subprocess.Popen[bytes]
    log_path: Path

    @property
    def name(self) -> str:
        return f"{self.namespace.rstrip('/')}/step_perception"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # PYTHONFAULTHANDLER (child_env): SIGABRT writes every thread's stack to the log.
                self.proc.send_signal(signal.SIGABRT)
                try:
                    self.proc.wait(5.0)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(5.0)
        return int(self.proc.returncode)


def start_node(
    ros_node: Node,
    namespace: str,
    params: dict[str, object],
    log_dir: Path,
    *,
    params_file: Path | None = PARAMS_FILE,
    extra_args: Sequence[str] = (),
    wait_active: bool = True,
    timeout: float = 30.0,
    env: dict[str, str] | None = None,
) -> NodeProcess:
    """Start the node in ``namespace`` with ``-p`` overrides; wait until it is subscribed."""
    cmd = [*node_command(), "--ros-args", "-r", f"__ns:={namespace}"]
    if params_file is not None:
        cmd += ["--params-file", str(params_file)]
    for key, value in params.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        cmd += ["-p", f"{key}:={text}"]
    cmd += list(extra_args)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"node{namespace.replace('/', '_')}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**child_env(), **(env or {})}
        )
    handle = NodeProcess(namespace, proc, log_path)
    if wait_active:
        topic = f"{namespace.rstrip('/')}/image_raw"
        if params.get("image_transport") == "compressed":
            topic += "/compressed"
        ok = wait_for(
            lambda: (
                not handle.alive()
                or (
                    ros_node.count_subscribers(topic) > 0
                    and ros_node.count_publishers(f"{namespace.rstrip('/')}/detections") > 0
                )
            ),
            timeout,
        )
        if not ok or not handle.alive():
            handle.stop()
            raise RuntimeError(f"node did not come up:\n{handle.log()}")
        # Reliable volatile messages sent before both ends matched are lost: wait until every
        # endpoint the test made in this namespace (except inputs the node does not use) matched.
        prefix = namespace.rstrip("/") + "/"
        subs = [s for s in ros_node.subscriptions if s.topic_name.startswith(prefix)]
        pubs = [
            p
            for p in ros_node.publishers
            if p.topic_name.startswith(prefix) and ros_node.count_subscribers(p.topic_name) > 0
        ]
        wait_for(
            lambda: (
                all(s.get_publisher_count() > 0 for s in subs)
                and all(p.get_subscription_count() > 0 for p in pubs)
            ),
            5.0,
        )
        time.sleep(0.2)
    return handle


def publish_until_answered(
    camera: Camera, index: int, answers: Collector, timeout: float = 15.0, every: float = 1.0
) -> Any:
    """Publish frame ``index`` (fresh stamp each time) until an answer to one of them arrives.

    A reliable message sent before the writer side finished matching the reader is lost;
    retrying keeps such a discovery race from failing a test. Returns the answer.
    """
    end = time.monotonic() + timeout
    stamps: set[int] = set()
    while time.monotonic() < end:
        stamps.add(stamp_of(camera.publish_one(index)))
        t_next = time.monotonic() + every
        while time.monotonic() < min(t_next, end):
            for msg in answers.msgs:
                if stamp_of(msg) in stamps:
                    return msg
            time.sleep(0.02)
    raise AssertionError(f"frame {index} was never answered")


@contextlib.contextmanager
def running(camera: Camera) -> Iterator[Camera]:
    camera.start()
    try:
        yield camera
    finally:
        camera.stop()


def stamp_of(msg: Any) -> int:
    return int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec)


def diag_values(diags: Collector, name: str) -> dict[str, str]:
    """Key/values of node ``name``'s newest status on the collected ``/diagnostics``."""
    for arr in reversed(diags.msgs):
        for st in arr.status:
            if st.name.startswith(name):
                return {kv.key: kv.value for kv in st.values}
    return {}
