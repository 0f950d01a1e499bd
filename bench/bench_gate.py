"""The throttle decision is negligible: ``FrameGate.offer`` per frame vs receiving the frame.

A 30 fps stream of stamps goes through the real ``core.frames.FrameGate`` at 1 Hz (29 of 30
frames dropped by rate), and through a gate whose slot stays busy (every frame queued, replacing
the waiting one). The comparison is the cheapest part of receiving a 1080p / 4K bgr8 Image in
rclpy: ``rclpy.serialization.deserialize_message`` of the CDR bytes, measured here in the same
run (the full DDS receive costs more; bench_intake.py measures it). Also timed: reading the stamp
from raw CDR bytes (the ``raw=True`` path) and ``next_accept_stamp_ns``.

Median over ``--samples`` samples, in µs.

    . ./env.sh && python bench/bench_gate.py
"""

from __future__ import annotations

import argparse
import statistics
import struct
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


def _gate_stream_us(samples: int, frames: int, busy: bool) -> tuple[float, str]:
    """µs per offer over a 30 fps stream; the decisions seen, for the table."""
    per: list[float] = []
    seen: dict[str, int] = {}
    for _ in range(samples):
        now = [0]
        gate: FrameGate[None] = FrameGate(
            lambda now=now: now[0],  # type: ignore[misc]
            rate_hz=1.0,
            max_frame_age_s=2.0,
        )
        stamps = [1_000_000_000 + i * FRAME_NS for i in range(frames)]
        t0 = time.perf_counter()
        for stamp in stamps:
            now[0] = stamp
            if gate.offer(stamp, None) is Decision.SEND_NOW and not busy:
                gate.done()  # the request finished at once: the rate limit decides alone
        per.append((time.perf_counter() - t0) / frames)
        c = gate.counters()
        seen = {"sent": c.sent, "dropped_rate": c.dropped_rate, "replaced": c.replaced}
    return statistics.median(per) * 1e6, ", ".join(f"{k} {v}" for k, v in seen.items() if v)


def _deserialize_us(width: int, height: int, samples: int) -> float | None:
    try:
        from rclpy.serialization import deserialize_message, serialize_message
        from sensor_msgs.msg import Image
    except ImportError:
        return None
    msg = Image(height=height, width=width, encoding="bgr8", step=3 * width)
    msg.data = bytes(width * height * 3)
    raw = serialize_message(msg)
    return _per_call_us(lambda: deserialize_message(raw, Image), 3, samples)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--samples", type=int, default=9)
    args = ap.parse_args()

    rate_us, rate_seen = _gate_stream_us(args.samples, 3000, busy=False)
    busy_us, busy_seen = _gate_stream_us(args.samples, 3000, busy=True)
    gate: FrameGate[None] = FrameGate(lambda: 0, rate_hz=1.0)
    bound_us = _per_call_us(gate.next_accept_stamp_ns, 20000, args.samples)
    cdr = b"\x00\x01\x00\x00" + struct.pack("<iI", 1_700_000_000, 5) + bytes(64)
    stamp_us = _per_call_us(lambda: struct.unpack_from("<iI", cdr, 4), 20000, args.samples)

    rows = ["| benchmark | case | median | naive median | ratio |", "|---|---|---|---|---|"]
    for size, (w, h) in {"1080p": (1920, 1080), "4K": (3840, 2160)}.items():
        deser = _deserialize_us(w, h, args.samples)
        if deser is None:
            print("(rclpy not importable: run under . ./env.sh for the deserialize comparison)")
            continue
        for case, us, seen in (
            ("offer at 1 Hz from 30 fps", rate_us, rate_seen),
            ("offer while the slot is busy", busy_us, busy_seen),
        ):
            rows.append(
                f"| gate vs rclpy deserialize_message, {size} bgr8 | {case} ({seen}) | "
                f"{us:.2f} µs | {deser:.0f} µs | {deser / us:.0f}x |"
            )
    rows.append(f"| gate | next_accept_stamp_ns (the filter bound) | {bound_us:.2f} µs | - | - |")
    rows.append(
        f"| gate | stamp from raw CDR bytes (struct.unpack_from) | {stamp_us:.2f} µs | - | - |"
    )
    print("## bench_gate: per-frame throttle decision vs receiving the frame\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
