"""Node overhead over the model's service time, and the age of each frame at the server.

A camera process publishes at 30 fps (reliable keep-last-1) into the real ``perception_node``
(its defaults, except ``endpoint``/``model``, ``reliability: reliable`` because best-effort
1080p is lost on this machine, see docs/reliability.md, and ``rate_hz``); the node asks the
project's local OpenAI-compatible server (``test/integration/model_server.py``), which answers
from the image after a fixed ``--service-ms``. The orchestrator (a third process) receives
``detections`` and takes, per result,

* **overhead** = (receipt of ``detections`` - the frame's stamp) - service time: everything
  that is not the model (camera -> node transport, the gate, image preparation, HTTP, the
  server's own JPEG decode, parsing, publishing, DDS to the orchestrator);
* **frame age at the server** = the request's arrival at the server - the frame's stamp.

Requests and results are matched in order (``max_inflight`` 1, so they cannot pass each other;
the script checks the counts agree). The ``issue`` case repeats the issue's measurement (raw
720p at 10 fps, 1 s service time): its frames wait in the newest-frame-wins slot while the one
request runs, so their age at the server is bounded by one camera period plus the overhead.

    . ./env.sh && ROS_DOMAIN_ID=44 python bench/bench_latency.py [--seconds 30]
"""

# mypy: disallow-untyped-calls=False
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any

import node_rig  # bench/ is on sys.path: these scripts run as files

NS = "/bench_latency"


@dataclass(frozen=True)
class Case:
    """One stream and server setting."""

    name: str
    transport: str
    size: tuple[int, int]
    fps: float
    service_ms: int
    rate_hz: float
    reliability: str = "reliable"


CASES = (
    Case("720p raw", "raw", (1280, 720), 30.0, 200, 2.0),
    Case("720p compressed", "compressed", (1280, 720), 30.0, 200, 2.0),
    Case("1080p raw", "raw", (1920, 1080), 30.0, 200, 2.0),
    Case("1080p compressed", "compressed", (1920, 1080), 30.0, 200, 2.0),
    Case("issue: 720p raw, 10 fps, 1 s service", "raw", (1280, 720), 10.0, 1000, 1.0),
    Case(
        "issue, best effort (the node's default QoS)",
        "raw",
        (1280, 720),
        10.0,
        1000,
        1.0,
        "best_effort",
    ),
)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))
    return s[k]


def run_case(graph: node_rig.Graph, server: Any, case: Case, seconds: float) -> dict[str, Any]:
    from step_perception_msgs.msg import ObjectDetectionArray  # type: ignore[attr-defined]

    topic = f"{NS}/image_raw" + ("/compressed" if case.transport == "compressed" else "")
    dets = graph.collector(ObjectDetectionArray, f"{NS}/detections")
    params: dict[str, object] = {
        "backend": "openai",
        "endpoint": server.url(case.service_ms),
        "model": "test-model",
        "reliability": case.reliability,
        "image_transport": case.transport,
        "rate_hz": case.rate_hz,
    }
    wall_minus_mono = time.time() - time.monotonic()
    with node_rig.node_process(graph, NS, params) as node:
        camera = node_rig.CameraProcess(topic, case.transport, case.size, case.fps)
        try:
            # Warm up: the node's first request (imports, pools, first encode) is slow.
            from ros_harness import wait_for

            if not wait_for(lambda: len(dets.msgs) >= 2, 30.0):
                raise SystemExit(f"bench_latency: no detections ({case.name}):\n{node.log()}")
            time.sleep(0.5)
            n_seen = len(server.seen())
            dets.clear()
            t_start = time.monotonic()
            time.sleep(seconds)
            t_end = time.monotonic()
            time.sleep(case.service_ms / 1000 + 1.0)  # the last request's answer
        finally:
            camera.close()
        seen = [s for s in server.seen()[n_seen:] if t_start <= s.t < t_end]
        timed = dets.timed
        # The node's own split (its /diagnostics, the last 1 Hz status of the window): submit ->
        # result inside the node, and the backend call alone (HTTP + the server's decode + service).
        diag = graph.fresh_values(f"{NS}/step_perception")
    # max_inflight 1: a result answers the latest request that arrived a service time before it
    # (the next request can only start after this answer left the server).
    service_s = case.service_ms / 1000
    overhead_ms, age_ms, server_work_ms = [], [], []
    for t_rx, msg in timed:
        before = [q for q in seen if q.t <= t_rx - service_s]
        if not before or before[-1].t < t_start:
            continue
        stamp_s = msg.header.stamp.sec + msg.header.stamp.nanosec / 1e9
        req = before[-1]
        # The server's own work before its fixed delay (reading the body, base64 + JPEG decode,
        # finding the objects) is the model's side, not the node's: it is taken out with the
        # service time, and the age is taken when the request arrived.
        server_ms = (req.t - req.t_arrive) * 1e3
        overhead_ms.append(((t_rx + wall_minus_mono) - stamp_s) * 1e3 - case.service_ms - server_ms)
        age_ms.append((req.t_arrive + wall_minus_mono - stamp_s) * 1e3)
        server_work_ms.append(server_ms)
    return {
        "requests": len(seen),
        "results": len(overhead_ms),
        "overhead_ms": overhead_ms,
        "age_ms": age_ms,
        "server_work_ms": server_work_ms,
        "expected_requests": _expected(case, seconds),
        "pipeline_ms": _diag_ms(diag, "latency_p50_s"),
        "model_ms": _diag_ms(diag, "model_latency_p50_s"),
    }


def _diag_ms(values: dict[str, str], key: str) -> float:
    try:
        return float(values[key]) * 1e3
    except (KeyError, ValueError):
        return float("nan")


def _expected(case: Case, seconds: float) -> float:
    """Requests the window should hold: ``rate_hz``, or one per service time if that is slower."""
    per_s = min(case.rate_hz, 1000.0 / case.service_ms, case.fps)
    return per_s * seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=30.0, help="measured window per case")
    ap.add_argument("--cases", default="", help="comma-separated case-name prefixes")
    args = ap.parse_args()
    from model_server import ModelServer

    cases = [c for c in CASES if not args.cases or c.name.startswith(tuple(args.cases.split(",")))]
    print(f"## bench_latency: {node_rig.machine()}\n")
    server = ModelServer()
    graph = node_rig.Graph("bench_latency_orchestrator")
    rows = [
        "| case | service | requests (expected) | overhead p50 | p99 | max | age at server "
        "p50 | max | target age p50 / max |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    split = [
        "| case | overhead p50 | server's own work p50 (body, base64, JPEG decode, answer) | "
        "node submit -> result p50 (- service - server work) | of which the HTTP call "
        "(backend call - service - server work) | node outside the call (prep, parse) | rest: "
        "camera -> node DDS, callbacks, gate, publish, node -> observer DDS |",
        "|---|---|---|---|---|---|---|",
    ]
    try:
        for case in cases:
            r = run_case(graph, server, case, args.seconds)
            period_ms = 1000.0 / case.fps
            o, a = r["overhead_ms"], r["age_ms"]
            rows.append(
                f"| {case.name} | {case.service_ms} ms | {r['requests']} "
                f"({r['expected_requests']:.0f}) | {statistics.median(o):.1f} ms | "
                f"{_pct(o, 99):.1f} ms | {max(o):.1f} ms | {statistics.median(a):.1f} ms | "
                f"{max(a):.1f} ms | {period_ms / 2 + 5:.0f} / {period_ms + 20:.0f} ms |"
            )
            o50, work = statistics.median(o), statistics.median(r["server_work_ms"])
            in_node = r["pipeline_ms"] - case.service_ms - work
            call = r["model_ms"] - case.service_ms - work
            split.append(
                f"| {case.name} | {o50:.1f} ms | {work:.1f} ms | {in_node:.1f} ms | "
                f"{call:.1f} ms | {in_node - call:.1f} ms | {o50 - in_node:.1f} ms |"
            )
            print(f"bench_latency: {case.name} done", file=sys.stderr, flush=True)
    finally:
        graph.close()
        server.close()
    print("\n".join(rows))
    print("\nWhere the overhead goes (p50s; the node's split from its /diagnostics):\n")
    print("\n".join(split))


if __name__ == "__main__":
    main()
