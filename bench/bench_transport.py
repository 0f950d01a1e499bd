"""Delivered fraction of raw camera frames between two local processes, per Fast DDS profile.

A publisher process sends bgr8 ``sensor_msgs/Image`` frames (640x480 up to 3840x2160) at 1, 10
and 30 fps, best effort and reliable, to a subscriber process; the table shows the fraction of
the sent frames the subscriber received, the longest gap between two received frames, and the
rate the publisher reached. Each profile runs its own pair of processes, whose only difference is
the Fast DDS configuration in their environment; the profiles take turns stream by stream, so
they see the same machine load:

* ``default``: Fast DDS as shipped (no XML file, no ``FASTDDS_BUILTIN_TRANSPORTS``): UDPv4 + SHM
  with a 512 KiB shared-memory segment.
* ``previous``: what env.sh set before 2026-12-01: ``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA`` (UDP
  discovery, TCP for everything else, SHM with the same 512 KiB segment for local data) and an XML
  file with only the 100 ms writer heartbeat.
* ``ours``: the shipped profile of this distro (``step_perception/config/fastdds.xml`` through
  ``FASTRTPS_DEFAULT_PROFILES_FILE``; on Kilted ``fastdds3.xml`` through
  ``FASTDDS_DEFAULT_PROFILES_FILE``, see ``step_perception.ros.dds_profile``).
* ``ours-shmN``: the same file with an N MiB shared-memory segment instead of 64 MiB (a
  temporary copy), to measure what the segment size does.

Publisher QoS is the camera driver's: keep-last 5 (ROS sensor-data depth), best effort or
reliable. The reader keeps the last 10 and takes frames with ``raw=True`` (the stamp is read from
the CDR bytes), so that a slow Python callback does not count as transport loss. The publisher
waits until it is matched and then 1 s more (SHM/TCP connections are made after discovery)
before the first frame, and stays 1 s after the last one (reliable: until all are acknowledged,
up to 5 s); the subscriber counts what it got 1 s after that.

    . ./env.sh && ROS_DOMAIN_ID=61 python bench/bench_transport.py
    python bench/bench_transport.py --profiles ours --sizes 640x480 --fps 30 --seconds 60

Prints one markdown table; exit 0.
"""

# mypy: disallow-untyped-calls=False
from __future__ import annotations

import argparse
import itertools
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from step_perception.ros.dds_profile import fastdds_profile

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "step_perception" / "config"
SHIPPED_SEGMENT = "<segment_size>67108864</segment_size>"
SIZES = {
    "640x480": (640, 480),
    "1280x720": (1280, 720),
    "1920x1080": (1920, 1080),
    "3840x2160": (3840, 2160),
}
PROFILES = ("default", "previous", "ours", "ours-shmN")
PREVIOUS_XML = """<?xml version="1.0" encoding="UTF-8" ?>
<profiles xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <data_writer profile_name="previous_writer" is_default_profile="true">
    <times><heartbeatPeriod><sec>0</sec><nanosec>100000000</nanosec></heartbeatPeriod></times>
  </data_writer>
</profiles>
"""


@dataclass(frozen=True)
class Cell:
    """One measured stream."""

    profile: str
    size: str
    fps: float
    reliable: bool
    sent: int
    received: int
    max_gap_s: float
    pub_rate: float

    @property
    def fraction(self) -> float:
        return self.received / self.sent if self.sent else 0.0


def profile_env(profile: str) -> dict[str, str]:
    """The child environment of one profile (everything else inherited)."""
    env = dict(os.environ)
    for key in (
        "FASTRTPS_DEFAULT_PROFILES_FILE",
        "FASTDDS_DEFAULT_PROFILES_FILE",
        "FASTDDS_BUILTIN_TRANSPORTS",
        "RMW_FASTRTPS_USE_QOS_FROM_XML",
    ):
        env.pop(key, None)
    env["RMW_IMPLEMENTATION"] = "rmw_fastrtps_cpp"
    env["PYTHONUNBUFFERED"] = "1"
    if profile == "previous":
        env["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
        previous = Path(tempfile.gettempdir()) / "bench_transport_previous.xml"
        previous.write_text(PREVIOUS_XML)
        env["FASTRTPS_DEFAULT_PROFILES_FILE"] = str(previous)
    elif profile == "ours" or profile.startswith("ours-shm"):
        shipped = fastdds_profile(os.environ.get("ROS_DISTRO", ""))
        path = CONFIG_DIR / shipped.file_name
        if profile != "ours":
            mib = int(profile.removeprefix("ours-shm"))
            text = path.read_text()
            if SHIPPED_SEGMENT not in text:
                raise ValueError(f"{path} has no {SHIPPED_SEGMENT}")
            path = Path(tempfile.gettempdir()) / f"bench_transport_{profile}_{shipped.file_name}"
            path.write_text(
                text.replace(SHIPPED_SEGMENT, f"<segment_size>{mib * 1024 * 1024}</segment_size>")
            )
        env[shipped.variable] = str(path)
    elif profile != "default":
        raise ValueError(f"unknown profile {profile!r}; one of {PROFILES}")
    return env


# ----------------------------------------------------------------------------- child processes


def _qos(reliable: bool, depth: int) -> Any:
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
    )


def _commands() -> Iterator[dict[str, Any]]:
    for line in sys.stdin:
        if line.strip():
            yield json.loads(line)


def _reply(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _child(role: str) -> int:
    import rclpy
    from rclpy.duration import Duration
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from sensor_msgs.msg import Image

    rclpy.init()
    node = Node(f"bench_transport_{role}")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    lock = threading.Lock()
    arrivals: dict[str, list[tuple[float, int]]] = {}
    subs: dict[str, Any] = {}

    def on_raw(topic: str, data: bytes) -> None:
        # CDR: 4-byte encapsulation header, then header.stamp.sec (int32), .nanosec (uint32).
        _sec, index = struct.unpack_from("<iI", data, 4)
        with lock:
            if topic in arrivals:  # not one that arrives after its result was taken
                arrivals[topic].append((time.monotonic(), index))

    _reply({"ready": True})
    for cmd in _commands():
        op = cmd["op"]
        if op == "sub":
            topic = cmd["topic"]
            arrivals[topic] = []
            subs[topic] = node.create_subscription(
                Image,
                topic,
                lambda d, t=topic: on_raw(t, d),
                _qos(cmd["reliable"], cmd.get("depth", 10)),
                raw=True,
            )
            _reply({"ok": True})
        elif op == "result":
            topic = cmd["topic"]
            node.destroy_subscription(subs.pop(topic))
            with lock:
                got = arrivals.pop(topic)
            times = [t for t, _ in got]
            gaps = [b - a for a, b in itertools.pairwise(times)]
            _reply({"received": len({i for _, i in got}), "max_gap_s": max(gaps, default=0.0)})
        elif op == "pub":
            width, height = cmd["width"], cmd["height"]
            pub = node.create_publisher(Image, cmd["topic"], _qos(cmd["reliable"], cmd["depth"]))
            msg = Image(height=height, width=width, encoding="bgr8", step=width * 3)
            msg.header.frame_id = "camera_optical"
            msg.data = bytes(range(256)) * (width * height * 3 // 256)
            end = time.monotonic() + 15.0
            while pub.get_subscription_count() == 0 and time.monotonic() < end:
                time.sleep(0.02)
            time.sleep(1.0)
            period, count = 1.0 / cmd["fps"], cmd["count"]
            t0 = time.monotonic()
            for i in range(count):
                msg.header.stamp.sec, msg.header.stamp.nanosec = 1, i
                pub.publish(msg)
                time.sleep(max(0.0, t0 + (i + 1) * period - time.monotonic()))
            elapsed = time.monotonic() - t0
            if cmd["reliable"]:  # let the last samples be repaired before the writer goes
                pub.wait_for_all_acked(Duration(seconds=5))
            time.sleep(1.0)
            node.destroy_publisher(pub)
            _reply({"sent": count, "rate": count / elapsed})
        elif op == "quit":
            break
    executor.shutdown(timeout_sec=1.0)
    spinner.join(timeout=5.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# ----------------------------------------------------------------------------- parent


class _Child:
    def __init__(self, role: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--role", role],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        self.ask(None)

    def ask(self, cmd: dict[str, Any] | None) -> dict[str, Any]:
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        if cmd is not None:
            stdin.write(json.dumps(cmd) + "\n")
            stdin.flush()
        line = stdout.readline()
        if not line:
            raise RuntimeError(f"bench child exited (rc {self.proc.wait()})")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def close(self) -> None:
        stdin: IO[str] | None = self.proc.stdin
        try:
            if stdin is not None:
                stdin.write('{"op": "quit"}\n')
                stdin.flush()
            self.proc.wait(10.0)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def run_all(
    profiles: list[str],
    sizes: list[str],
    rates: list[float],
    seconds: float,
    min_frames: int,
    writer_depth: int = 5,
    reader_depth: int = 10,
) -> list[Cell]:
    """Measure every (size, fps, reliability) cell; one publisher/subscriber pair per profile.

    The profiles take turns cell by cell, so that each cell sees the same machine load.
    """
    pairs = {p: (_Child("sub", profile_env(p)), _Child("pub", profile_env(p))) for p in profiles}
    cells: list[Cell] = []
    try:
        for size in sizes:
            for fps in rates:
                for reliable in (False, True):
                    for profile, (sub, pub) in pairs.items():
                        cells.append(
                            _measure(
                                sub,
                                pub,
                                profile,
                                size,
                                fps,
                                reliable,
                                seconds,
                                min_frames,
                                writer_depth,
                                reader_depth,
                            )
                        )
    finally:
        for sub, pub in pairs.values():
            pub.close()
            sub.close()
    return cells


def _measure(
    sub: _Child,
    pub: _Child,
    profile: str,
    size: str,
    fps: float,
    reliable: bool,
    seconds: float,
    min_frames: int,
    writer_depth: int,
    reader_depth: int = 10,
) -> Cell:
    width, height = SIZES[size]
    topic = f"/bench/{profile}/s{width}x{height}_f{int(fps)}_{int(reliable)}"
    count = max(min_frames, round(fps * seconds))
    sub.ask({"op": "sub", "topic": topic, "reliable": reliable, "depth": reader_depth})
    sent = pub.ask(
        {
            "op": "pub",
            "topic": topic,
            "width": width,
            "height": height,
            "fps": fps,
            "count": count,
            "reliable": reliable,
            "depth": writer_depth,
        }
    )
    time.sleep(1.0)
    got = sub.ask({"op": "result", "topic": topic})
    cell = Cell(
        profile, size, fps, reliable, sent["sent"], got["received"], got["max_gap_s"], sent["rate"]
    )
    qos = "reliable" if reliable else "best eff"
    print(
        f"  {profile:8s} {size:9s} {fps:4.0f} fps {qos}: {cell.received}/{cell.sent}"
        f" ({100 * cell.fraction:.1f} %), max gap {cell.max_gap_s:.2f} s,"
        f" sent at {cell.pub_rate:.1f} fps, load {os.getloadavg()[0]:.1f}",
        file=sys.stderr,
        flush=True,
    )
    return cell


def table(cells: list[Cell], profiles: list[str]) -> str:
    """Markdown: one row per (size, fps, QoS), one column per profile."""
    by_key = {(c.size, c.fps, c.reliable, c.profile): c for c in cells}
    head = "| size | fps | QoS | " + " | ".join(f"{p}: delivered (max gap)" for p in profiles)
    lines = [head + " | sent at (fps) |", "|---|---|---|" + "---|" * (len(profiles) + 1)]
    keys = sorted(
        {(c.size, c.fps, c.reliable) for c in cells}, key=lambda k: (SIZES[k[0]][0], k[1], k[2])
    )
    for size, fps, reliable in keys:
        row = [size, f"{fps:g}", "reliable" if reliable else "best effort"]
        rates = []
        for p in profiles:
            c = by_key.get((size, fps, reliable, p))
            if c is None:
                row.append("-")
                continue
            row.append(f"{c.received}/{c.sent} = {100 * c.fraction:.1f} % ({c.max_gap_s:.2f} s)")
            rates.append(f"{c.pub_rate:.1f}")
        lines.append("| " + " | ".join(row) + " | " + " / ".join(rates) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("sub", "pub"), help=argparse.SUPPRESS)
    parser.add_argument("--profiles", default="default,ours", help=f"comma list of {PROFILES}")
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma list of WxH")
    parser.add_argument("--fps", default="1,10,30", help="comma list of frame rates")
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each stream")
    parser.add_argument("--writer-depth", type=int, default=5, help="publisher keep-last depth")
    parser.add_argument("--reader-depth", type=int, default=10, help="subscriber keep-last depth")
    parser.add_argument("--min-frames", type=int, default=20, help="frames per stream at least")
    args = parser.parse_args(argv)
    if args.role:
        return _child(args.role)
    profiles = [p for p in args.profiles.split(",") if p]
    sizes = [s for s in args.sizes.split(",") if s]
    rates = [float(f) for f in args.fps.split(",") if f]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    cells = run_all(
        profiles, sizes, rates, args.seconds, args.min_frames, args.writer_depth, args.reader_depth
    )
    print(
        f"bench_transport: {started}, {os.cpu_count()} cores, load average at start {load:.2f},"
        f" at end {os.getloadavg()[0]:.2f}; {args.seconds:g} s per stream"
        f" (at least {args.min_frames} frames)\n"
    )
    print(table(cells, profiles))
    return 0


if __name__ == "__main__":
    sys.exit(main())
