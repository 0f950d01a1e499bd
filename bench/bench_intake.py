"""CPU the real node spends per camera frame over real DDS: plain vs content-filtered intake.

One run measures, for raw ``sensor_msgs/Image`` (bgr8) and JPEG ``CompressedImage`` at 640x480,
1080p and 4K, a camera process publishing at 30 fps (reliable, keep-last-1) into the real
``perception_node`` (the console script, its own subscription code, ``reliability: reliable``,
``rate_hz: 1``, the openai backend against the project's local model server with a 300 ms
service time). The node runs twice per stream:

* ``plain``: ``content_filter: off``, the keep-last-1 subscription: every frame is transported
  and deserialised, the gate drops 29 of 30 by stamp;
* ``filtered``: ``content_filter: on``, which on Fast DDS 3 (Kilted) is the DDS content filter
  on ``header.stamp`` that the gate moves (not the default: ``auto`` leaves it off, see
  ``step_perception.ros.content_filter``); Jazzy's Fast DDS 2.x cannot filter images, so there
  it is ``auto`` (plain), and the table says so.

Each node run has two phases: ``gated`` (the loop at 1 Hz: one frame per second is prepared and
sent to the server) and then ``dropped`` (the ``enable`` service set to false: every frame is
dropped, the filter closed). The orchestrator reads the node process's CPU from
``/proc/<pid>/stat`` (every thread, DDS receive threads included) and the frames the node saw
from its ``/diagnostics`` (``frames_offered``), and the camera's publish log. ``idle`` is the node
active with no camera at all: the floor of the process (executor, timers, DDS housekeeping).

    . ./env.sh && ROS_DOMAIN_ID=44 python bench/bench_intake.py            # Jazzy
    . ./env.sh kilted && ROS_DOMAIN_ID=44 python bench/bench_intake.py  # Kilted
"""

# mypy: disallow-untyped-calls=False
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import node_rig  # bench/ is on sys.path: these scripts run as files
from step_perception.ros.dds_profile import fastdds_profile

SIZES: dict[str, tuple[int, int]] = {
    "640x480": (640, 480),
    "1080p": (1920, 1080),
    "4k": (3840, 2160),
}
TRANSPORTS = ("raw", "compressed")
FPS = 30.0
RATE_HZ = 1.0
SERVICE_MS = 300
NS = "/bench_intake"
NODE = f"{NS}/step_perception"


def _topic(transport: str) -> str:
    return f"{NS}/image_raw" + ("/compressed" if transport == "compressed" else "")


@dataclass(frozen=True)
class Phase:
    """One measured window of one node run."""

    seconds: float
    cpu_s: float
    published: int
    received: int  # frames the node's image callback saw (offered to the gate or dropped)
    sent: int  # frames the gate sent to the server
    input_path: str
    threads_ms: dict[str, float]  # CPU per thread name in the window [ms]


def _phase(
    graph: node_rig.Graph, pid: int, camera: node_rig.CameraProcess | None, seconds: float
) -> Phase:
    """Measure one window between two /diagnostics statuses (their counters bracket it)."""
    v0 = graph.fresh_values(NODE)
    t0, c0, th0 = time.time(), node_rig.cpu_s(pid), node_rig.threads_cpu_s(pid)
    time.sleep(seconds)
    v1 = graph.fresh_values(NODE)
    t1, c1, th1 = time.time(), node_rig.cpu_s(pid), node_rig.threads_cpu_s(pid)

    def received(v: dict[str, str]) -> int:  # the callback offers a frame or drops it first
        return int(v["frames_offered"]) + int(v.get("drops_disabled", "0"))

    return Phase(
        seconds=t1 - t0,
        cpu_s=c1 - c0,
        published=camera.published(t0, t1) if camera else 0,
        received=received(v1) - received(v0),
        sent=int(v1["frames_sent"]) - int(v0["frames_sent"]),
        input_path=v1["input_path"],
        threads_ms={k: (v - th0.get(k, 0.0)) * 1e3 for k, v in th1.items() if v > th0.get(k, 0.0)},
    )


def _filter_works() -> bool:
    """Whether this middleware filters camera frames (this process has loaded it by now)."""
    from rclpy.utilities import get_rmw_implementation_identifier
    from step_perception.ros.content_filter import middleware_filters_large_samples

    return middleware_filters_large_samples(get_rmw_implementation_identifier())[0]


def _node_run(
    graph: node_rig.Graph,
    server_url: str,
    transport: str,
    mode: str,
    camera: node_rig.CameraProcess | None,
    window: float,
) -> dict[str, Any]:
    params: dict[str, object] = {
        "backend": "openai",
        "endpoint": server_url,
        "model": "test-model",
        "reliability": "reliable",
        "rate_hz": RATE_HZ,
        "image_transport": transport,
    }
    if mode == "plain":
        params["content_filter"] = "off"
    elif _filter_works():
        params["content_filter"] = "on"
    for attempt in (1, 2):
        with node_rig.node_process(graph, NS, params) as node:
            pid = node.proc.pid
            if camera is None:
                time.sleep(2.0)
                # 3 windows: the floor is a few ms per second, near stat's 10 ms resolution.
                return {"idle": asdict(_phase(graph, pid, None, 3 * window))}
            deadline = time.monotonic() + 20.0
            while int(graph.fresh_values(NODE).get("frames_sent", "0")) < 2:
                if time.monotonic() > deadline:
                    break
            else:
                out = {"gated": asdict(_phase(graph, pid, camera, window))}
                graph.enable(NS, False)
                time.sleep(1.0)  # the request in flight finishes; the filter closes
                out["dropped"] = asdict(_phase(graph, pid, camera, window))
                out["attempts"] = attempt
                return out
            # Seen once in 24 runs: a node that never matched the camera (discovery). Retry.
            print(f"bench_intake: no frame reached the node (attempt {attempt})", file=sys.stderr)
    raise SystemExit(f"bench_intake: no frame reached the node twice ({transport}, {mode})")


def _stream(
    graph: node_rig.Graph, server_url: str, transport: str, size: str, window: float, rounds: int
) -> dict[str, Any]:
    """One camera process; plain and filtered node runs against it, interleaved ``rounds`` times."""
    runs: dict[str, list[dict[str, Any]]] = {"plain": [], "filtered": []}
    camera = node_rig.CameraProcess(_topic(transport), transport, SIZES[size], FPS)
    try:
        for _ in range(rounds):
            for mode in runs:
                runs[mode].append(_node_run(graph, server_url, transport, mode, camera, window))
        recent = camera.published(time.time() - 3.0, time.time())
        state = (
            f"alive, {recent / 3.0:.0f} fps in the last 3 s"
            if camera.alive()
            else f"exited rc={camera.proc.returncode}"
        )
    finally:
        camera.close()
    return {"runs": runs, "camera": state}


def _median(phases: list[dict[str, Any]], key: str) -> float:
    vals = []
    for p in phases:
        if key == "ms_per_published":
            vals.append(p["cpu_s"] * 1e3 / p["published"] if p["published"] else float("nan"))
        elif key == "ms_per_received":
            vals.append(p["cpu_s"] * 1e3 / p["received"] if p["received"] else float("nan"))
        elif key == "fps_in":
            vals.append(p["published"] / p["seconds"])
        elif key == "fps_rx":
            vals.append(p["received"] / p["seconds"])
        elif key == "cpu_ms_per_s":
            vals.append(p["cpu_s"] * 1e3 / p["seconds"])
    return statistics.median(vals)


def _threads(phase: dict[str, Any]) -> str:
    top = sorted(phase["threads_ms"].items(), key=lambda kv: -kv[1])[:6]
    return ", ".join(f"{name} {ms:.1f}" for name, ms in top)


def _report(res: dict[str, Any]) -> None:
    idle = [r["idle"] for r in res["idle"]]
    idle_ms_s = _median(idle, "cpu_ms_per_s")
    print(f"## bench_intake ({res['distro']}): node CPU per camera frame, {FPS:.0f} fps in\n")
    print(f"{res['machine']}\n")
    print(
        f"ROS {res['distro']}, RMW {res['rmw']}, Fast DDS profile {Path(res['profile']).name}, "
        f"reliable keep-last-1; rate_hz {RATE_HZ:g}, server service time {SERVICE_MS} ms; "
        f"window {res['window']:g} s x {res['rounds']} rounds per case; medians over rounds.\n"
    )
    print(
        f"Idle floor (node active, no camera): **{idle_ms_s:.2f} ms CPU per s** "
        f"= {idle_ms_s / FPS:.3f} ms per 1/{FPS:.0f} s. By thread (ms in "
        f"{idle[0]['seconds']:.1f} s): {_threads(idle[0])}\n"
    )
    head = "| stream | phase | plain: CPU/received frame | filtered: CPU/published frame | ratio |"
    print(head)
    print("|---|---|---|---|---|")
    detail = [
        "| stream | mode | phase | input path | fps in | fps received | sent/s | CPU ms/s "
        "| CPU/published | CPU/received |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes = []
    for key, stream in res["streams"].items():
        for phase in ("gated", "dropped"):
            plain = [r[phase] for r in stream["runs"]["plain"]]
            filt = [r[phase] for r in stream["runs"]["filtered"]]
            p_rx = _median(plain, "ms_per_received")
            f_pub = _median(filt, "ms_per_published")
            paths = {p["input_path"] for p in filt}
            ratio = f"1/{p_rx / f_pub:.1f}" if "content_filter" in paths else "- (no filter)"
            print(f"| {key} | {phase} | {p_rx:.2f} ms | {f_pub:.2f} ms | {ratio} |")
            for mode, phases in (("plain", plain), ("filtered", filt)):
                path = ",".join(sorted({p["input_path"] for p in phases}))
                detail.append(
                    f"| {key} | {mode} | {phase} | {path} "
                    f"| {_median(phases, 'fps_in'):.1f} | {_median(phases, 'fps_rx'):.1f} "
                    f"| {statistics.median(p['sent'] / p['seconds'] for p in phases):.2f} "
                    f"| {_median(phases, 'cpu_ms_per_s'):.1f} "
                    f"| {_median(phases, 'ms_per_published'):.2f} ms "
                    f"| {_median(phases, 'ms_per_received'):.2f} ms |"
                )
        notes.append(f"{key}: camera after the runs: {stream['camera']}")
        for mode in ("plain", "filtered"):
            run = stream["runs"][mode][0]
            notes.append(
                f"{key} {mode}: CPU by thread, ms per window: gated: {_threads(run['gated'])}; "
                f"dropped: {_threads(run['dropped'])}"
            )
    print()
    print("\n".join(detail))
    print()
    for n in notes:
        print(f"- {n}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="640x480,1080p,4k")
    ap.add_argument("--transports", default="raw,compressed")
    ap.add_argument("--window", type=float, default=4.0, help="seconds per measured phase")
    ap.add_argument("--rounds", type=int, default=1, help="node runs per mode and stream")
    ap.add_argument("--json", default="", help="also write the raw results here")
    args = ap.parse_args()
    from model_server import ModelServer

    server = ModelServer()
    graph = node_rig.Graph("bench_intake_orchestrator")
    res: dict[str, Any] = {
        "distro": os.environ.get("ROS_DISTRO", "?"),
        "rmw": os.environ["RMW_IMPLEMENTATION"],
        # The Fast DDS profile every process loads (node_rig's children take this environment).
        "profile": os.environ.get(
            fastdds_profile(os.environ.get("ROS_DISTRO", "")).variable, "none"
        ),
        "window": args.window,
        "rounds": args.rounds,
        "machine": node_rig.machine(),
        "streams": {},
        "idle": [],
    }
    try:
        url = server.url(SERVICE_MS)
        for _ in range(args.rounds):
            res["idle"].append(_node_run(graph, url, "raw", "filtered", None, args.window))
        for transport in args.transports.split(","):
            for size in args.sizes.split(","):
                key = f"{size} {transport}"
                res["streams"][key] = _stream(graph, url, transport, size, args.window, args.rounds)
                print(f"bench_intake: {key} done", file=sys.stderr, flush=True)
                if args.json:  # partial results survive a later failure
                    Path(args.json).write_text(json.dumps(res, indent=1))
    finally:
        graph.close()
        server.close()
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    _report(res)


if __name__ == "__main__":
    main()
