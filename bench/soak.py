"""Soak: the real node for N minutes, a 30 fps camera, a model server that fails at random.

The node under test runs as its own process (``perception_node``, the shipped Fast DDS profile)
against ``FaultServer`` (``step_perception/test/unit/backends/fault_server.py``, a real HTTP
server on 127.0.0.1). This process is the camera (640x480 bgr8 at 30 fps, reliable) and the
observer. The server is healthy, then every ``--fault-every`` seconds plays one random fault
for ``--fault-s`` seconds (HTTP 500 with a failing health probe, a hang longer than the request
timeout, a truncated body, invalid JSON, a connection closed after the headers, 429 with
Retry-After, a slow answer), then is healthy again.

Every minute it records the node process's RSS, threads, open file descriptors and sockets
(from /proc), the drops by reason, results, failures and publish latency from ``/diagnostics``,
and the recovery time of each fault (server healthy again -> first result published after it).
It writes ``soak.json``, ``soak.csv`` and ``soak.png`` into ``--out`` and prints markdown tables.

    . ./env.sh && ROS_DOMAIN_ID=66 python bench/soak.py --minutes 30 --out /tmp/soak

Exit 0 when it ran; the verdict (trend of RSS and fds after warm-up, thread growth, worst
recovery) is printed, not enforced.
"""

# mypy: disallow-untyped-calls=False
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import random
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TEST = ROOT / "step_perception" / "test"
sys.path[:0] = [
    str(TEST / "integration"),
    str(TEST / "unit" / "backends"),
]

from step_perception.ros.dds_profile import profile_env  # noqa: E402

os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.update(
    profile_env(os.environ.get("ROS_DISTRO", ""), ROOT / "step_perception" / "config", os.environ)
)

from fault_server import Behaviour, FaultServer  # noqa: E402
from step_perception.ros.diagnostics import FAILURE_KEYS  # noqa: E402

REQUEST_TIMEOUT_S = 1.0
ANSWER = Behaviour(content='{"objects": [{"label": "red cube", "box": [100, 100, 300, 300]}]}')


@dataclass(frozen=True)
class Fault:
    """One fault the server plays, and how it answers the health probe meanwhile."""

    name: str
    behaviour: Behaviour
    probe_status: int = 200
    probe_delay_s: float = 0.0


FAULTS = (
    Fault("http_500", Behaviour(kind="status", status=500), probe_status=500),
    Fault("hang", Behaviour(kind="sleep", delay_s=5.0), probe_delay_s=5.0),
    Fault("truncated", Behaviour(kind="truncated")),
    Fault("invalid_json", Behaviour(kind="invalid_json")),
    Fault("reset", Behaviour(kind="close_after_headers")),
    Fault("429", Behaviour(kind="status", status=429, retry_after="1")),
    Fault("slow", Behaviour(kind="sleep", delay_s=0.6)),
)


@dataclass(frozen=True)
class Sample:
    """One per-minute record of the node process and its diagnostics."""

    minute: float
    rss_mib: float
    threads: int
    fds: int
    sockets: int
    results: int
    failures: int
    drops: dict[str, int]
    latency_p50_s: float
    latency_p95_s: float
    level: int
    # The RSS split: private memory (the node's own heap: the leak signal) and shared memory,
    # mostly Fast DDS's shared-memory segments (64 MiB each: the node's own and each local
    # writer's it reads). Their pages count once touched, so under load the RSS climbs in steps
    # up to the segments' size without any leak.
    rss_anon_mib: float = float("nan")
    rss_shmem_mib: float = float("nan")


@dataclass(frozen=True)
class Recovery:
    """A fault and how long the node took to publish again once the server was back."""

    fault: str
    at_minute: float
    recovery_s: float | None  # None: no result within the next fault period


def rss_split(pid: int) -> tuple[float, float]:
    """Private (``RssAnon``) and shared (``RssShmem``) resident memory of ``pid`` [MiB]."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return (
        int(fields["RssAnon"].split()[0]) / 1024.0,
        int(fields["RssShmem"].split()[0]) / 1024.0,
    )


def proc_stats(pid: int) -> tuple[float, int, int, int]:
    """RSS (MiB), threads, fds and sockets of process ``pid``."""
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rss_kib = int(fields["VmRSS"].split()[0])
    threads = int(fields["Threads"])
    fds = sockets = 0
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        fds += 1
        with contextlib.suppress(OSError):  # closed meanwhile
            sockets += os.readlink(fd).startswith("socket:")
    return rss_kib / 1024.0, threads, fds, sockets


def _diag(diags: Any, name: str) -> tuple[int, dict[str, str]]:
    for arr in reversed(diags.msgs):
        for st in arr.status:
            if st.name.startswith(name):
                return int.from_bytes(st.level, "little") if isinstance(st.level, bytes) else int(
                    st.level
                ), {kv.key: kv.value for kv in st.values}
    return -1, {}


def _float(v: str | None) -> float:
    try:
        return float(v) if v is not None else float("nan")
    except ValueError:
        return float("nan")


def slope_per_min(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of ys over xs (units of y per minute)."""
    if len(xs) < 2:
        return 0.0
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den if den else 0.0


def plot(samples: list[Sample], recoveries: list[Recovery], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s.minute for s in samples]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
    axes[0][0].plot(t, [s.rss_mib for s in samples], marker="o", label="RSS")
    axes[0][0].plot(t, [s.rss_anon_mib for s in samples], marker=".", label="private (RssAnon)")
    axes[0][0].plot(t, [s.rss_shmem_mib for s in samples], marker=".", label="shared (RssShmem)")
    axes[0][0].legend(fontsize=7)
    axes[0][0].set_ylabel("node RSS [MiB]")
    axes[0][1].plot(t, [s.threads for s in samples], marker="o", label="threads")
    axes[0][1].plot(t, [s.fds for s in samples], marker="s", label="open fds")
    axes[0][1].plot(t, [s.sockets for s in samples], marker="^", label="sockets")
    axes[0][1].legend()
    axes[0][1].set_ylabel("count")
    axes[1][0].plot(t, [s.latency_p50_s * 1000 for s in samples], marker="o", label="p50")
    axes[1][0].plot(t, [s.latency_p95_s * 1000 for s in samples], marker="s", label="p95")
    axes[1][0].set_ylabel("publish latency [ms]")
    axes[1][0].set_xlabel("minute")
    axes[1][0].legend()
    rec = [r for r in recoveries if r.recovery_s is not None]
    axes[1][1].scatter([r.at_minute for r in rec], [r.recovery_s for r in rec], marker="x")
    for r in rec:
        axes[1][1].annotate(r.fault, (r.at_minute, r.recovery_s), fontsize=7)
    axes[1][1].axhline(2.0, color="red", linestyle="--", linewidth=1)
    axes[1][1].set_ylabel("recovery after the fault [s]")
    axes[1][1].set_xlabel("minute")
    fig.suptitle("bench/soak.py: node under a 30 fps camera and a faulty model server")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fault-every", type=float, default=30.0, help="seconds between faults")
    parser.add_argument("--fault-s", type=float, default=8.0, help="length of one fault")
    parser.add_argument("--rate-hz", type=float, default=5.0, help="the node's rate_hz")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("soak-out"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    from diagnostic_msgs.msg import DiagnosticArray
    from ros_harness import Camera, Collector, Ros, start_node

    from step_perception_msgs.msg import ObjectDetectionArray

    rng = random.Random(args.seed)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    ros = Ros()
    observer = ros.node("soak_observer")
    ns = "/soak"
    samples: list[Sample] = []
    recoveries: list[Recovery] = []
    with FaultServer(default=ANSWER) as server:
        node = start_node(
            observer,
            ns,
            {
                "backend": "openai",
                "endpoint": server.base_url,
                "model": "fault-model",
                "rate_hz": args.rate_hz,
                "reliability": "reliable",
                "request_timeout_s": REQUEST_TIMEOUT_S,
                "max_frame_age_s": 2.0,
            },
            args.out / "logs",
        )
        dets = Collector(observer, ObjectDetectionArray, f"{ns}/detections")
        diags = Collector(observer, DiagnosticArray, "/diagnostics")
        camera = Camera(observer, f"{ns}/image_raw", fps=30.0, reliable=True).start()
        t0 = time.monotonic()
        end = t0 + args.minutes * 60.0
        next_sample = t0 + 60.0
        next_fault = t0 + args.fault_every
        pending: tuple[Fault, float] | None = None  # a fault that ended: (fault, server back at)
        try:
            while time.monotonic() < end and node.alive():
                now = time.monotonic()
                if now >= next_fault:
                    fault = rng.choice(FAULTS)
                    server.set(default=fault.behaviour)
                    server.state.models_status = fault.probe_status
                    server.state.models_delay_s = fault.probe_delay_s
                    time.sleep(args.fault_s)
                    server.set(default=ANSWER)
                    server.state.models_status, server.state.models_delay_s = 200, 0.0
                    pending = (fault, time.monotonic())
                    next_fault += args.fault_every
                    continue
                if pending is not None:
                    fault, back = pending
                    after = [t for t, _ in dets.timed if t > back]
                    if after or now - back > args.fault_every - args.fault_s - 1.0:
                        rec = after[0] - back if after else None
                        recoveries.append(Recovery(fault.name, round((back - t0) / 60.0, 2), rec))
                        shown = "never" if rec is None else f"{rec:.2f} s"
                        print(
                            f"  {fault.name}: recovered in {shown}",
                            file=sys.stderr,
                            flush=True,
                        )
                        pending = None
                if now >= next_sample:
                    rss, threads, fds, sockets = proc_stats(node.proc.pid)
                    anon, shmem = rss_split(node.proc.pid)
                    level, values = _diag(diags, node.name)
                    drops = {
                        k[len("drops_") :]: int(v)
                        for k, v in values.items()
                        if k.startswith("drops_")
                    }
                    failures = sum(int(values.get(k, "0")) for k in FAILURE_KEYS)
                    s = Sample(
                        round((now - t0) / 60.0, 2),
                        round(rss, 1),
                        threads,
                        fds,
                        sockets,
                        int(values.get("results", "0")),
                        failures,
                        drops,
                        _float(values.get("latency_p50_s")),
                        _float(values.get("latency_p95_s")),
                        level,
                        round(anon, 1),
                        round(shmem, 1),
                    )
                    samples.append(s)
                    print(
                        f"  minute {s.minute}: rss {s.rss_mib} MiB (private {s.rss_anon_mib},"
                        f" shared {s.rss_shmem_mib}), threads {threads}, fds {fds},"
                        f" sockets {sockets}, results {s.results}, failures {failures}",
                        file=sys.stderr,
                        flush=True,
                    )
                    next_sample += 60.0
                    dets.clear()  # keep memory flat on our side; recoveries use fresh times
                    diags.clear()
                time.sleep(0.05)
        finally:
            camera.stop()
            alive = node.alive()
            rc = node.stop()
            ros.close()
    (args.out / "soak.json").write_text(
        json.dumps(
            {
                "started": started,
                "args": {k: str(v) for k, v in vars(args).items()},
                "node_alive_at_end": alive,
                "node_rc": rc,
                "samples": [asdict(s) for s in samples],
                "recoveries": [asdict(r) for r in recoveries],
            },
            indent=1,
        )
    )
    with (args.out / "soak.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(
            [
                "minute",
                "rss_mib",
                "rss_anon_mib",
                "rss_shmem_mib",
                "threads",
                "fds",
                "sockets",
                "results",
                "failures",
                "latency_p50_s",
                "latency_p95_s",
                "level",
                "drops",
            ]
        )
        for s in samples:
            w.writerow(
                [
                    s.minute,
                    s.rss_mib,
                    s.rss_anon_mib,
                    s.rss_shmem_mib,
                    s.threads,
                    s.fds,
                    s.sockets,
                    s.results,
                    s.failures,
                    s.latency_p50_s,
                    s.latency_p95_s,
                    s.level,
                    json.dumps(s.drops),
                ]
            )
    if samples:
        plot(samples, recoveries, args.out / "soak.png")
    report(samples, recoveries, started, args, alive)
    return 0


def report(
    samples: list[Sample], recoveries: list[Recovery], started: str, args: Any, alive: bool
) -> None:
    """Print the per-minute table, the recoveries and the verdict."""
    print(
        f"soak: {started}, {args.minutes:g} min, {os.cpu_count()} cores, load average at end"
        f" {os.getloadavg()[0]:.2f}; node alive at the end: {alive}\n"
    )
    print(
        "| minute | RSS MiB | private MiB | shared MiB | threads | fds | sockets | results |"
        " failures | p50 ms | p95 ms | level | drops |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for s in samples:
        drops = ", ".join(f"{k} {v}" for k, v in sorted(s.drops.items()) if v)
        print(
            f"| {s.minute:g} | {s.rss_mib:.1f} | {s.rss_anon_mib:.1f} | {s.rss_shmem_mib:.1f} |"
            f" {s.threads} | {s.fds} | {s.sockets} |"
            f" {s.results} | {s.failures} | {s.latency_p50_s * 1000:.0f} |"
            f" {s.latency_p95_s * 1000:.0f} | {s.level} | {drops} |"
        )
    print("\n| fault | at minute | recovery s |\n|---|---|---|")
    for r in recoveries:
        rec = "none" if r.recovery_s is None else f"{r.recovery_s:.2f}"
        print(f"| {r.fault} | {r.at_minute:g} | {rec} |")
    warm = [s for s in samples if s.minute >= 3.0] or samples
    xs = [s.minute for s in warm]
    done = [r.recovery_s for r in recoveries if r.recovery_s is not None]
    rss_slope = slope_per_min(xs, [s.rss_mib for s in warm])
    anon_slope = slope_per_min(xs, [s.rss_anon_mib for s in warm])
    fds_slope = slope_per_min(xs, [float(s.fds) for s in warm])
    print(
        f"\nafter warm-up (minute >= 3): RSS slope {rss_slope:+.2f} MiB/min"
        f" (private {anon_slope:+.2f} MiB/min),"
        f" fds slope {fds_slope:+.2f}/min,"
        f" threads {min((s.threads for s in warm), default=0)}-"
        f"{max((s.threads for s in warm), default=0)}; recoveries: {len(done)} of"
        f" {len(recoveries)}, worst {max(done, default=float('nan')):.2f} s,"
        f" median {statistics.median(done) if done else float('nan'):.2f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
