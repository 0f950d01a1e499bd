"""The no-DDS fast path: bag frames straight through the core and a backend.

``run_offline`` feeds the colour image, aligned depth and camera info of each
frame of a scenes bag (or any camera bag) through ``core.pipeline.Perceiver``
with a backend, in stamp order, and yields the results. ``OutputBagWriter``
writes them in the format ``step-perception record`` produces (``/detections``
and ``/scene``), logged at ``stamp + processing time`` so ``eval`` reads the
pipeline latency from them.

``write_oracle_cassette`` writes a replay cassette whose answers are the bag's
ground truth, encoded exactly as a model of the configured profile would answer
for the image the pipeline sends. With the replay backend it exercises the
whole chain (image preparation, request, parsing, mapping back, depth, output
messages, evaluation) with a known-perfect "model".
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape
from step_perception.backends.factory import backend_from_config
from step_perception.core.box_encoding import encode_source_box
from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import ConfigError, StepPerceptionError
from step_perception.core.imaging import prepare_for
from step_perception.core.pipeline import FrameInput, Perceiver, frame_input
from step_perception.core.profiles import get_profile
from step_perception.core.prompts import build_request
from step_perception.core.types import (
    Detection,
    PerceptionResult,
    PreparedImage,
)
from step_perception.ros.messages import detection_array_msg, scene_description_msg

from step_perception_tools.bags import (
    DETECTIONS_TYPE,
    SCENE_TYPE,
    BagWriterBase,
    CameraTopics,
    SceneFrame,
    Storage,
    header_at,
    open_writer,
    read_scene_frames,
    rosbags_family,
    typestore,
)

__all__ = [
    "OfflineOutcome",
    "OutputBagWriter",
    "add_arguments",
    "load_config",
    "oracle_answer",
    "run_from_args",
    "run_offline",
    "write_oracle_cassette",
]


@dataclass(frozen=True)
class OfflineOutcome:
    """What one frame produced."""

    frame: SceneFrame
    result: PerceptionResult | None  # None when the frame failed
    error: str  # the typed error's class and message when it failed, else ""
    latency_s: float  # [s] wall time from submit to result


def _frame_input(frame: SceneFrame, use_depth: bool, timeout_s: float | None) -> FrameInput:
    return frame_input(
        frame.image,
        frame.stamp_ns,
        frame.frame_id,
        depth=frame.depth if use_depth else None,
        intrinsics=frame.intrinsics,
        timeout_s=timeout_s,
    )


def _stamp_done(sink: list[float]) -> Callable[[Future[PerceptionResult]], None]:
    def done(_future: Future[PerceptionResult]) -> None:
        sink.append(time.monotonic())

    return done


def run_offline(
    frames: Iterable[SceneFrame],
    perceiver: Perceiver,
    *,
    use_depth: bool = True,
    inflight: int = 1,
    timeout_s: float | None = 60.0,
) -> Iterator[OfflineOutcome]:
    """Process every frame (up to ``inflight`` at once); outcomes come in input order."""
    window: deque[tuple[SceneFrame, Future[PerceptionResult], float, list[float]]] = deque()

    def settle() -> OfflineOutcome:
        frame, future, t0, done_at = window.popleft()
        try:
            result, error = future.result(), ""
        except StepPerceptionError as err:
            result, error = None, f"{type(err).__name__}: {err}"
        return OfflineOutcome(
            frame, result, error, (done_at[0] if done_at else time.monotonic()) - t0
        )

    for frame in frames:
        done_at: list[float] = []
        t0 = time.monotonic()
        future = perceiver.submit(_frame_input(frame, use_depth, timeout_s))
        future.add_done_callback(_stamp_done(done_at))
        window.append((frame, future, t0, done_at))
        if len(window) >= max(1, inflight):
            yield settle()
    while window:
        yield settle()


# --------------------------------------------------------------------------- output bag


class OutputBagWriter(BagWriterBase):
    """Writes results as ``/detections`` (ObjectDetectionArray) and ``/scene`` (SceneDescription).

    The topics are those the node publishes, under ``namespace``.
    """

    def __init__(
        self, path: str | Path, storage: Storage = Storage.MCAP, namespace: str = "/"
    ) -> None:
        self._store = typestore()
        self._writer = open_writer(path, storage)
        ns = "/" + namespace.strip("/")
        prefix = ns.rstrip("/")
        add = self._writer.add_connection
        self._det = add(f"{prefix}/detections", DETECTIONS_TYPE, typestore=self._store)
        self._scene = add(f"{prefix}/scene", SCENE_TYPE, typestore=self._store)
        self.messages = 0

    def write(self, result: PerceptionResult, log_ns: int) -> None:
        """Write one result, logged at ``log_ns`` (the receive time a recorder would see)."""
        meta = result.frame
        family = rosbags_family()
        header = header_at(meta.stamp_ns, meta.frame_id)
        det = detection_array_msg(
            family, header, result.detections, meta.width, meta.height, result.query
        )
        self._writer.write(self._det, log_ns, self._store.serialize_cdr(det, DETECTIONS_TYPE))
        scene = scene_description_msg(
            family, header, result.summary, result.detections, result.relations
        )
        self._writer.write(self._scene, log_ns, self._store.serialize_cdr(scene, SCENE_TYPE))
        self.messages += 2


# --------------------------------------------------------------------------- oracle cassette


def oracle_answer(truth: Sequence[Detection], image: PreparedImage, profile_name: str) -> str:
    """Return what a perfect ``profile_name`` model answers for ``image`` (its box convention)."""
    profile = get_profile(profile_name)
    objects = []
    for d in truth:
        box = encode_source_box(d.box, image, profile.box_convention)
        objects.append(
            {"label": d.label, profile.box_key: [round(v, 2) for v in box], "score": 1.0}
        )
    return json.dumps({"objects": objects, "summary": f"{len(objects)} objects"})


def write_oracle_cassette(
    frames: Iterable[SceneFrame], config: PerceptionConfig, path: Path
) -> int:
    """Append, for every frame with truth, the truth answer keyed by its request; returns lines."""
    from step_perception.backends.cassette import CassetteEntry

    n = 0
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        for frame in frames:
            if frame.truth is None:
                continue
            image = prepare_for(frame.image, config)
            request = build_request(config, image)
            entry = CassetteEntry(
                key=request.cache_key(),
                model=request.model,
                profile=request.profile,
                image_sha256=image.sha256,
                text=oracle_answer(frame.truth, image, config.model_profile),
                latency_s=0.0,
                endpoint="oracle",
                usage=None,
                attempts=1,
            )
            out.write(entry.to_json() + "\n")
            n += 1
    return n


# --------------------------------------------------------------------------- config + backend


def load_config(params_file: Path | None, params: Sequence[str]) -> PerceptionConfig:
    """Node parameters from a YAML file (flat, or ROS ``node: ros__parameters:``) plus overrides.

    ``params`` are ``NAME=VALUE`` strings, values read as YAML scalars/lists.
    """
    values: dict[str, object] = {}
    if params_file is not None:
        try:
            loaded = yaml.safe_load(params_file.read_text("utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ConfigError(f"cannot read params file {params_file}: {err}") from err
        values.update(_ros_parameters(loaded, params_file))
    for item in params:
        name, sep, raw = item.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"expected NAME=VALUE, got {item!r}")
        try:
            values[name.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"{name}: cannot read value {raw!r}: {err}") from err
    return PerceptionConfig.from_mapping(values, ignore_unknown=params_file is not None)


def _ros_parameters(loaded: object, path: Path) -> Mapping[str, object]:
    if not isinstance(loaded, dict):
        raise ConfigError(f"params file {path} is not a mapping")
    for value in loaded.values():  # ROS form: {node_name: {ros__parameters: {...}}}
        if isinstance(value, dict) and isinstance(value.get("ros__parameters"), dict):
            return dict(value["ros__parameters"])
    return loaded


# --------------------------------------------------------------------------- CLI


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``step-perception run-offline``."""
    p.add_argument("bag", type=Path, help="scenes bag (colour image, depth, camera info, truth)")
    p.add_argument(
        "--params-file",
        type=Path,
        default=None,
        help="node parameters (YAML, flat or ROS 'node: ros__parameters:' form)",
    )
    p.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="set a node parameter, e.g. -p backend=replay -p cassette=c.jsonl (repeatable)",
    )
    p.add_argument("--compressed", action="store_true", help="read the JPEG topic")
    p.add_argument("--no-depth", action="store_true", help="ignore depth (no 3D positions)")
    p.add_argument("--every", type=int, default=1, help="take every N-th frame (default 1)")
    p.add_argument("--limit", type=int, default=0, help="stop after N frames (0 = all)")
    p.add_argument(
        "--inflight", type=int, default=0, help="frames in flight (default: max_inflight)"
    )
    p.add_argument("--timeout", type=float, default=60.0, help="per-frame timeout [s]")
    p.add_argument("--out", type=Path, default=None, help="write the results as a bag here")
    p.add_argument("--storage", choices=["mcap", "sqlite3"], default="mcap")
    p.add_argument("--eval", type=Path, default=None, help="evaluate, writing the report here")
    p.add_argument("--iou", type=float, default=0.5, help="IoU threshold of --eval")
    p.add_argument(
        "--oracle-cassette",
        type=Path,
        default=None,
        metavar="FILE",
        help="instead of running: append the bag's ground truth, as this config's model "
        "would answer it, to a replay cassette",
    )


def _frames(args: argparse.Namespace) -> Iterator[SceneFrame]:
    for i, frame in enumerate(
        read_scene_frames(args.bag, CameraTopics(), compressed=args.compressed)
    ):
        if args.limit and i // max(1, args.every) >= args.limit:
            return
        if i % max(1, args.every) == 0:
            yield frame


def run_from_args(args: argparse.Namespace, console: Console) -> int:
    """Run ``step-perception run-offline``."""
    from step_perception_tools.evaluate import evaluate_bags
    from step_perception_tools.progress import progress_bar

    config = load_config(args.params_file, args.param)
    if args.oracle_cassette is not None:
        n = write_oracle_cassette(_frames(args), config, args.oracle_cassette)
        console.print(f"appended {n} truth answers to {args.oracle_cassette}")
        return 0
    out: Path | None = args.out
    if out is None and args.eval is not None:
        out = args.eval / "run"  # eval reads the results back from a bag, like a recorded run
    backend = backend_from_config(config)
    perceiver = Perceiver(config, backend)
    writer = OutputBagWriter(out, Storage(args.storage)) if out is not None else None
    answered = failures = 0
    try:
        with progress_bar(console, total=False) as progress:
            task = progress.add_task(f"offline {args.bag}", total=None)
            for o in run_offline(
                _frames(args),
                perceiver,
                use_depth=not args.no_depth,
                inflight=args.inflight or config.max_inflight,
                timeout_s=args.timeout,
            ):
                progress.advance(task)
                if o.result is None:
                    failures += 1
                    console.print(f"[yellow]frame {o.frame.stamp_ns}:[/yellow] {escape(o.error)}")
                    continue
                answered += 1
                if writer is not None:
                    writer.write(o.result, o.frame.stamp_ns + round(o.latency_s * 1e9))
    finally:
        if writer is not None:
            writer.close()
        perceiver.close()
        backend.close()
    console.print(f"{answered} frames answered, {failures} failed")
    if args.eval is not None and out is not None:
        evaluate_bags(out, args.bag, args.eval, iou_threshold=args.iou, console=Console())
    return 0 if answered else 1
