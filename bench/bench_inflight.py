"""Throughput against ``max_inflight``, with a server that serves requests concurrently.

A camera process publishes 640x480 JPEG ``CompressedImage`` frames at 30 fps into the real
``perception_node`` (``rate_hz`` 30, so only the camera caps it; ``reliability: reliable``); the
node asks the project's local OpenAI-compatible server (a threading HTTP server: requests run
concurrently), which answers after a fixed ``--service-ms``. For ``max_inflight`` 1, 2, 4 and 8
the orchestrator counts ``detections`` per second in a window and checks their order: a result
published with an older stamp than one before it is an order violation (the node must drop a
late older reply and count it, ``drops_out_of_order`` on ``/diagnostics`` where it has that).

Ideal throughput is ``min(max_inflight / service time, camera fps)``; the table gives the
measured figure, the ideal, their ratio, and the scaling against ``max_inflight`` 1 in the same
run.

    . ./env.sh && ROS_DOMAIN_ID=44 python bench/bench_inflight.py [--seconds 15]
"""

# mypy: disallow-untyped-calls=False
from __future__ import annotations

import argparse
import itertools
import sys
import time
from typing import Any

import node_rig  # bench/ is on sys.path: these scripts run as files

NS = "/bench_inflight"
FPS = 30.0


class VllmProcess:
    """``serving/vllm_server.py`` (the tests' vLLM with the tiny Step-3.7 model) as a child."""

    def __init__(self) -> None:
        import re
        import subprocess

        script = node_rig.ROOT / "serving" / "vllm_server.py"
        self.proc = subprocess.Popen(
            [sys.executable, str(script)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        m, line = None, ""
        while m is None:  # "vLLM ready in N s at URL"; EOF when it failed
            line = self.proc.stdout.readline()
            if not line:
                break
            m = re.search(r"^vLLM ready in .* at (\S+)$", line.strip())
        if m is None:
            self.close()
            raise SystemExit(f"bench_inflight: the vLLM server did not start: {line!r}")
        self.base_url = m.group(1)
        print(f"bench_inflight: {line.strip()}", file=sys.stderr, flush=True)

    def url(self, _service_ms: int) -> str:
        return self.base_url

    def close(self) -> None:
        import signal
        import subprocess

        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def run(
    graph: node_rig.Graph,
    server: Any,
    inflight: int,
    service_ms: int,
    seconds: float,
    vllm: bool = False,
) -> dict[str, Any]:
    from ros_harness import wait_for

    from step_perception_msgs.msg import ObjectDetectionArray  # type: ignore[attr-defined]

    dets = graph.collector(ObjectDetectionArray, f"{NS}/detections")
    params: dict[str, object] = {
        "backend": "openai",
        "endpoint": server.url(service_ms),
        "model": "test-model",
        "reliability": "reliable",
        "image_transport": "compressed",
        "rate_hz": FPS,
        "max_inflight": inflight,
    }
    if vllm:
        # The tiny random-weight model: its answers are schema-valid but may fail the node's
        # checks (degenerate boxes), so throughput counts finished frames, not detections.
        params |= {"model": "step3p7-tiny", "model_profile": "step3p7", "request_timeout_s": 30.0,
                   "max_frame_age_s": 60.0}  # fmt: skip
    name = f"{NS}/step_perception"
    with node_rig.node_process(graph, NS, params) as node:
        camera = node_rig.CameraProcess(f"{NS}/image_raw/compressed", "compressed", (640, 480), FPS)
        try:
            if not vllm and not wait_for(lambda: len(dets.msgs) >= 2 * inflight, 30.0):
                return {"error": f"no detections in 30 s (node log: {node.log()[-300:]!r})"}
            time.sleep(1.0)
            v0 = graph.fresh_values(name)
            dets.clear()
            t0 = time.monotonic()
            time.sleep(seconds)
            got = dets.timed
            t1 = time.monotonic()
            v1 = graph.fresh_values(name)
            cpu = node_rig.cpu_s(node.proc.pid)
        finally:
            camera.close()
    in_window = [m for t, m in got if t0 <= t < t1]
    stamps = [m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec for m in in_window]
    backwards = sum(1 for a, b in itertools.pairwise(stamps) if b <= a)

    def count(v: dict[str, str], key: str) -> int | None:
        return int(v[key]) if key in v else None

    ooo = [count(v, "drops_out_of_order") for v in (v0, v1)]
    finished = [sum(count(v, k) or 0 for k in ("results", "parse_failures")) for v in (v0, v1)]
    return {
        "fps": (finished[1] - finished[0] if vllm else len(in_window)) / (t1 - t0),
        "backwards": backwards,
        "dropped_out_of_order": None if None in ooo else int(ooo[1] or 0) - int(ooo[0] or 0),
        "cpu_s": cpu,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument("--service-ms", type=int, default=200)
    ap.add_argument("--inflight", default="1,2,4,8")
    ap.add_argument(
        "--vllm",
        action="store_true",
        help="against the tests' vLLM server (tiny Step-3.7, `make vllm`) instead of the fixed "
        "service time; results/s then counts every finished frame (published or parse failure)",
    )
    args = ap.parse_args()
    from model_server import ModelServer

    print(f"## bench_inflight: {node_rig.machine()}\n")
    server_text = (
        "the tests' vLLM server (tiny Step-3.7, random weights; results/s = finished frames)"
        if args.vllm
        else f"concurrent server, service time {args.service_ms} ms"
    )
    print(
        f"640x480 JPEG at {FPS:.0f} fps, rate_hz {FPS:.0f}, {server_text}, "
        f"{args.seconds:g} s window per setting.\n"
    )
    rows = [
        "| max_inflight | results/s | ideal | of ideal | vs max_inflight 1 | published out of "
        "stamp order | late replies dropped (node) |",
        "|---|---|---|---|---|---|---|",
    ]
    server: Any = VllmProcess() if args.vllm else ModelServer()
    graph = node_rig.Graph("bench_inflight_orchestrator")
    base = None
    try:
        for k in (int(x) for x in args.inflight.split(",")):
            r = run(graph, server, k, args.service_ms, args.seconds, args.vllm)
            if "error" in r:  # seen once: a node that never matched the camera; retry once
                print(f"bench_inflight: {k}: {r['error']}; retrying", file=sys.stderr)
                r = run(graph, server, k, args.service_ms, args.seconds, args.vllm)
            if "error" in r:
                rows.append(f"| {k} | {r['error']} | | | | | |")
                continue
            ideal = float("nan") if args.vllm else min(k * 1000.0 / args.service_ms, FPS)
            base = base or r["fps"]
            dropped = "-" if r["dropped_out_of_order"] is None else str(r["dropped_out_of_order"])
            rows.append(
                f"| {k} | {r['fps']:.2f} | {ideal:.1f} | {r['fps'] / ideal:.2f} | "
                f"{r['fps'] / base:.2f}x | {r['backwards']} | {dropped} |"
            )
            print(f"bench_inflight: max_inflight {k} done", file=sys.stderr, flush=True)
    finally:
        graph.close()
        server.close()
    print("\n".join(rows))


if __name__ == "__main__":
    main()
