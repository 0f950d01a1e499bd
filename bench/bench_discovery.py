"""Time until two fresh local processes have matched all their endpoints, per Fast DDS profile.

Each round starts a talker process (6 reliable publishers, like ``step-perception record``'s
inputs) and a listener process (6 subscriptions) at the same moment, in a fresh domain
participant each, and measures on the talker side the time from its start until every publisher
has matched, then the time until a first message on each topic has reached the listener. Profiles
alternate round by round, so both see the same machine load. Profiles are those of
``bench_transport.py`` (``default``, ``previous``, ``ours``).

    . ./env.sh && ROS_DOMAIN_ID=62 python bench/bench_discovery.py --rounds 20

Prints one markdown table; exit 0.
"""

# mypy: disallow-untyped-calls=False
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# bench/ is sys.path[0]: the script is run as `python bench/bench_discovery.py`.
from bench_transport import PROFILES, profile_env

TOPICS = [f"/disc/t{i}" for i in range(6)]
LIMIT_S = 30.0


def _talker() -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    t0 = time.monotonic()
    rclpy.init()
    node = rclpy.create_node("disc_talker")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    pubs = [node.create_publisher(String, t, qos) for t in TOPICS]
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    matched = None
    while time.monotonic() - t0 < LIMIT_S:
        if all(p.get_subscription_count() > 0 for p in pubs):
            matched = time.monotonic() - t0
            break
        executor.spin_once(timeout_sec=0.01)
    # Keep publishing until the listener exits (it has seen every topic) or the limit.
    while time.monotonic() - t0 < LIMIT_S + 5 and sys.stdin.readable():
        for p in pubs:
            p.publish(String(data="x"))
        executor.spin_once(timeout_sec=0.05)
        if os.path.exists(os.environ["DISC_DONE"]):
            break
    print(json.dumps({"matched_s": matched}), flush=True)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _listener() -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    t0 = time.monotonic()
    rclpy.init()
    node = rclpy.create_node("disc_listener")
    qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
    seen: dict[str, float] = {}
    subs = [
        node.create_subscription(
            String, t, lambda _m, t=t: seen.setdefault(t, time.monotonic() - t0), qos
        )
        for t in TOPICS
    ]
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    while len(seen) < len(subs) and time.monotonic() - t0 < LIMIT_S:
        executor.spin_once(timeout_sec=0.05)
    Path(os.environ["DISC_DONE"]).touch()
    print(json.dumps({"data_s": max(seen.values()) if len(seen) == len(subs) else None}))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


def _round(profile: str, index: int) -> tuple[float | None, float | None]:
    env = profile_env(profile)
    env["DISC_DONE"] = f"/tmp/bench_discovery_{os.getpid()}_{index}.done"
    Path(env["DISC_DONE"]).unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--role"]
    talker = subprocess.Popen([*cmd, "talker"], stdout=subprocess.PIPE, env=env, text=True)
    listener = subprocess.Popen([*cmd, "listener"], stdout=subprocess.PIPE, env=env, text=True)
    out_l, _ = listener.communicate(timeout=LIMIT_S + 30)
    out_t, _ = talker.communicate(timeout=LIMIT_S + 30)
    Path(env["DISC_DONE"]).unlink(missing_ok=True)
    return json.loads(out_t)["matched_s"], json.loads(out_l)["data_s"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--role", choices=("talker", "listener"), help=argparse.SUPPRESS)
    parser.add_argument("--profiles", default="previous,ours", help=f"comma list of {PROFILES}")
    parser.add_argument("--rounds", type=int, default=10, help="rounds per profile")
    args = parser.parse_args(argv)
    if args.role == "talker":
        return _talker()
    if args.role == "listener":
        return _listener()
    profiles = [p for p in args.profiles.split(",") if p]
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = os.getloadavg()[0]
    results: dict[str, list[tuple[float | None, float | None]]] = {p: [] for p in profiles}
    for i in range(args.rounds):
        for p in profiles:
            got = _round(p, i)
            results[p].append(got)
            print(f"  round {i} {p}: matched {got[0]}, data {got[1]}", file=sys.stderr, flush=True)
    print(
        f"bench_discovery: {started}, {os.cpu_count()} cores, load average at start {load:.2f},"
        f" at end {os.getloadavg()[0]:.2f}; {args.rounds} rounds per profile\n"
    )
    print(
        "| profile | all matched: median | max | first data on all 6: median | max |"
        f" not within {LIMIT_S:g} s |"
    )
    print("|---|---|---|---|---|---|")
    for p in profiles:
        matched = [m for m, _ in results[p] if m is not None]
        data = [d for _, d in results[p] if d is not None]
        failed = sum(1 for m, d in results[p] if m is None or d is None)

        def fmt(xs: list[float], f: object) -> str:
            return f"{f(xs):.2f} s" if xs else "-"  # type: ignore[operator]

        print(
            f"| {p} | {fmt(matched, statistics.median)} | {fmt(matched, max)} |"
            f" {fmt(data, statistics.median)} | {fmt(data, max)} | {failed}/{args.rounds} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
