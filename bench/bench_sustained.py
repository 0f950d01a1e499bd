"""Sustained load: N cameras x 30 fps x 1080p into N node processes for minutes (issue 14, item 5).

Each camera is its own process (``node_rig.CameraProcess``: a fresh stamp per frame, reliable
keep-last-1) feeding its own real ``perception_node`` process in its own namespace, with the
node's defaults except ``endpoint``/``model``. One fast model server (the integration tests'
``ModelServer``, answering at once from the image it receives) serves all of them; this process
is the server and the observer.

Every ``--sample-s`` seconds it records, per node process: CPU % of one core (utime + stime over
the interval), RSS (``VmRSS``), threads; and per camera its CPU %. From each node's
``/diagnostics`` it takes the drops by reason and the results at the end; from its ``detections``
the latency from the frame's stamp to the observer's receipt. It writes ``sustained.json`` and
``sustained.png`` (RSS per node over time) into ``--out`` and prints markdown tables, with the
RSS trend after warm-up (least-squares slope, MiB per minute) as the memory verdict.

    . ./env.sh && ROS_DOMAIN_ID=47 python bench/bench_sustained.py --minutes 10 --out /tmp/sustained

The one-process variant of the issue (four cameras in one node process) does not exist: the node
is one camera per process (one lifecycle node per camera, composed by the launch file).
"""

# mypy: disallow-untyped-calls=False
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import node_rig  # bench/ is on sys.path: these scripts run as files

WARMUP_S = 120.0  # RSS grows while pools, caches and DDS histories fill: left out of the trend


@dataclass(frozen=True)
class Sample:
    """One process at one moment."""

    t_s: float  # [s] since the measured window started
    role: str  # "node<i>" or "camera<i>"
    cpu_pct: float  # [% of one core] over the interval before this sample
    rss_mib: float
    threads: int


def _status(pid: int) -> tuple[float, int]:
    rss_kib, threads = 0, 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
        elif line.startswith("Threads:"):
            threads = int(line.split()[1])
    return rss_kib / 1024.0, threads


def _slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (t [s], value) in value per minute."""
    if len(points) < 3:
        return float("nan")
    ts, vs = [p[0] for p in points], [p[1] for p in points]
    tm, vm = statistics.fmean(ts), statistics.fmean(vs)
    den = sum((t - tm) ** 2 for t in ts)
    if not den:
        return float("nan")
    return 60.0 * sum((t - tm) * (v - vm) for t, v in zip(ts, vs, strict=True)) / den


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))] if s else float("nan")


def _plot(samples: list[Sample], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_rss, ax_cpu) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for role in sorted({s.role for s in samples}):
        mine = [s for s in samples if s.role == role]
        t = [s.t_s / 60 for s in mine]
        if role.startswith("node"):
            ax_rss.plot(t, [s.rss_mib for s in mine], label=role)
        ax_cpu.plot(t, [s.cpu_pct for s in mine], label=role, alpha=0.8)
    ax_rss.axvline(WARMUP_S / 60, color="grey", linestyle=":", label="end of warm-up")
    ax_rss.set_ylabel("node RSS [MiB]")
    ax_cpu.set_ylabel("CPU [% of one core]")
    ax_cpu.set_xlabel("minutes")
    ax_rss.legend(fontsize=7, ncol=3)
    ax_cpu.legend(fontsize=7, ncol=4)
    ax_rss.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--cameras", type=int, default=4)
    ap.add_argument("--fps", type=float, default=30.0)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--transport", choices=("raw", "compressed"), default="compressed")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--out", type=Path, default=Path("sustained-out"))
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    args.out.mkdir(parents=True, exist_ok=True)
    from model_server import ModelServer

    from step_perception_msgs.msg import ObjectDetectionArray  # type: ignore[attr-defined]

    head = node_rig.machine()
    print(f"## bench_sustained: {head}\n", flush=True)
    server = ModelServer()
    graph = node_rig.Graph("bench_sustained_observer")
    suffix = "/compressed" if args.transport == "compressed" else ""
    spaces = [f"/cam{i}" for i in range(args.cameras)]
    collectors = [graph.collector(ObjectDetectionArray, f"{ns}/detections") for ns in spaces]
    samples: list[Sample] = []
    wall_minus_mono = time.time() - time.monotonic()
    params: dict[str, object] = {
        "backend": "openai",
        "endpoint": server.url(),
        "model": "test-model",
        "image_transport": args.transport,
    }
    nodes: list[Any] = []
    cameras: list[node_rig.CameraProcess] = []
    stack = contextlib.ExitStack()  # the node processes, stopped (rc checked) by node_process
    try:
        for ns in spaces:
            nodes.append(stack.enter_context(node_rig.node_process(graph, ns, params)))
        for ns in spaces:
            cameras.append(
                node_rig.CameraProcess(f"{ns}/image_raw{suffix}", args.transport,
                                       (width, height), args.fps)
            )  # fmt: skip
        procs = {f"node{i}": n.proc.pid for i, n in enumerate(nodes)}
        procs |= {f"camera{i}": c.proc.pid for i, c in enumerate(cameras)}
        t0 = time.monotonic()
        last_cpu = {role: (t0, node_rig.cpu_s(pid)) for role, pid in procs.items()}
        end = t0 + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(args.sample_s)
            now = time.monotonic()
            for role, pid in procs.items():
                try:
                    cpu = node_rig.cpu_s(pid)
                    rss, threads = _status(pid)
                except OSError as err:
                    raise SystemExit(f"bench_sustained: {role} (pid {pid}) is gone: {err}") from err
                t_prev, cpu_prev = last_cpu[role]
                last_cpu[role] = (now, cpu)
                pct = 100.0 * (cpu - cpu_prev) / (now - t_prev)
                samples.append(Sample(now - t0, role, pct, rss, threads))
            nodes_line = ", ".join(
                f"{s.role} {s.cpu_pct:.0f}% {s.rss_mib:.0f} MiB"
                for s in samples[-len(procs) :]
                if s.role.startswith("node")
            )
            print(f"  {(now - t0) / 60:5.2f} min: {nodes_line}", file=sys.stderr, flush=True)
        diags = [graph.fresh_values(f"{ns}/step_perception") for ns in spaces]
        published = [c.published(t0 + wall_minus_mono, end + wall_minus_mono) for c in cameras]
    finally:
        for c in cameras:
            c.close()
        stack.close()
        graph.close()
        server.close()

    rows = [
        "| node | frames published | results | results/s | latency p50 | p95 | p99 | max | "
        "CPU % p50 (node) | CPU % p50 (camera) | RSS start -> end | RSS slope after warm-up | "
        "threads start -> end | drops by reason |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    report: dict[str, Any] = {"machine": head, "args": {k: str(v) for k, v in vars(args).items()}}
    report["nodes"] = []
    for i, (col, diag) in enumerate(zip(collectors, diags, strict=True)):
        lat = [
            ((t + wall_minus_mono) - (m.header.stamp.sec + m.header.stamp.nanosec / 1e9)) * 1e3
            for t, m in col.timed
            if t >= t0
        ]
        mine = [s for s in samples if s.role == f"node{i}"]
        cam = [s for s in samples if s.role == f"camera{i}"]
        slope = _slope_per_min([(s.t_s, s.rss_mib) for s in mine if s.t_s >= WARMUP_S])
        drops = {k[6:]: v for k, v in diag.items() if k.startswith("drops_") and v != "0"}
        drops_text = ", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "-"
        rows.append(
            f"| node{i} | {published[i]} | {len(lat)} | {len(lat) / (args.minutes * 60):.2f} | "
            f"{_pct(lat, 50):.0f} ms | {_pct(lat, 95):.0f} ms | {_pct(lat, 99):.0f} ms | "
            f"{max(lat, default=float('nan')):.0f} ms | "
            f"{statistics.median(s.cpu_pct for s in mine):.1f} | "
            f"{statistics.median(s.cpu_pct for s in cam):.1f} | "
            f"{mine[0].rss_mib:.0f} -> {mine[-1].rss_mib:.0f} MiB | {slope:+.2f} MiB/min | "
            f"{mine[0].threads} -> {mine[-1].threads} | {drops_text} |"
        )
        report["nodes"].append(
            {"results": len(lat), "latency_ms": lat, "diagnostics": diag, "rss_slope": slope}
        )
    report["samples"] = [asdict(s) for s in samples]
    (args.out / "sustained.json").write_text(json.dumps(report, indent=1))
    title = (
        f"{args.cameras} cameras x {args.fps:g} fps x {args.size} {args.transport}, "
        f"{args.minutes:g} min; {head}"
    )
    _plot(samples, args.out / "sustained.png", title)
    print("\n".join(rows))
    load = os.getloadavg()
    print(f"\nload average at the end: {load[0]:.2f}; plot: {args.out / 'sustained.png'}")


if __name__ == "__main__":
    main()
