"""The end-to-end demo: real perception on the embedded reference model, through the real node.

``step-perception demo`` (what ``make demo`` runs):

1. generates a bag of held-out synthetic tabletop scenes (seed never used in training),
2. starts ``transformers serve`` with the reference model on 127.0.0.1,
3. starts the real ROS 2 node with the ``openai`` backend pointed at it,
4. starts the recorder, then replays the scenes bag into the ROS graph,
5. stops everything and runs ``eval``, printing a results table and the report paths.

It reports only latencies it measured: in lockstep (the default) the replay's per-frame round
trip (frame published -> answer received, wall clock) and the node's own frame-in -> result-out
percentiles from its ``/diagnostics``; with ``--real-time`` also stamp -> receipt per message.

Every process it starts runs in its own process group and is stopped at the end, on failure
and on Ctrl-C alike. The end-to-end test runs the same code with fewer scenes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from step_perception.core.errors import StepPerceptionError
from step_perception.ros.dds_profile import profile_env

__all__ = ["DemoError", "DemoOptions", "DemoOutcome", "ProcessSet", "add_arguments", "run_demo"]

#: Scenes seed for the demo and the end-to-end test; never used in training (see the model card).
HELD_OUT_SEED = 4242


class DemoError(StepPerceptionError):
    """A demo step failed (a process died, a server never became ready, ...)."""


def default_model_dir() -> Path:
    """Return the reference model folder: ``--model``'s default.

    ``$STEP_PERCEPTION_MODEL`` (``env.sh`` points it at the checkout's ``models/tabletop-ref``),
    else ``models/tabletop-ref`` under the current directory (the repository root, where the
    README's commands run). The folder is not installed with this package: it is a model.
    """
    env = os.environ.get("STEP_PERCEPTION_MODEL")
    return Path(env) if env else Path("models") / "tabletop-ref"


def node_params_file() -> Path:
    """Return the node's installed ``params.yaml`` (the ament share of ``step_perception``)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    try:
        share = Path(get_package_share_directory("step_perception"))
    except PackageNotFoundError as err:
        raise DemoError(
            "step_perception is not installed: run make build, then . ./env.sh"
        ) from err
    return share / "config" / "params.yaml"


@dataclass(frozen=True)
class DemoOptions:
    """What the demo runs on; defaults are the embedded default of ``make demo``."""

    out: Path
    scenes: int = 24
    seed: int = HELD_OUT_SEED
    fps: float = 1.0  # camera rate of the generated bag; slow enough that every frame is answered
    rate_hz: float = 10.0  # node throttle; above fps so the throttle never drops a demo frame
    model_dir: Path = field(default_factory=default_model_dir)
    port: int = 0  # 0 = pick a free port
    namespace: str = "/camera"
    ready_timeout_s: float = 120.0
    settle_s: float = 3.0  # wait after the last frame for the last answers
    # Lockstep replay (the default): each frame is played once the previous one is answered (bag
    # time paused), so every frame is scored on any machine. Stamp-to-receipt latency is then not
    # meaningful and left out; the replay's per-frame round trip and the node's own latency
    # (frame in -> result out, from /diagnostics) are reported instead.
    # Real time (False) also answered 24 of 24 here, with /clock at 10 Hz (at 100 Hz the clock
    # traffic in every use_sim_time process starved the 2 cores: 12-18 of 24 answered).
    lockstep: bool = True
    style: str = "standard"  # scene look (make-scenes --style)


@dataclass(frozen=True)
class DemoOutcome:
    """Where the demo left its results."""

    scenes_bag: Path
    run_bag: Path
    report_dir: Path
    report: dict[str, object]
    node_stats: dict[str, str]  # the node's last /diagnostics key/values (latencies, drops, ...)
    lockstep: bool = True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tool(name: str) -> list[str]:
    """Command prefix of one of our console scripts, falling back to ``python -m``."""
    modules = {
        "step-perception": "step_perception_tools.cli",
        "perception_node": "step_perception.ros.main",
    }
    found = shutil.which(name)
    return [found] if found else [sys.executable, "-m", modules[name]]


class ProcessSet:
    """Child processes started in their own process groups, all stopped on exit.

    Stopping sends SIGINT (lets the recorder close its bag and the node shut down
    cleanly), then SIGTERM, then SIGKILL to the whole group, newest process first.
    """

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout+stderr to ``<log_dir>/<name>.log``."""
        self._log_dir.mkdir(parents=True, exist_ok=True)
        log = (self._log_dir / f"{name}.log").open("wb")
        proc = subprocess.Popen(
            list(argv), stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()  # the child holds its own descriptor
        self._procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        """Raise DemoError naming any child that already exited."""
        for name, proc in self._procs:
            if proc.poll() is not None:
                tail = self.log_tail(name)
                raise DemoError(f"{name} exited with code {proc.returncode}; log ends:\n{tail}")

    def wait_for_log(self, name: str, text: str, timeout_s: float) -> None:
        """Wait until ``text`` appears in a child's log; DemoError if it exits or times out."""
        path = self._log_dir / f"{name}.log"
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            self.check_alive()
            with contextlib.suppress(OSError):
                if text in path.read_text(errors="replace"):
                    return
            time.sleep(0.1)
        raise DemoError(f"{name} never logged {text!r} in {timeout_s:g} s:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 15) -> str:
        """Return the last lines of a child's log."""
        path = self._log_dir / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, name: str, timeout_s: float = 10.0) -> int | None:
        """Stop one child (SIGINT, then SIGTERM, then SIGKILL); returns its exit code."""
        for i, (n, proc) in enumerate(self._procs):
            if n == name:
                del self._procs[i]
                return _stop(proc, timeout_s)
        return None

    def stop_all(self) -> None:
        """Stop every child, newest first."""
        while self._procs:
            _, proc = self._procs.pop()
            _stop(proc, 10.0)


def _stop(proc: subprocess.Popen[bytes], timeout_s: float) -> int | None:
    for sig, wait_s in ((signal.SIGINT, timeout_s), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)
    return proc.poll()


def _wait_http_ready(url: str, procs: ProcessSet, timeout_s: float) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        procs.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2.0) as resp:  # loopback URL we built
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise DemoError(f"{url} not ready after {timeout_s:.0f} s")


def _run_step(argv: Sequence[str], what: str, env: dict[str, str]) -> None:
    proc = subprocess.run(list(argv), env=env, check=False)
    if proc.returncode != 0:
        raise DemoError(f"{what} failed with exit code {proc.returncode}: {' '.join(argv)}")


@contextlib.contextmanager
def _interrupt_as_exception() -> Iterator[None]:
    """Turn SIGTERM into KeyboardInterrupt so ``finally`` blocks stop the children."""

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_demo(opts: DemoOptions) -> DemoOutcome:
    """Run the whole demo; returns the evaluation report. Raises DemoError on failure."""
    if not (opts.model_dir / "config.json").is_file():
        raise DemoError(f"no model folder at {opts.model_dir} (config.json missing)")
    out = opts.out
    out.mkdir(parents=True, exist_ok=True)
    scenes_bag, run_bag, report_dir = out / "scenes", out / "run", out / "eval"
    round_trips = out / "round_trips.json"
    for path in (scenes_bag, run_bag):
        if path.exists():
            shutil.rmtree(path)
    env = dict(os.environ)
    # The shipped Fast DDS profile (large frames over shared memory, 100 ms heartbeat), as env.sh.
    env.update(profile_env(env.get("ROS_DISTRO", ""), node_params_file().parent, env))
    env["HF_HUB_OFFLINE"] = "1"
    env.setdefault("PYTHONUNBUFFERED", "1")
    cli = _tool("step-perception")
    port = opts.port or _free_port()
    base_url = f"http://127.0.0.1:{port}/v1"
    model = str(opts.model_dir.resolve())

    _run_step(
        [*cli, "make-scenes", "--out", str(scenes_bag), "--count", str(opts.scenes),
         "--seed", str(opts.seed), "--fps", str(opts.fps), "--style", opts.style],
        "make-scenes", env,
    )  # fmt: skip
    procs = ProcessSet(out / "logs")
    with _interrupt_as_exception():
        try:
            serve = Path(sys.executable).with_name("transformers")
            procs.start(
                "server",
                [str(serve), "serve", "--host", "127.0.0.1", "--port", str(port),
                 "--trust-remote-code", "--device", "cpu", "--dtype", "float32", model],
                env,
            )  # fmt: skip
            _wait_http_ready(f"{base_url}/models", procs, opts.ready_timeout_s)
            ns = opts.namespace
            procs.start(
                "node",
                [*_tool("perception_node"), "--ros-args",
                 "--params-file", str(node_params_file()),
                 "-r", f"__ns:={ns}",
                 "-p", "backend:=openai", "-p", f"endpoint:={base_url}", "-p", f"model:={model}",
                 "-p", "model_profile:=generic", "-p", "task:=detect",
                 "-p", f"rate_hz:={opts.rate_hz}", "-p", "use_depth:=true",
                 "-p", "max_frame_age_s:=5.0", "-p", "request_timeout_s:=10.0",
                 "-p", "reliability:=reliable", "-p", "use_sim_time:=true"],
                env,
            )  # fmt: skip
            procs.start(
                "record",
                # Not debug_image: eval draws its own samples, and a 1280x720 annotated frame per
                # answer would double the DDS traffic this 2-core machine has to carry.
                [*cli, "record", str(run_bag), "--namespace", ns, "--use-sim-time",
                 "--topics", "detections", "scene", "command", "markers"],
                env,
            )  # fmt: skip
            # Bag stamps are in the past: the node and the recorder run on the bag's /clock
            # (use_sim_time), as with `ros2 bag play --clock`.
            # Answers are volatile: replay only once the recorder has matched the node's output,
            # or the first answers are lost (a loaded CI run recorded 2 of 8).
            procs.wait_for_log(
                "record", f"matched {ns.rstrip('/')}/detections", opts.ready_timeout_s
            )
            procs.check_alive()
            # /clock at 10 Hz: at 100 Hz the clock traffic alone starved this 2-core machine.
            _run_step(
                [*cli, "replay", str(scenes_bag), "--quiet", "--reliable", "--clock", "10",
                 "--wait-for-subscribers", "20",
                 *(["--lockstep", f"{ns}/detections", "--lockstep-timeout", "30",
                    "--lockstep-latency-out", str(round_trips)]
                   if opts.lockstep else []),
                 "--topics", f"{ns}/image_raw", f"{ns}/camera_info", f"{ns}/depth/image_raw"],
                "replay", env,
            )  # fmt: skip
            time.sleep(opts.settle_s)
            procs.check_alive()
            procs.stop("record")
        finally:
            procs.stop_all()
    _run_step(
        [*cli, "eval", str(run_bag), "--truth", str(scenes_bag), "--out", str(report_dir),
         *(["--no-stamp-latency", "--round-trips", str(round_trips)] if opts.lockstep else [])],
        "eval", env,
    )  # fmt: skip
    report = json.loads((report_dir / "report.json").read_text())
    from step_perception_tools.evaluate import node_diagnostics

    return DemoOutcome(
        scenes_bag, run_bag, report_dir, report, node_diagnostics(run_bag), opts.lockstep
    )


def _ms(value: object) -> str:
    """Seconds (a number or its string) as whole milliseconds; "n/a" when not a number."""
    try:
        v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return "n/a"
    return "n/a" if v != v else f"{v * 1e3:.0f} ms"


def summary_line(outcome: DemoOutcome) -> str:
    """One line: what the run showed (quality, measured latency) and where the pictures are."""
    r, st = outcome.report, outcome.node_stats

    def num(key: str) -> str:
        v = r.get(key)
        return f"{v:.3f}" if isinstance(v, float) else "n/a"

    parts = [
        f"{r.get('answered_frames')}/{r.get('truth_frames')} frames answered",
        f"precision {num('precision')}, recall {num('recall')} (exact label, IoU >= 0.5)",
        f"node frame in -> result out p50 {_ms(st.get('latency_p50_s'))}, "
        f"p95 {_ms(st.get('latency_p95_s'))}",
    ]
    if outcome.lockstep:
        parts.append(f"round trip p50 {_ms(r.get('round_trip_median_s'))}")
    else:
        parts.append(f"stamp -> receipt p50 {_ms(r.get('latency_median_s'))}")
    pictures = " and ".join(str(outcome.report_dir / n) for n in ("samples.png", "latency.png"))
    return "demo: " + "; ".join(parts) + f"; pictures: {pictures}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``step-perception demo``."""
    p.add_argument(
        "--out", type=Path, default=Path("out/demo"), help="output folder (default out/demo)"
    )
    p.add_argument("--scenes", type=int, default=24, help="number of scenes (default 24)")
    p.add_argument(
        "--seed", type=int, default=HELD_OUT_SEED, help="scenes seed (default: held out)"
    )
    p.add_argument("--model", type=Path, default=None, help="reference model folder")
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    p.add_argument(
        "--real-time",
        action="store_true",
        help="replay at the bag's own pace instead of frame by frame (lockstep, the default); "
        "also reports stamp -> receipt latency",
    )
    p.add_argument(
        "--style",
        choices=["standard", "randomised", "flat"],
        default="standard",
        help="scene look (default standard; flat is a look the reference model never trained on)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m step_perception_tools.demo``."""
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(p)
    args = p.parse_args(argv)
    opts = DemoOptions(
        out=args.out,
        scenes=args.scenes,
        seed=args.seed,
        port=args.port,
        lockstep=not args.real_time,
        style=args.style,
    )
    if args.model is not None:
        opts = dataclasses.replace(opts, model_dir=args.model)
    try:
        outcome = run_demo(opts)
    except DemoError as err:
        print(f"demo: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("demo: interrupted; all processes stopped", file=sys.stderr)
        return 130
    stats = outcome.node_stats
    if stats:
        print(
            "node's own latency (its /diagnostics), frame in -> result out: "
            f"p50 {_ms(stats.get('latency_p50_s'))}, p95 {_ms(stats.get('latency_p95_s'))}; "
            f"model request: p50 {_ms(stats.get('model_latency_p50_s'))}, "
            f"p95 {_ms(stats.get('model_latency_p95_s'))}; "
            f"parse failures {stats.get('parse_failures', '?')}, "
            f"frames without depth in time {stats.get('drops_no_depth_in_time', '0')}"
        )
    print(f"\nscenes bag: {outcome.scenes_bag}\nrun bag:    {outcome.run_bag}")
    print(f"report:     {outcome.report_dir / 'report.json'}")
    print(summary_line(outcome))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
