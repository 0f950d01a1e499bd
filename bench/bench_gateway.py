"""The real node's throughput and failover gap behind an smg gateway, vs its own endpoint list.

Every run starts real processes: workers (``worker_proc.py``: model_server.py's handler, each
answer taking ``--service-ms`` with ``--slots`` answers at once, like a GPU server with a fixed
batch), ``smg launch`` (default HTTP router, round robin) on 127.0.0.1 with its metrics listener
on 127.0.0.1, the ``perception_node`` at ``max_inflight`` 4, and a 30 fps camera over real DDS.

Cases, each measured in the same run:

* ``direct-1``: the node on one worker, no gateway (the gateway's cost is the difference);
* ``gateway-1`` / ``gateway-2``: the node on smg in front of 1 / 2 workers;
* ``node-list-2``: the node's own endpoint list of the same 2 workers (the naive way: no
  gateway, the node spreads and fails over itself).

Throughput is answers per second published on ``detections`` over ``--seconds`` after a warm-up.
The failover rows kill one of the two workers (SIGKILL) mid-run and report the longest time
without a published answer from the kill until ``--seconds`` later; then the worker is started
again on its port and the row reports how long until it answers a request again. Needs
``make smg`` and the ROS environment:

    . ./env.sh && ROS_DOMAIN_ID=46 python bench/bench_gateway.py
"""

# mypy: disallow-untyped-calls=False
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "step_perception" / "test" / "integration"))

from gateway_support import Gateway, Worker, free_port  # noqa: E402


@dataclass(frozen=True)
class Result:
    """One measured case."""

    case: str
    workers: int
    answers_per_s: float
    answered: int
    share: str  # answers per worker over the case, "a/b"
    max_gap_s: float | None = None  # failover cases only
    rejoin_s: float | None = None  # failover cases: restart (healthy) -> its first answer


@contextmanager
def _ros() -> Iterator[Any]:
    from ros_harness import Ros

    ros = Ros()
    try:
        yield ros
    finally:
        ros.close()


def _node_params(endpoint: str, inflight: int) -> dict[str, object]:
    return {
        "backend": "openai",
        "endpoint": endpoint,
        "model": "test-model",
        "rate_hz": 100.0,  # the throttle never binds: the model side sets the pace
        "max_inflight": inflight,
        "max_frame_age_s": 2.0,
        "request_timeout_s": 5.0,
        "reliability": "reliable",
    }


def _run_case(
    ros: Any,
    case: str,
    endpoint: str,
    workers: list[Worker],
    args: argparse.Namespace,
    logs: Path,
    kill: bool = False,
) -> Result:
    from ros_harness import Camera, Collector, start_node, wait_for

    from step_perception_msgs.msg import ObjectDetectionArray  # type: ignore[attr-defined]

    tester = ros.node(f"bench_{case.replace('-', '_')}")
    ns = f"/bench_{case.replace('-', '_')}"
    node = start_node(tester, ns, _node_params(endpoint, args.inflight), logs)
    try:
        got = Collector(tester, ObjectDetectionArray, f"{ns}/detections")
        camera = Camera(tester, f"{ns}/image_raw", fps=30.0, reliable=True).start()
        try:
            if not wait_for(lambda: len(got.msgs) >= 5, 30.0):
                raise RuntimeError(f"{case}: no answers\n{node.log()}")
            time.sleep(args.warmup)
            before = [w.answered() for w in workers]
            t0 = time.monotonic()
            if kill:
                workers[0].kill()
            time.sleep(args.seconds)
            t1 = time.monotonic()
            after = [w.answered() for w in workers]
            dead = [w.proc is None for w in workers]
            rejoin = None
            if kill:  # bring it back on the same port: how long until it answers again
                workers[0].start()
                t_up = time.monotonic()
                if wait_for(lambda: workers[0].answered() > 0, 30.0, step=0.01):
                    rejoin = round(time.monotonic() - t_up, 2)
        finally:
            camera.stop()
        times = [t for t, _ in got.timed if t0 <= t <= t1]
        edges = [t0, *times, t1]
        gap = max(b - a for a, b in itertools.pairwise(edges))
        share = "/".join(
            "killed" if d else str(max(0, a - b))
            for d, a, b in zip(dead, after, before, strict=True)
        )
        return Result(
            case,
            len(workers),
            round(len(times) / (t1 - t0), 2),
            len(times),
            share,
            round(gap, 2) if kill else None,
            rejoin,
        )
    finally:
        node.stop()
        ros.remove(tester)


def _fleet(n: int, args: argparse.Namespace, logs: Path) -> list[Worker]:
    return [Worker(free_port(), logs, args.service_ms, args.slots).start() for _ in range(n)]


def _bench(args: argparse.Namespace, logs: Path) -> list[Result]:
    results: list[Result] = []
    with _ros() as ros:
        for case in args.cases:
            n = 1 if case.endswith("-1") else 2
            kill = case.startswith("failover")
            workers = _fleet(n, args, logs)
            gateway: Gateway | None = None
            try:
                if "gateway" in case:
                    gateway = Gateway(workers, logs).start()
                    url = gateway.url
                else:
                    url = ",".join(f"{w.url}/v1" for w in workers)
                results.append(_run_case(ros, case, url, workers, args, logs, kill))
                print(json.dumps(asdict(results[-1])), flush=True)
            finally:
                if gateway is not None:
                    gateway.stop()
                for w in workers:
                    w.kill()
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--service-ms", type=float, default=200.0, help="time of one answer")
    ap.add_argument("--slots", type=int, default=1, help="answers one worker computes at once")
    ap.add_argument("--inflight", type=int, default=4, help="the node's max_inflight")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=1, help="rounds over all cases (medians)")
    ap.add_argument(
        "--cases",
        nargs="+",
        default=[
            "direct-1",
            "gateway-1",
            "gateway-2",
            "node-list-2",
            "failover-gateway-2",
            "failover-node-list-2",
        ],
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_gateway_") as tmp:
        rounds = [_bench(args, Path(tmp)) for _ in range(args.repeat)]
    print(
        f"\nworker: {args.service_ms:g} ms per answer, {args.slots} at once; node max_inflight "
        f"{args.inflight}; {args.seconds:g} s per case; {args.repeat} round(s), medians\n"
    )
    print(
        "| case | workers | answers/s | answers per worker | longest gap after kill "
        "| restarted worker's first answer |"
    )
    print("|---|---|---|---|---|---|")
    for i, case in enumerate(args.cases):
        rs = [r[i] for r in rounds]
        rate = statistics.median(r.answers_per_s for r in rs)
        gaps = [r.max_gap_s for r in rs if r.max_gap_s is not None]
        gap = f"{statistics.median(gaps):.2f} s" if gaps else ""
        rejoins = [r.rejoin_s for r in rs if r.rejoin_s is not None]
        back = f"after {statistics.median(rejoins):.2f} s" if rejoins else ""
        if any(r.max_gap_s is not None and r.rejoin_s is None for r in rs):
            back = "never (in 30 s)"
        print(f"| {case} | {rs[0].workers} | {rate:.2f} | {rs[-1].share} | {gap} | {back} |")


if __name__ == "__main__":
    main()
