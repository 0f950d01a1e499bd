"""What the node benchmarks share: a camera process, the orchestrator's ROS side, the node's CPU.

Not a benchmark itself (``make bench`` runs ``bench_*.py`` only). The node under test is the
real ``perception_node`` process, started with the integration tests' ``start_node``; the model
server is the tests' ``model_server.ModelServer`` (a real OpenAI-compatible HTTP server with a
fixed service time, answering from the image it receives). Run as a script it is the camera:

    python bench/node_rig.py --topic T --transport raw|compressed --size WxH --fps F --times-file P
"""

# mypy: disallow-untyped-calls=False
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEST_DIR = ROOT / "step_perception" / "test" / "integration"
sys.path.insert(0, str(TEST_DIR))  # the integration tests' harness and model server
CLK_TCK = os.sysconf("SC_CLK_TCK")

os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")


def frame(width: int, height: int) -> Any:
    """A camera-like bgr8 frame: smooth shading plus sensor noise (JPEG sizes like a real one).

    Two bright boxes, so the model server finds objects and the node publishes detections.
    """
    import numpy as np

    rng = np.random.default_rng(7)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = 70 + 50 * np.sin(x / (width / 7.0)) * np.cos(y / (height / 5.0))
    img = np.stack([base, base * 0.8 + 20, 150 - base], axis=-1)
    img += rng.normal(0.0, 6.0, img.shape).astype(np.float32)
    for fx, fy in ((0.2, 0.3), (0.6, 0.55)):
        x0, y0 = int(fx * width), int(fy * height)
        img[y0 : y0 + height // 6, x0 : x0 + width // 8] = 255
    return np.clip(img, 0, 255).astype(np.uint8)


def run_camera(topic: str, transport: str, width: int, height: int, fps: float, log: str) -> None:
    """Publish one frame (fresh stamp each time) at ``fps``, reliable keep-last-1; log stamps."""
    import cv2
    import rclpy
    from rclpy.node import Node
    from rclpy.utilities import try_shutdown
    from ros_harness import qos
    from sensor_msgs.msg import CompressedImage, Image

    stop = False

    def _stop(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    bgr = frame(width, height)
    msg: Any
    if transport == "compressed":
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        msg = CompressedImage(format="bgr8; jpeg compressed bgr8")
        msg.data = jpeg.tobytes()
    else:
        msg = Image(height=height, width=width, encoding="bgr8", step=3 * width)
        msg.data = bgr.tobytes()
    msg.header.frame_id = "camera_optical"
    rclpy.init()
    node = Node("bench_camera")
    pub = node.create_publisher(type(msg), topic, qos(True))
    nxt = time.monotonic()
    with open(log, "w", buffering=1) as out:
        while not stop:
            now_ns = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
            pub.publish(msg)
            out.write(f"{now_ns}\n")
            nxt = max(nxt + 1.0 / fps, time.monotonic())
            time.sleep(max(0.0, nxt - time.monotonic()))
    node.destroy_node()
    try_shutdown()


class CameraProcess:
    """The camera in its own process; ``stamps_ns`` reads what it published so far."""

    def __init__(self, topic: str, transport: str, size: tuple[int, int], fps: float) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="bench_camera_")
        self.log = Path(self._tmp.name) / "stamps.txt"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--topic", topic]
        cmd += ["--transport", transport, "--size", f"{size[0]}x{size[1]}", "--fps", str(fps)]
        self.proc = subprocess.Popen([*cmd, "--times-file", str(self.log)])

    def stamps_ns(self) -> list[int]:
        """Stamps published so far (the last line may be half written: skipped)."""
        try:
            return [int(x) for x in self.log.read_text().split()[:-1]]
        except FileNotFoundError:
            return []

    def published(self, t0: float, t1: float) -> int:
        """Frames published in the wall-time window [t0, t1)."""
        return sum(1 for s in self.stamps_ns() if t0 <= s / 1e9 < t1)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # stuck inside publish(): only SIGKILL ends it
            self.proc.wait()
        self._tmp.cleanup()


def cpu_s(pid: int) -> float:
    """utime + stime of a process, every thread [s]."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def threads_cpu_s(pid: int) -> dict[str, float]:
    """CPU [s] per thread name (``comm``; Python threads show as the process name).

    From ``schedstat`` (nanoseconds on the CPU), finer than ``stat``'s 10 ms ticks.
    """
    out: dict[str, float] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            on_cpu_ns = int((task / "schedstat").read_text().split()[0])
        except OSError:  # the thread ended
            continue
        out[name] = out.get(name, 0.0) + on_cpu_ns / 1e9
    return out


class Graph:
    """The orchestrator's ROS side: /diagnostics, the node's outputs and services."""

    def __init__(self, name: str) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from ros_harness import Collector, Ros

        self.ros = Ros()
        self.node = self.ros.node(name)
        self.diags = Collector(self.node, DiagnosticArray, "/diagnostics")

    def collector(self, msg_type: Any, topic: str) -> Any:
        from ros_harness import Collector

        return Collector(self.node, msg_type, topic)

    def values(self, node_name: str) -> dict[str, str]:
        from ros_harness import diag_values

        return diag_values(self.diags, node_name)

    def fresh_values(self, node_name: str, timeout: float = 3.0) -> dict[str, str]:
        """The node's next /diagnostics status (published at 1 Hz)."""
        from ros_harness import wait_for

        n = len(self.diags.msgs)
        wait_for(lambda: len(self.diags.msgs) > n and bool(self.values(node_name)), timeout)
        return self.values(node_name)

    def enable(self, namespace: str, on: bool) -> None:
        from std_srvs.srv import SetBool

        res = self.ros.call(self.node, SetBool, f"{namespace}/enable", SetBool.Request(data=on))
        assert res.success, res.message

    def close(self) -> None:
        self.ros.close()


@contextlib.contextmanager
def node_process(graph: Graph, namespace: str, params: dict[str, object]) -> Iterator[Any]:
    """The real node in ``namespace`` (subscribed and publishing), stopped on exit."""
    from ros_harness import start_node

    with tempfile.TemporaryDirectory(prefix="bench_node_") as logs:
        node = start_node(graph.node, namespace, params, Path(logs))
        try:
            yield node
        finally:
            rc = node.stop()
            if rc != 0:
                print(f"bench: node exited rc={rc}:\n{node.log()[-2000:]}", file=sys.stderr)


def machine() -> str:
    """One line: date, CPU model and count, load average, ROS distro."""
    model = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return (
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} x {model}, "
        f"load average {load[0]:.2f} at start, ROS {os.environ.get('ROS_DISTRO', '?')}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--transport", choices=["raw", "compressed"], default="raw")
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--times-file", required=True)
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    run_camera(args.topic, args.transport, w, h, args.fps, args.times_file)


if __name__ == "__main__":
    main()
