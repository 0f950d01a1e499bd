"""CPU cost of a throttled (dropped) camera frame in the receiving process, over real DDS.

A publisher process sends camera frames (a rendered scene, upscaled) at 30 fps with reliable
QoS: 1080p and 4K bgr8 ``sensor_msgs/Image``, and 1080p JPEG ``CompressedImage``.
A subscriber process throttles them to 1 Hz with the real
``core.frames.FrameGate`` (a simulated 0.3 s model request holds the slot) and measures its own
CPU time (``time.process_time``: every thread, DDS receive threads included) per *input* frame:

* ``plain``: an ordinary subscription; every frame is transported and deserialized, the gate
  drops 29 of 30 by stamp.
* ``raw``: ``raw=True``; the stamp is read from the CDR bytes, no deserialization.
* ``filtered``: a DDS content filter on ``header.stamp`` that the gate moves: closed while the
  request is in flight, reopened at the next stamp it will accept. Jazzy's rclpy has no
  content-filter API, so it is the node's own ``step_perception.ros.content_filter.StampFilter``
  (rcl's C API through ctypes). With Fast DDS
  2.14.5 and Image/CompressedImage this kills the *publisher* (writer-side filter evaluation,
  eProsima/Fast-DDS#4878), so it runs last, in its own subscriber, and the table reports what
  happened to the publisher instead of a number when no frame arrives.

Plain and raw run ``--rounds`` times in turn (plain, raw, plain, raw), the filter once; each run
is cut into 1 s chunks, and the table shows medians over the chunks. The naive baseline is the plain
subscription measured in the same run. Needs the ROS environment:

    . ./env.sh && ROS_DOMAIN_ID=44 python bench/bench_intake.py [--sizes 1080p,4k,1080p-jpeg]
"""

# mypy: disallow-untyped-calls=False
# (rclpy ships no stubs for its messages and QoS classes.)
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from step_perception.core.frames import Decision, FrameGate
from step_perception_tools.bags import header_stamp_ns

if TYPE_CHECKING:
    from step_perception.ros.content_filter import StampFilter

#: Input streams: bgr8 Images, and JPEG CompressedImages (image_transport's ``compressed``).
SIZES: dict[str, tuple[int, int]] = {
    "1080p": (1920, 1080),
    "4k": (3840, 2160),
    "1080p-jpeg": (1920, 1080),
}


def _msg_type(size: str) -> Any:
    from sensor_msgs.msg import CompressedImage, Image

    return CompressedImage if size.endswith("-jpeg") else Image


FPS = 30.0
RATE_HZ = 1.0
REQUEST_S = 0.3  # simulated model latency: the filter stays closed this long per admitted frame
TOPIC = "/bench_intake/image_raw"
CHUNK_S = 1.0
MODES = ("plain", "raw", "filtered")


# -- publisher -------------------------------------------------------------------------------


def run_pub(size: str, times_file: str) -> None:
    import cv2
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.utilities import try_shutdown
    from sensor_msgs.msg import CompressedImage, Image
    from step_perception_tools.scenes import render_scene

    stop = False

    def _stop(_sig: int, _frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    width, height = SIZES[size]
    scene = render_scene(7, 0)
    bgr = cv2.resize(
        cv2.cvtColor(scene.rgb, cv2.COLOR_RGB2BGR), (width, height), interpolation=cv2.INTER_CUBIC
    )
    rclpy.init()
    node = Node("bench_intake_pub")
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST
    )
    if size.endswith("-jpeg"):
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, 90])
        assert ok
        msg = CompressedImage(format="bgr8; jpeg compressed bgr8")
        msg.data = jpeg.tobytes()
    else:
        msg = Image(height=height, width=width, encoding="bgr8", step=3 * width)
        msg.data = bgr.tobytes()
    msg.header.frame_id = "camera_optical"
    pub = node.create_publisher(type(msg), TOPIC, qos)
    nxt = time.monotonic()
    # One line per frame, flushed: the orchestrator reads it even if publish() never returns.
    with open(times_file, "w", buffering=1) as log:
        while not stop:
            now_ns = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now_ns, 1_000_000_000)
            pub.publish(msg)
            log.write(f"{now_ns / 1e9:.6f}\n")
            nxt = max(nxt + 1.0 / FPS, time.monotonic())
            time.sleep(max(0.0, nxt - time.monotonic()))
    node.destroy_node()
    try_shutdown()


# -- subscriber ------------------------------------------------------------------------------


@dataclass
class _Probe:
    """One subscription plus the real throttle; counts what it saw."""

    mode: str
    gate: FrameGate[None]
    cft: StampFilter | None
    received: int = 0
    admitted: int = 0
    busy_until: float | None = None
    sub: Any = None
    cft_enabled: bool = False
    filter_set_s: list[float] = field(default_factory=list)

    def on_msg(self, msg: Any) -> None:
        stamp = msg.header.stamp
        self._offer(int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec))

    def on_raw(self, data: bytes) -> None:
        self._offer(header_stamp_ns(data))

    def _offer(self, stamp_ns: int) -> None:
        self.received += 1
        if self.gate.offer(stamp_ns, None) is Decision.SEND_NOW:
            self.admitted += 1
            self.busy_until = time.monotonic() + REQUEST_S
            self.push_filter()

    def poll(self) -> None:
        """Finish the simulated request when its time is up (the node's done callback)."""
        if self.busy_until is not None and time.monotonic() >= self.busy_until:
            self.busy_until = None
            self.gate.done()
            self.push_filter()

    def push_filter(self) -> None:
        if self.cft is None or self.sub is None:
            return
        t0 = time.perf_counter()
        # The node's own filter: it skips a bound that would not change (as in the node).
        if self.cft.set_bound(self.gate.next_accept_stamp_ns()):
            self.filter_set_s.append(time.perf_counter() - t0)


def _spin_chunks(
    node: Any, probe: _Probe | None, seconds: float, rclpy: Any
) -> list[tuple[float, float, float, int]]:
    """Spin for ``seconds``; return (t_start, t_end, cpu_s, received) per CHUNK_S chunk."""
    chunks: list[tuple[float, float, float, int]] = []
    t_start, c_start = time.time(), time.process_time()
    r_start = probe.received if probe else 0
    end = t_start + seconds
    while True:
        rclpy.spin_once(node, timeout_sec=0.02)
        if probe is not None:
            probe.poll()
        now = time.time()
        if now - t_start >= CHUNK_S:
            cpu = time.process_time()
            rec = probe.received if probe else 0
            chunks.append((t_start, now, cpu - c_start, rec - r_start))
            t_start, c_start, r_start = now, cpu, rec
            if now >= end:
                return chunks


def run_sub(size: str, modes: tuple[str, ...], window: float, rounds: int) -> None:
    import rclpy
    from rclpy.node import Node
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.utilities import try_shutdown
    from step_perception.ros.content_filter import StampFilter

    msg_type = _msg_type(size)
    rclpy.init()
    node = Node("bench_intake_sub")
    qos = QoSProfile(
        depth=1, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST
    )
    out: dict[str, Any] = {"size": size, "modes": {m: [] for m in modes}}
    out["idle"] = _spin_chunks(node, None, 2.0, rclpy)
    for _ in range(rounds):
        for mode in modes:
            probe = _Probe(mode, FrameGate(time.time_ns, rate_hz=RATE_HZ), None)
            if mode == "raw":
                probe.sub = node.create_subscription(msg_type, TOPIC, probe.on_raw, qos, raw=True)
            else:
                probe.sub = node.create_subscription(msg_type, TOPIC, probe.on_msg, qos)
            deadline = time.monotonic() + 30.0
            while probe.received == 0 and time.monotonic() < deadline:
                rclpy.spin_once(node, timeout_sec=0.05)
                probe.poll()
            if probe.received == 0:
                raise SystemExit(f"bench_intake: no {size} frame arrived in 30 s ({mode})")
            if mode == "filtered":
                # Matched and flowing: from now on the gate drives the filter.
                probe.cft = StampFilter(probe.sub)
                probe.cft_enabled = probe.cft.enable()
                probe.push_filter()
            _spin_chunks(node, probe, 1.0, rclpy)  # settle
            chunks = _spin_chunks(node, probe, window, rclpy)
            out["modes"][mode].append(
                {
                    "chunks": chunks,
                    "cft_enabled": probe.cft_enabled,
                    "counters": asdict(probe.gate.counters()),
                    "filter_set_ms": [t * 1e3 for t in probe.filter_set_s],
                }
            )
            if mode == "filtered" and sum(c[3] for c in chunks) == 0:
                # Writer stuck in Fast DDS's filter (see README): shutting down would hang too.
                print(json.dumps(out), flush=True)
                os._exit(0)
            node.destroy_subscription(probe.sub)
    print(json.dumps(out), flush=True)
    node.destroy_node()
    try_shutdown()


# -- orchestration ---------------------------------------------------------------------------


def _read_times(path: Path) -> list[float]:
    try:
        lines = path.read_text().split()
    except FileNotFoundError:
        return []
    return [float(x) for x in lines[:-1]]  # the last line may be half written


def _sub(size: str, modes: tuple[str, ...], window: float, rounds: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "sub", "--size", size]
    cmd += ["--modes", ",".join(modes), "--window", str(window), "--rounds", str(rounds)]
    sub = subprocess.run(cmd, capture_output=True, text=True, timeout=240, check=False)
    if sub.returncode != 0:
        raise SystemExit(f"subscriber failed ({sub.returncode}):\n{sub.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(sub.stdout.strip().splitlines()[-1])
    return result


def _measure(size: str, window: float, rounds: int, with_cft: bool) -> dict[str, Any]:
    """Run one publisher; plain/raw subscribers first, the content filter last (it may break it)."""
    os.environ.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    with tempfile.TemporaryDirectory(prefix="bench_intake_") as tmp:
        times_file = Path(tmp) / "pub_times.txt"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--role", "pub", "--size", size]
        pub = subprocess.Popen([*cmd, "--times-file", str(times_file)])
        try:
            result = _sub(size, ("plain", "raw"), window, rounds)
            if with_cft:
                cft = _sub(size, ("filtered",), window, 1)
                result["modes"].update(cft["modes"])
                time.sleep(1.0)
                recent = [t for t in _read_times(times_file) if t > time.time() - 3.0]
                rc = pub.poll()
                if rc is not None:
                    result["publisher"] = f"exited rc={rc}"
                elif not recent:
                    result["publisher"] = "stalled: 0 frames published in the last 3 s"
                else:
                    result["publisher"] = f"ok: {len(recent) / 3.0:.0f} fps in the last 3 s"
        finally:
            pub.send_signal(signal.SIGTERM)
            try:
                pub.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pub.kill()  # stuck inside publish(): only SIGKILL ends it
                pub.wait()
        result["pub_times"] = _read_times(times_file)
    return result


def _per_frame(runs: list[dict[str, Any]], times: list[float]) -> dict[str, float]:
    """Median over chunks of CPU ms per published frame, plus input and receive rates."""
    ms, ms_rx, fps_in, fps_rx = [], [], [], []
    for run in runs:
        for t0, t1, cpu, received in run["chunks"]:
            published = sum(1 for t in times if t0 <= t < t1)
            fps_in.append(published / (t1 - t0))
            fps_rx.append(received / (t1 - t0))
            if published:
                ms.append(cpu * 1e3 / published)
            if received:
                ms_rx.append(cpu * 1e3 / received)
    return {
        "ms": statistics.median(ms) if ms else math.nan,
        "ms_rx": statistics.median(ms_rx) if ms_rx else math.nan,
        "fps_in": statistics.median(fps_in),
        "fps_rx": statistics.median(fps_rx),
        "chunks": float(len(fps_in)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--role", choices=["main", "pub", "sub"], default="main")
    ap.add_argument("--size", choices=sorted(SIZES), default="1080p")
    ap.add_argument("--times-file", default="", help="pub: where to log publish times")
    ap.add_argument("--modes", default="plain,raw", help="sub: comma-separated modes")
    ap.add_argument("--sizes", default="1080p,4k,1080p-jpeg", help="main: sizes")
    ap.add_argument(
        "--cft-sizes", default="1080p,1080p-jpeg", help="main: sizes that also try the filter"
    )
    ap.add_argument("--window", type=float, default=3.0, help="seconds measured per run")
    ap.add_argument("--rounds", type=int, default=2, help="runs per mode (interleaved)")
    args = ap.parse_args()
    if args.role == "pub":
        run_pub(args.size, args.times_file)
        return
    if args.role == "sub":
        run_sub(args.size, tuple(args.modes.split(",")), args.window, args.rounds)
        return

    from step_perception.ros.content_filter import FILTER_EXPRESSION

    print(f"## bench_intake: CPU per input frame, {FPS:.0f} fps in, gated to {RATE_HZ:g} Hz\n")
    print(
        f"RMW {os.environ.get('RMW_IMPLEMENTATION', '?')}, FASTDDS_BUILTIN_TRANSPORTS="
        f"{os.environ.get('FASTDDS_BUILTIN_TRANSPORTS', 'LARGE_DATA')}, reliable keep-last-1; "
        f"filter `{FILTER_EXPRESSION}`\n"
    )
    rows = ["| benchmark | case | median | naive median | ratio |", "|---|---|---|---|---|"]
    extra = [
        "| size | case | input fps | received fps | CPU/received frame | chunks | is_cft_enabled "
        "| filter set ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for size in args.sizes.split(","):
        res = _measure(size, args.window, args.rounds, size in args.cft_sizes.split(","))
        times = res["pub_times"]
        idle_ms = statistics.median(c[2] * 1e3 / (FPS * (c[1] - c[0])) for c in res["idle"])
        plain = _per_frame(res["modes"]["plain"], times)["ms"]
        rows.append(
            f"| intake {size} | plain subscription, CPU/input frame | {plain:.2f} ms | - | - |"
        )
        for mode, runs in res["modes"].items():
            st = _per_frame(runs, times)
            sets = [t for r in runs for t in r["filter_set_ms"]]
            cft = str(all(r["cft_enabled"] for r in runs)) if mode == "filtered" else "-"
            set_ms = f"{statistics.median(sets):.3f}" if sets else "-"
            extra.append(
                f"| {size} | {mode} | {st['fps_in']:.1f} | {st['fps_rx']:.1f} | "
                f"{st['ms_rx']:.2f} ms | {st['chunks']:.0f} | {cft} | {set_ms} |"
            )
            if mode == "plain":
                continue
            if mode == "filtered" and st["fps_rx"] == 0:
                rows.append(
                    f"| intake {size} | content-filtered subscription | no frames after the "
                    f"filter was set; publisher {res.get('publisher', '?')} | {plain:.2f} ms | - |"
                )
                continue
            rows.append(
                f"| intake {size} | {mode} subscription, CPU/input frame | {st['ms']:.2f} ms | "
                f"{plain:.2f} ms (plain) | {plain / st['ms']:.2f}x |"
            )
        if "publisher" in res:
            notes.append(f"{size} publisher after the filtered run: {res['publisher']}")
        rows.append(
            f"| intake {size} | idle process (no subscription), CPU per 1/{FPS:.0f} s | "
            f"{idle_ms:.2f} ms | - | - |"
        )
    print("\n".join(rows))
    print()
    print("\n".join(extra))
    for note in notes:
        print(f"\n- {note}")


if __name__ == "__main__":
    main()
