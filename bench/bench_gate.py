"""What the throttle decision costs: ``FrameGate.offer`` alone, and as a share of a dropped frame.

A 30 fps stream of stamps goes through the real ``core.frames.FrameGate`` at 1 Hz (29 of 30
frames dropped by rate), and through a gate whose slot stays busy (every frame queued, replacing
the waiting one). That is the gate's own cost per frame.

The gate is not a saving by itself: the node's image callback gets a deserialised message, so a
frame the gate drops today has already cost rclpy's ``deserialize_message`` (plus the DDS
receive before it, measured by bench_intake.py). The second table times exactly that in-process
path for a dropped 1080p / 4K bgr8 Image, ``deserialize_message`` of its CDR bytes followed by
``offer``, and gives the gate's share of it. No ratio here is a speed-up of ours over a naive way.

Median over ``--samples`` samples, in µs.

    . ./env.sh && python bench/bench_gate.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from step_perception.core.frames import Decision, FrameGate

FPS = 30
FRAME_NS = 1_000_000_000 // FPS


def _per_call_us(fn: Callable[[], object], calls: int, samples: int) -> float:
    fn()
    per = []
    for _ in range(samples):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        per.append((time.perf_counter() - t0) / calls)
    return statistics.median(per) * 1e6


def _gate(now: list[int]) -> FrameGate[object]:
    return FrameGate(lambda: now[0], rate_hz=1.0, max_frame_age_s=2.0)


def _stream_us(
    samples: int, frames: int, busy: bool, receive: Callable[[], object] | None = None
) -> tuple[float, str]:
    """µs per frame over a 30 fps stream (``receive()`` first, if given); decisions seen."""
    per: list[float] = []
    seen: dict[str, int] = {}
    for _ in range(samples):
        now = [0]
        gate = _gate(now)
        stamps = [1_000_000_000 + i * FRAME_NS for i in range(frames)]
        t0 = time.perf_counter()
        for stamp in stamps:
            now[0] = stamp
            payload = receive() if receive is not None else None
            if gate.offer(stamp, payload) is Decision.SEND_NOW and not busy:
                gate.done()  # the request finished at once: the rate limit decides alone
        per.append((time.perf_counter() - t0) / frames)
        c = gate.counters()
        seen = {"sent": c.sent, "dropped_rate": c.dropped_rate, "replaced": c.replaced}
    return statistics.median(per) * 1e6, ", ".join(f"{k} {v}" for k, v in seen.items() if v)


def _receive(width: int, height: int) -> Callable[[], object] | None:
    """What rclpy does with a received bgr8 Image before the node's callback sees it."""
    try:
        from rclpy.serialization import deserialize_message, serialize_message
        from sensor_msgs.msg import Image
    except ImportError:
        return None
    msg = Image(height=height, width=width, encoding="bgr8", step=3 * width)
    msg.data = bytes(width * height * 3)
    raw = serialize_message(msg)
    return lambda: deserialize_message(raw, Image)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samples", type=int, default=9)
    args = ap.parse_args()

    rate_us, rate_seen = _stream_us(args.samples, 3000, busy=False)
    busy_us, busy_seen = _stream_us(args.samples, 3000, busy=True)
    gate = _gate([0])
    bound_us = _per_call_us(gate.next_accept_stamp_ns, 20000, args.samples)

    print("## bench_gate: the throttle decision alone\n")
    print("| benchmark | case | median |")
    print("|---|---|---|")
    print(f"| gate | offer at 1 Hz from 30 fps ({rate_seen}) | {rate_us:.2f} µs |")
    print(f"| gate | offer while the slot is busy ({busy_seen}) | {busy_us:.2f} µs |")
    print(f"| gate | next_accept_stamp_ns (the content-filter bound) | {bound_us:.2f} µs |")

    print("\n## bench_gate: the gate's share of a frame it drops today (in process, after DDS)\n")
    print("| benchmark | case | median | ratio (what it compares) |")
    print("|---|---|---|---|")
    for size, (w, h) in {"1080p": (1920, 1080), "4K": (3840, 2160)}.items():
        receive = _receive(w, h)
        if receive is None:
            print("(rclpy not importable: run under . ./env.sh for the dropped-frame cost)")
            return
        frames = 300 if size == "1080p" else 90
        dropped_us, seen = _stream_us(args.samples, frames, busy=False, receive=receive)
        print(
            f"| dropped frame, {size} bgr8 | deserialize_message + offer at 1 Hz from 30 fps "
            f"({seen}) | {dropped_us:.0f} µs | offer / (deserialize + offer) = "
            f"{100 * rate_us / dropped_us:.3f} % |"
        )


if __name__ == "__main__":
    main()
