"""`make vllm-smoke`: the real node over DDS against vLLM serving the tiny Step-3.7 model.

For every task (detect, locate, describe, command) it starts ``perception_node`` (openai backend,
profile step3p7, its own schema as response_format, ``thinking_token_budget`` 8 because random
weights never end their thinking by themselves) against one vLLM server, replays a few synthetic
1280x720 scenes into it frame by frame (``step-perception replay --lockstep``) and records the
node's outputs and ``/diagnostics``. The node's cassette (record mode) keeps every raw answer the
server gave, which is checked against the schema the node sent.

Random weights: the answers are valid JSON of the right shape and mean nothing; the node's parser
rightly drops random boxes that are degenerate (x2 <= x1), and an answer whose objects all fail
validation counts as a parse failure (it publishes nothing for that frame). So the
pass condition is: every frame answered by the server, every answer schema-valid, the node alive;
parse failures are reported, not failed on.

Last line: frames answered, parse failures, schema-valid answers, prompt tokens per image.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import jsonschema
from step_perception.core.profiles import get_profile
from step_perception.core.prompts import answer_schema
from step_perception.core.tokens import step3_image_tokens
from step_perception.core.types import Task
from step_perception_tools.demo import DemoError, ProcessSet
from step_perception_tools.evaluate import node_diagnostics
from vllm_server import REPO, SERVED_MODEL, VllmServerConfig, VllmServerError, running_server

MAX_OBJECTS = 4
ACTIONS = ("pick", "place", "move_to", "look_at", "stop")
PROMPTS = {
    Task.DETECT: "",
    Task.LOCATE: "the red cube",
    Task.DESCRIBE: "",
    Task.COMMAND: "put the red cube away",
}


@dataclass(frozen=True)
class TaskOutcome:
    """What one task's run gave."""

    task: Task
    frames: int
    answers: int
    schema_valid: int
    parse_failures: int
    backend_errors: int
    prompt_tokens: tuple[int, ...]


def _cli() -> list[str]:
    found = shutil.which("step-perception")
    return [found] if found else [sys.executable, "-m", "step_perception_tools.cli"]


def _node() -> list[str]:
    found = shutil.which("perception_node")
    return [found] if found else [sys.executable, "-m", "step_perception.ros.main"]


class SmokeError(RuntimeError):
    """A step of the smoke run (scenes, node start, replay) failed or ran past its bound."""


#: [s] Every wait of a task is bounded; under a loaded 2-core machine each takes a few seconds.
SCENES_TIMEOUT_S = 120.0
NODE_READY_TIMEOUT_S = 60.0  # node configured and the recorder matched to /diagnostics
REPLAY_TIMEOUT_S = 180.0  # discovery (<= 30 s) + frames x lockstep timeout + teardown
LOCKSTEP_TIMEOUT_S = 30.0  # one frame's answer (prefill of 337 image tokens + the answer)


def _run(argv: list[str], env: dict[str, str], log: Path, timeout_s: float) -> None:
    """Run a CLI step with its output in ``log``; SmokeError on failure or past ``timeout_s``.

    The output goes to a file, never to a pipe that nobody reads. A step that outlives its bound
    gets SIGABRT first: with PYTHONFAULTHANDLER (``smoke_env``) it writes every thread's stack to
    its log, so the error says where it hung; then SIGKILL.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )  # fmt: skip
    what = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(argv[:3]))
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGABRT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        raise SmokeError(
            f"{what} did not finish in {timeout_s:g} s (stacks in {log}):\n{_tail(log)}"
        ) from None
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        raise
    if code != 0:
        raise SmokeError(f"{what} failed with {code}; {log} ends:\n{_tail(log)}")


def _tail(log: Path, chars: int = 4000) -> str:
    try:
        return log.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _check_server(base_url: str) -> None:
    """SmokeError unless the server's ``/health`` answers 200 within 10 s."""
    root = base_url.rsplit("/v1", 1)[0]
    try:
        with urllib.request.urlopen(f"{root}/health", timeout=10) as reply:
            if reply.status == 200:
                return
            status = str(reply.status)
    except (OSError, urllib.error.URLError) as err:
        status = repr(err)
    raise SmokeError(f"the vLLM server at {base_url} is not healthy ({status})")


def make_scenes(out: Path, frames: int, env: dict[str, str]) -> Path:
    """Write ``frames`` synthetic 1280x720 scenes to ``out/scenes`` (replaced)."""
    scenes = out / "scenes"
    if scenes.exists():
        shutil.rmtree(scenes)
    _run(
        [*_cli(), "make-scenes", "--out", str(scenes), "--count", str(frames), "--seed", "11",
         "--fps", "1"],
        env, out / "logs" / "make-scenes.log", SCENES_TIMEOUT_S,
    )  # fmt: skip
    return scenes


def smoke_env() -> dict[str, str]:
    """Return the environment the node, recorder and replayer run in."""
    # PYTHONFAULTHANDLER: a step stopped with SIGABRT for running past its bound dumps its stacks.
    # The transports are the shipped profile's, which env.sh loads (config/fastdds*.xml).
    return dict(os.environ, PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", PYTHONFAULTHANDLER="1")


def run_task(
    task: Task, base_url: str, scenes: Path, out: Path, env: dict[str, str]
) -> TaskOutcome:
    """Run one node for ``task`` over every scene of ``scenes``, frame by frame."""
    ns = "/camera"  # the scenes' namespace; one node at a time
    cassette, run_bag = out / f"{task.value}.cassette.jsonl", out / f"{task.value}-run"
    for path in (cassette, run_bag):
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    _check_server(base_url)
    logs = out / "logs" / task.value
    procs = ProcessSet(logs)
    params = REPO / "step_perception" / "config" / "params.yaml"
    try:
        procs.start(
            "node",
            [*_node(), "--ros-args", "--params-file", str(params), "-r", f"__ns:={ns}",
             "-p", "backend:=openai", "-p", f"endpoint:={base_url}", "-p", f"model:={SERVED_MODEL}",
             "-p", "model_profile:=step3p7", "-p", f"task:={task.value}",
             *(["-p", f"prompt:={PROMPTS[task]}"] if PROMPTS[task] else []),
             "-p", f"max_objects:={MAX_OBJECTS}",
             "-p", "thinking_token_budget:=8", "-p", "max_tokens:=1500",
             "-p", f"allowed_actions:={', '.join(ACTIONS)}",
             "-p", f"cassette:={cassette}", "-p", "cassette_mode:=record",
             "-p", "rate_hz:=5.0", "-p", "max_frame_age_s:=30.0", "-p", "request_timeout_s:=60.0",
             "-p", "reliability:=reliable", "-p", "use_sim_time:=true"],
            env,
        )  # fmt: skip
        procs.start(
            "record",
            [*_cli(), "record", str(run_bag), "--namespace", ns, "--use-sim-time",
             "--topics", "detections", "scene", "command"],
            env,
        )  # fmt: skip
        # Both up before the first frame: the node configured (its backend built), the recorder
        # matched to /diagnostics (it keeps the node's counters). Each bounded, with its log.
        procs.wait_for_log("node", "configured:", NODE_READY_TIMEOUT_S)
        procs.wait_for_log("record", "matched /diagnostics", NODE_READY_TIMEOUT_S)
        _run(
            [*_cli(), "replay", str(scenes), "--quiet", "--reliable", "--clock", "10",
             "--wait-for-subscribers", "30", "--lockstep", f"{ns}/detections",
             "--lockstep-timeout", f"{LOCKSTEP_TIMEOUT_S:g}",
             # Random weights: a schema-valid answer can still fail the node's checks (a
             # degenerate box); the node then publishes nothing, and the frame counts as failed.
             "--lockstep-node", f"{ns}/step_perception",
             "--topics", f"{ns}/image_raw", f"{ns}/camera_info"],
            env, logs / "replay.log", REPLAY_TIMEOUT_S,
        )  # fmt: skip
        time.sleep(2.0)  # the last /diagnostics period
        procs.check_alive()
        procs.stop("record")
    finally:
        procs.stop_all()
    schema = answer_schema(get_profile("step3p7"), task, MAX_OBJECTS, ACTIONS)
    lines = [json.loads(line) for line in cassette.read_text().splitlines() if line.strip()]
    valid = 0
    for entry in lines:
        try:
            jsonschema.validate(json.loads(entry["text"]), schema)
            valid += 1
        except (json.JSONDecodeError, jsonschema.ValidationError):
            pass
    diag = node_diagnostics(run_bag)
    return TaskOutcome(
        task=task,
        frames=int(diag.get("frames_offered", "0")),
        answers=len(lines),
        schema_valid=valid,
        parse_failures=int(diag.get("parse_failures", "0")),
        backend_errors=int(diag.get("backend_errors", "0")),
        prompt_tokens=tuple(int((e.get("usage") or {}).get("prompt_tokens", 0)) for e in lines),
    )


def main(argv: list[str] | None = None) -> int:
    """Run every task; print one line per task and the summary line last."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "out" / "vllm-smoke")
    parser.add_argument("--frames", type=int, default=3, help="scenes per task (default 3)")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    env = smoke_env()
    scenes = make_scenes(out, args.frames, env)
    outcomes: list[TaskOutcome] = []
    try:
        config = VllmServerConfig(log_path=out / "vllm-server.log")
        with running_server(config) as server:
            print(f"vllm-smoke: vLLM ready in {server.ready_after_s:.0f} s", flush=True)
            for task in Task:
                outcome = run_task(task, server.base_url, scenes, out, env)
                outcomes.append(outcome)
                print(
                    f"vllm-smoke: {task.value:8s} frames {outcome.frames}, answers "
                    f"{outcome.answers}, schema-valid {outcome.schema_valid}, parse failures "
                    f"{outcome.parse_failures}, backend errors {outcome.backend_errors}, "
                    f"prompt tokens {sorted(set(outcome.prompt_tokens))}",
                    flush=True,
                )
    except (VllmServerError, SmokeError, DemoError) as err:
        print(f"vllm-smoke: {err}", file=sys.stderr)
        return 1
    frames = sum(o.frames for o in outcomes)
    answers = sum(o.answers for o in outcomes)
    valid = sum(o.schema_valid for o in outcomes)
    failures = sum(o.parse_failures for o in outcomes)
    image_tokens = step3_image_tokens(728, 410)  # 1280x720 sent at max_image_side 728
    tokens = sorted({t for o in outcomes for t in o.prompt_tokens})
    ok = frames == args.frames * len(Task) and answers == frames and valid == answers
    print(
        f"vllm-smoke: frames answered {answers}/{frames}, parse failures {failures}, "
        f"schema-valid answers {valid}/{answers}, prompt tokens per image {image_tokens} "
        f"(728x410 sent; whole prompts {tokens[0] if tokens else 0}-{tokens[-1] if tokens else 0})"
        + ("" if ok else "  FAILED")
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
