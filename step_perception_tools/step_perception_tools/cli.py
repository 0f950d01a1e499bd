"""``step-perception``: make synthetic scenes, replay and record bags, evaluate runs.

Every subcommand explains itself with ``--help``. Subcommands that talk to the
ROS graph (``replay``, ``record``) need a sourced ROS 2 environment; the others
only read and write bag files.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from rich.console import Console
from rich.markup import escape
from step_perception.core.errors import StepPerceptionError

# The subcommands' modules are imported when they run: `--help` and the bag-only commands never
# load rclpy, and no subcommand module imports this one back.
__all__ = ["main"]

_EPILOG = """\
examples:
  step-perception make-scenes --out scenes --count 200 --seed 1
  step-perception replay scenes --clock --rate 0.5 --loop
  step-perception record run1 --duration 60 --use-sim-time
  step-perception eval run1 --truth scenes --out eval1
  step-perception run-offline scenes -p endpoint=http://localhost:8000/v1 --eval eval2
  step-perception demo --scenes 24
  step-perception plan-gpu --model step3p7-flash --dtype fp8 --concurrency 8
"""

_TRUTH_HELP = """\
Ground truth goes to /camera/ground_truth as step_perception_msgs/ObjectDetectionArray,
the node's own output type: header = the colour image's header (same stamp and
frame_id), image_width/height = the image size, and per object: id (index), label
"<colour> <shape>", bbox in source pixels (centre and size of the visible extent),
score 1.0, has_position true and position = the object's surface point at the box
centre [m] in the camera optical frame (x right, y down, z forward).
"""


def _read_round_trips(path: Path | None) -> tuple[float, ...]:
    """Read the JSON list of seconds that ``replay --lockstep-latency-out`` wrote (none: empty)."""
    if path is None:
        return ()
    try:
        values = json.loads(path.read_text())
        return tuple(float(v) for v in values)
    except (OSError, ValueError, TypeError) as err:
        raise StepPerceptionError(f"--round-trips {path}: not a JSON list of seconds") from err


# --------------------------------------------------------------------------- parser


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _remap(text: str) -> tuple[str, str]:
    src, sep, dst = text.partition(":=")
    if not sep or not src or not dst:
        raise argparse.ArgumentTypeError(f"expected FROM:=TO, got {text!r}")
    return src, dst


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(
        prog="step-perception",
        description="Tools around the step_perception node: synthetic scenes with ground "
        "truth, bag replay into ROS, recording the node's outputs, and scoring them.",
        epilog=_EPILOG,
        formatter_class=fmt,
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser(
        "make-scenes",
        help="write synthetic tabletop scenes with ground truth to a rosbag2",
        description="Render synthetic tabletop scenes (coloured solids on textured tables, "
        "varied light, partial occlusion, 0.5-2 m away), deterministic by seed, and write "
        "them as a rosbag2. Per scene, all with one header stamp (frame "
        "camera_color_optical_frame) at increasing stamps of a --fps camera:\n"
        "  /camera/image_raw             sensor_msgs/Image (rgb8 or bgr8)\n"
        "  /camera/image_raw/compressed  sensor_msgs/CompressedImage (jpeg)\n"
        "  /camera/camera_info           sensor_msgs/CameraInfo (pinhole K, P; plumb_bob, D=0)\n"
        "  /camera/depth/image_raw       sensor_msgs/Image 16UC1 [mm], aligned with the colour "
        "image, 0 = no reading\n"
        "  /camera/ground_truth          step_perception_msgs/ObjectDetectionArray\n\n"
        + _TRUTH_HELP,
        formatter_class=fmt,
    )
    s.add_argument("--out", type=Path, required=True, help="bag folder to create (must not exist)")
    s.add_argument("--count", type=int, default=30, help="number of scenes (default 30)")
    s.add_argument("--seed", type=int, default=0, help="scene stream seed (default 0)")
    s.add_argument("--width", type=int, default=1280, help="image width [px] (default 1280)")
    s.add_argument("--height", type=int, default=720, help="image height [px] (default 720)")
    s.add_argument(
        "--fps", type=_positive_float, default=15.0, help="camera rate of the stamps (default 15)"
    )
    s.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="(default mcap)")
    s.add_argument("--encoding", choices=["rgb8", "bgr8"], default="rgb8", help="(default rgb8)")
    s.add_argument("--jpeg-quality", type=int, default=90, help="(default 90)")
    s.add_argument(
        "--style",
        choices=["standard", "randomised", "flat"],
        default="standard",
        help="look of the scenes: standard (default), randomised (the reference model's "
        "domain-randomised training look) or flat (flat colours, toon shading, outlines: a "
        "look the reference model never saw in training)",
    )
    s.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="render processes (default 0 = one per CPU core, at most 8)",
    )

    r = sub.add_parser(
        "replay",
        help="play a bag's topics into the ROS graph (like ros2 bag play)",
        description="Publish the messages of a rosbag2 (MCAP or sqlite3) with their original "
        "timing, bytes unchanged (header stamps are the bag's). With --clock, /clock follows "
        "the bag's time so nodes with use_sim_time=true see bag time.\n\n"
        "QoS: best effort by default, like a camera driver. FastDDS needs a second or two to "
        "connect its large-data transport, and best-effort frames sent before that are lost; "
        "for exact replays (tests, evaluations) use --reliable with --wait-for-subscribers and "
        "a reliable subscriber.",
        formatter_class=fmt,
    )
    r.add_argument("bag", type=Path, help="rosbag2 folder, or a .mcap/.db3 file")
    r.add_argument("--rate", type=_positive_float, default=1.0, help="speed factor (default 1)")
    r.add_argument("--loop", action="store_true", help="start over at the end, until stopped")
    r.add_argument(
        "--clock",
        type=_positive_float,
        nargs="?",
        const=100.0,
        default=None,
        metavar="HZ",
        help="publish /clock (rosgraph_msgs/Clock) at HZ wall rate (default 100 when given) "
        "and before every message",
    )
    r.add_argument(
        "--remap",
        type=_remap,
        action="append",
        default=[],
        metavar="FROM:=TO",
        help="publish topic FROM as TO (repeatable), e.g. /camera/image_raw:=/cam1/image_raw",
    )
    r.add_argument(
        "--topics", nargs="+", default=[], metavar="TOPIC", help="play only these bag topics"
    )
    r.add_argument(
        "--reliable",
        action="store_true",
        help="reliable publishers (default: best effort, sensor-data QoS)",
    )
    r.add_argument(
        "--delay",
        type=float,
        default=0.5,
        help="seconds to wait after creating publishers, for discovery (default 0.5)",
    )
    r.add_argument(
        "--wait-for-subscribers",
        type=float,
        default=0.0,
        metavar="S",
        help="first wait up to S seconds until every played topic has a subscriber "
        "(discovery between processes can take a second or two)",
    )
    r.add_argument(
        "--lockstep",
        default=None,
        metavar="OUTPUT_TOPIC",
        help="play frame by frame: before the next frame, wait for the answer to the previous "
        "one on OUTPUT_TOPIC (e.g. /camera/detections, matched by header stamp); bag time "
        "pauses meanwhile. Every frame gets processed, however slow the model",
    )
    r.add_argument(
        "--lockstep-input",
        default="/camera/image_raw",
        metavar="TOPIC",
        help="bag topic whose messages are the frames (default %(default)s)",
    )
    r.add_argument(
        "--lockstep-timeout",
        type=_positive_float,
        default=30.0,
        metavar="S",
        help="fail the replay (exit 1) when one answer takes longer than S seconds (default 30)",
    )
    r.add_argument(
        "--lockstep-node",
        default=None,
        metavar="NODE",
        help="with --lockstep: the node's fully qualified name (e.g. /camera/step_perception); a "
        "frame it finished with a failure (its /diagnostics: parse failure, backend error) "
        "publishes nothing and counts as failed, instead of failing the replay",
    )
    r.add_argument(
        "--lockstep-latency-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="with --lockstep: write each answered frame's round trip (wall seconds from "
        "publishing the frame to its answer's arrival) to FILE as a JSON list",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar")

    c = sub.add_parser(
        "record",
        help="record the node's outputs to an MCAP bag (Foxglove and rosbags read it)",
        description="Subscribe to the node's outputs and write the received bytes unchanged to "
        "a new rosbag2 (MCAP by default), with each message logged at its receive time on "
        "this tool's clock (eval's latency). Topic types are discovered from the graph. Stops "
        "on Ctrl-C / SIGTERM or after --duration, and closes the bag cleanly.",
        formatter_class=fmt,
    )
    c.add_argument("out", type=Path, help="bag folder to create (must not exist)")
    c.add_argument(
        "--namespace",
        default="/",
        help="namespace of the node's topics (default /): NS/detections, NS/scene, "
        "NS/command, NS/debug_image, NS/markers",
    )
    c.add_argument(
        "--topics",
        nargs="+",
        default=None,
        metavar="TOPIC",
        help="record these topics instead of the node's outputs (relative names get the namespace)",
    )
    c.add_argument("--no-diagnostics", action="store_true", help="leave out /diagnostics")
    c.add_argument("--duration", type=_positive_float, default=None, help="stop after S seconds")
    c.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap", help="(default mcap)")
    c.add_argument(
        "--use-sim-time",
        action="store_true",
        help="log receive times on /clock time (pair with replay --clock for eval latency)",
    )

    e = sub.add_parser(
        "eval",
        help="score a recorded run against a scenes bag's ground truth",
        description="Pair output detections with ground truth by header stamp, match boxes "
        "greedily by IoU and report precision/recall/F1 (IoU >= threshold and exact label), "
        "mean IoU and label accuracy (box matches, any label), 3D position error, the "
        "fraction of frames answered and latency (log time - stamp). Writes report.json, "
        "latency.png and samples.png (truth green, predictions magenta) to --out.",
        formatter_class=fmt,
    )
    e.add_argument("run_bag", type=Path, help="bag from `record` or `run-offline --out`")
    e.add_argument("--truth", type=Path, required=True, help="scenes bag with ground truth")
    e.add_argument("--out", type=Path, default=None, help="folder for report.json and PNGs")
    e.add_argument("--iou", type=float, default=0.5, help="IoU threshold (default 0.5)")
    e.add_argument(
        "--detections-topic",
        default=None,
        help="output topic to score (default: the bag's only ObjectDetectionArray topic)",
    )
    e.add_argument("--truth-topic", default="/camera/ground_truth", help="(default %(default)s)")
    e.add_argument("--image-topic", default="/camera/image_raw", help="(default %(default)s)")
    e.add_argument("--samples", type=int, default=6, help="frames drawn in samples.png")
    e.add_argument(
        "--no-stamp-latency",
        action="store_true",
        help="leave out the stamp -> receipt latency (void after a lockstep replay, which "
        "pauses bag time)",
    )
    e.add_argument(
        "--round-trips",
        type=Path,
        default=None,
        metavar="FILE",
        help="per-frame round trips written by `replay --lockstep-latency-out` (table and plot)",
    )

    o = sub.add_parser(
        "run-offline",
        help="feed a scenes bag straight through the core and a backend (no DDS)",
        description="Read colour, depth and camera info from a bag and run every frame (or "
        "every --every-th) through the perception core with a backend, without ROS. "
        "Optionally write the outputs as a bag in record's format (--out) and evaluate them "
        "against the bag's ground truth (--eval).",
        formatter_class=fmt,
    )
    from step_perception_tools.offline import add_arguments

    add_arguments(o)

    d = sub.add_parser(
        "demo",
        help="end to end: scenes -> replay -> the real node + reference model -> record -> eval",
        description="Run the whole loop on held-out synthetic scenes with the embedded reference "
        "model served locally (see step_perception_tools.demo).",
        formatter_class=fmt,
    )
    from step_perception_tools.demo import add_arguments as add_demo_arguments

    add_demo_arguments(d)

    g = sub.add_parser(
        "plan-gpu",
        help="GPU memory of a model server: weights, KV cache, headroom, GPUs needed",
        description="How much GPU memory a server for a VLM needs (weights in a storage format "
        "with its scale/zero-point overheads, KV cache of the concurrent requests incl. image "
        "tokens, runtime headroom) and how many GPUs of each type it takes. Presets cite their "
        "published configs (step_perception_tools.plan_gpu).",
        formatter_class=fmt,
    )
    from step_perception_tools.plan_gpu import add_arguments as add_plan_gpu_arguments

    add_plan_gpu_arguments(g)

    k = sub.add_parser(
        "check-endpoint",
        help="probe a live model server: models, latency, response_format, reasoning, image tokens",
        description="Send the node's own request to a server and report whether it is fit for "
        "the node; exits 1 when something is wrong (see step_perception_tools.check_endpoint).",
        formatter_class=fmt,
    )
    from step_perception_tools.check_endpoint import add_arguments as add_check_arguments

    add_check_arguments(k)
    return p


# --------------------------------------------------------------------------- commands


def _install_stop_handlers(stop: threading.Event) -> None:
    """SIGINT/SIGTERM set ``stop`` (a second one raises KeyboardInterrupt at once).

    The Python handler runs on the main thread between two bytecodes, possibly while that
    thread is inside ``stop.wait()`` holding the Event's (non-reentrant) lock, so it must take
    no lock itself: calling ``stop.set()`` there hung a ``replay --loop`` in CI (its stack: the
    handler blocked acquiring that lock). Instead the C-level handler writes the signal to a
    wakeup pipe (``signal.set_wakeup_fd``) and a watcher thread sets ``stop``.
    """
    received = [0]

    def handler(signum: int, _frame: FrameType | None) -> None:
        received[0] += 1  # no lock: see above
        if received[0] > 1:  # second Ctrl-C: give up at once
            raise KeyboardInterrupt

    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def watch() -> None:
        while os.read(read_fd, 1):
            stop.set()

    threading.Thread(target=watch, name="stop-signals", daemon=True).start()
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


def _run(args: argparse.Namespace, console: Console) -> int:
    if args.command == "make-scenes":
        from step_perception_tools.make_scenes import make_scenes

        jobs = args.jobs if args.jobs > 0 else min(8, os.cpu_count() or 1)
        n = make_scenes(
            args.out,
            count=args.count,
            seed=args.seed,
            width=args.width,
            height=args.height,
            fps=args.fps,
            storage=args.storage,
            encoding=args.encoding,
            jpeg_quality=args.jpeg_quality,
            jobs=jobs,
            console=console,
            style=args.style,
        )
        console.print(escape(f"wrote {n} scenes to {args.out}"))
        return 0
    if args.command == "eval":
        from step_perception_tools.bags import CameraTopics
        from step_perception_tools.evaluate import evaluate_bags

        evaluate_bags(
            args.run_bag,
            args.truth,
            args.out,
            iou_threshold=args.iou,
            detections_topic=args.detections_topic,
            topics=CameraTopics(image=args.image_topic, truth=args.truth_topic),
            samples=args.samples,
            console=Console(),
            stamp_latency=not args.no_stamp_latency,
            round_trips_s=_read_round_trips(args.round_trips),
        )
        return 0
    if args.command == "run-offline":
        from step_perception_tools.offline import run_from_args

        return run_from_args(args, console)
    if args.command == "plan-gpu":
        from step_perception.core.profiles import get_profile

        from step_perception_tools.plan_gpu import PRESETS
        from step_perception_tools.plan_gpu import run as plan_gpu

        # The image tokens come from the profile's own token function (core/tokens.py), so the
        # send size (--camera, --image-side) changes the answer; None where it is not known.
        profile = get_profile(PRESETS[args.model].profile)
        return plan_gpu(args, image_tokens=profile.image_tokens)

    stop = threading.Event()
    _install_stop_handlers(stop)
    if args.command == "replay":
        from step_perception_tools.replay import ReplayOptions, replay

        opts = ReplayOptions(
            bag=args.bag,
            rate=args.rate,
            loop=args.loop,
            clock_hz=args.clock,
            remap=dict(args.remap),
            topics=tuple(args.topics),
            reliable=args.reliable,
            delay_s=args.delay,
            wait_subscribers_s=args.wait_for_subscribers,
            lockstep_output=args.lockstep,
            lockstep_input=args.lockstep_input,
            lockstep_timeout_s=args.lockstep_timeout,
            lockstep_node=args.lockstep_node,
        )
        stats = replay(opts, stop=stop, console=None if args.quiet else console)
        console.print(f"published {stats.messages} messages ({stats.passes} pass(es))")
        if args.lockstep:
            console.print(
                f"lockstep: {stats.answered} answered, {stats.failed} failed, "
                f"{stats.unanswered} unanswered"
            )
            if args.lockstep_latency_out is not None:
                args.lockstep_latency_out.write_text(json.dumps(list(stats.round_trips_s)) + "\n")
        return 0
    if args.command == "record":
        from step_perception_tools.record import RecordOptions, record

        ropts = RecordOptions(
            out=args.out,
            namespace=args.namespace,
            topics=tuple(args.topics) if args.topics is not None else None,
            diagnostics=not args.no_diagnostics,
            duration_s=args.duration,
            storage=args.storage,
            use_sim_time=args.use_sim_time,
        )
        rstats = record(ropts, stop=stop, console=console)
        counts = ", ".join(f"{t}: {n}" for t, n in sorted(rstats.counts.items())) or "nothing"
        console.print(escape(f"recorded {counts} -> {rstats.path}"), soft_wrap=True)
        return 0
    raise AssertionError(args.command)  # argparse restricts the choices


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``step-perception``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "demo":  # the demo owns its options and its process handling
        from step_perception_tools.demo import main as demo_main

        return demo_main(argv[argv.index("demo") + 1 :])
    if args.command == "check-endpoint":  # prints its own report, owns its exit status
        from step_perception_tools.check_endpoint import main as check_main

        return check_main(argv[argv.index("check-endpoint") + 1 :])
    console = Console(stderr=True)
    try:
        return _run(args, console)
    except StepPerceptionError as err:
        console.print(f"[red]error:[/red] {escape(str(err))}", soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        console.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
