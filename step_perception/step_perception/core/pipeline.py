"""The non-ROS glue from a frame to a ``PerceptionResult``.

``Perceiver.submit`` returns a future at once; image preparation, the model
request, parsing, geometry and the command check all run off the caller's
thread (a small worker pool plus the backend's own threads). The ROS node and
the offline tools both use it; the frame gate (core/frames.py) sits in front
of it in the node.

Every failure ends up on the future as a typed error: ``ImageError`` (bad
image), ``BackendError`` and subclasses (the model server), ``ParseError``
(the answer), ``StepPerceptionError`` (anything unexpected, logged). A bad
depth image does not fail the frame: it only costs the 3D positions. A reply
that arrives after the request's deadline (the frame's ``max_frame_age_s``, or
``timeout_s``) fails with ``BackendTimeoutError``: nothing about a frame that
old becomes a result, whatever the backend does about deadlines.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError, ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from step_perception.core.backend import Backend
from step_perception.core.commands import decide_command
from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import (
    BackendError,
    BackendTimeoutError,
    ImageError,
    ParseError,
    StepPerceptionError,
)
from step_perception.core.geometry import (
    DEFAULT_DEPTH,
    DEFAULT_RELATIONS,
    DepthParams,
    RelationParams,
    geometric_relations,
    locate,
    merge_relations,
)
from step_perception.core.imaging import decode_depth, prepare_for
from step_perception.core.parsing import parse_answer
from step_perception.core.profiles import get_profile
from step_perception.core.prompts import build_request, clean_prompt
from step_perception.core.types import (
    CameraIntrinsics,
    Detection,
    FrameMeta,
    ModelReply,
    ModelRequest,
    PerceptionResult,
    Task,
    TransformLookup,
)

__all__ = ["FrameInput", "Perceiver", "PerceiverStats", "frame_input"]

_log = logging.getLogger(__name__)
_LATENCY_WINDOW = 256


@dataclass(frozen=True)
class FrameInput:
    """One frame to process: its identity, the raw messages and optional overrides.

    ``image`` is an Image-like or CompressedImage-like message (rclpy or
    rosbags); ``depth`` an aligned depth Image (or compressedDepth) or None.
    ``meta.width``/``height`` may be 0 when unknown (compressed input): the
    result carries the decoded size. ``prompt``/``task`` override the
    standing ones (the Query service); ``timeout_s`` replaces the frame-age
    deadline.
    """

    meta: FrameMeta
    image: object
    depth: object | None = None
    intrinsics: CameraIntrinsics | None = None
    prompt: str | None = None
    task: Task | None = None
    timeout_s: float | None = None


def frame_input(
    image: object,
    stamp_ns: int,
    frame_id: str,
    *,
    depth: object | None = None,
    intrinsics: CameraIntrinsics | None = None,
    prompt: str | None = None,
    task: Task | None = None,
    timeout_s: float | None = None,
) -> FrameInput:
    """Build a ``FrameInput``: the one builder, shared by the node and the offline runner.

    ``image`` is the raw colour message (Image-like or CompressedImage-like, any
    message family); its ``width``/``height`` are read when it has them, else 0
    (compressed: the decoded size is used). ``stamp_ns`` and ``frame_id`` come from
    its header, converted by the caller.
    """
    width = int(getattr(image, "width", 0) or 0)
    height = int(getattr(image, "height", 0) or 0)
    return FrameInput(
        meta=FrameMeta(stamp_ns=int(stamp_ns), frame_id=str(frame_id), width=width, height=height),
        image=image,
        depth=depth,
        intrinsics=intrinsics,
        prompt=prompt,
        task=task,
        timeout_s=timeout_s,
    )


@dataclass(frozen=True)
class PerceiverStats:
    """Counters since the perceiver was created, and recent latencies."""

    submitted: int = 0
    completed: int = 0  # results delivered
    inflight: int = 0
    image_errors: int = 0
    backend_errors: int = 0
    parse_failures: int = 0
    internal_errors: int = 0
    depth_errors: int = 0  # depth given but unusable (frame still processed)
    missing_transforms: int = 0  # no transform to target_frame at the stamp: no positions
    dropped_objects: int = 0
    dropped_relations: int = 0
    accepted_commands: int = 0
    rejected_commands: int = 0
    rejections: tuple[tuple[str, int], ...] = ()  # (reason, count), sorted by reason
    latency_p50_s: float = float("nan")  # submit -> result
    latency_p95_s: float = float("nan")
    model_latency_p50_s: float = float("nan")  # backend's own latency
    model_latency_p95_s: float = float("nan")

    @property
    def failures(self) -> int:
        """Frames that produced no result."""
        return self.image_errors + self.backend_errors + self.parse_failures + self.internal_errors


@dataclass(frozen=True)
class _Job:
    """One frame in flight: what the reply is turned into a result with."""

    frame: FrameInput
    config: PerceptionConfig
    request: ModelRequest
    depth: npt.NDArray[np.float32] | None
    out: Future[PerceptionResult]
    t0: float  # monotonic time of submit


def _percentile(values: deque[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.fromiter(values, dtype=np.float64), q))


class Perceiver:
    """Runs frames through image prep, the backend, parsing, geometry and commands.

    ``now_ns`` is the clock the frame stamps are compared with (the node
    passes the ROS clock); without it a frame's age counts as zero.
    ``monotonic`` is only used for deadlines and latencies. The backend is
    not owned: ``close`` does not close it.
    """

    def __init__(
        self,
        config: PerceptionConfig,
        backend: Backend,
        *,
        now_ns: Callable[[], int] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        workers: int = 2,
        depth_params: DepthParams = DEFAULT_DEPTH,
        relation_params: RelationParams = DEFAULT_RELATIONS,
        lookup_transform: TransformLookup | None = None,
    ) -> None:
        get_profile(config.model_profile)
        # target_frame != the image's frame: positions go through this (tf2 in the node).
        self._lookup_transform = lookup_transform
        self._config = config
        self._backend = backend
        self._now_ns = now_ns
        self._monotonic = monotonic
        self._depth_params = depth_params
        self._relation_params = relation_params
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="perceiver")
        self._lock = threading.Lock()
        self._closed = False
        self._n: Counter[str] = Counter()
        self._rejections: Counter[str] = Counter()
        self._latency: deque[float] = deque(maxlen=_LATENCY_WINDOW)
        self._model_latency: deque[float] = deque(maxlen=_LATENCY_WINDOW)

    @property
    def config(self) -> PerceptionConfig:
        """The config new frames are processed with."""
        return self._config

    @property
    def backend(self) -> Backend:
        """The backend requests go to."""
        return self._backend

    def update_config(self, config: PerceptionConfig) -> None:
        """Use ``config`` for frames submitted from now on (frames in flight keep theirs)."""
        get_profile(config.model_profile)
        self._config = config

    def submit(self, frame: FrameInput) -> Future[PerceptionResult]:
        """Start processing ``frame``; returns at once. The future never hangs on our side."""
        out: Future[PerceptionResult] = Future()
        config = self._config
        t0 = self._monotonic()
        with self._lock:
            self._n["submitted"] += 1
            self._n["inflight"] += 1
        try:
            if self._closed:
                raise RuntimeError("closed")
            self._pool.submit(self._start, frame, config, out, t0)
        except RuntimeError:
            self._fail(out, StepPerceptionError("the perceiver is closed"), "internal_errors")
        return out

    def stats(self) -> PerceiverStats:
        """Snapshot of the counters and latency percentiles."""
        with self._lock:
            n = dict(self._n)
            rejections = tuple(sorted(self._rejections.items()))
            lat, mlat = deque(self._latency), deque(self._model_latency)
        return PerceiverStats(
            submitted=n.get("submitted", 0),
            completed=n.get("completed", 0),
            inflight=n.get("inflight", 0),
            image_errors=n.get("image_errors", 0),
            backend_errors=n.get("backend_errors", 0),
            parse_failures=n.get("parse_failures", 0),
            internal_errors=n.get("internal_errors", 0),
            depth_errors=n.get("depth_errors", 0),
            missing_transforms=n.get("missing_transforms", 0),
            dropped_objects=n.get("dropped_objects", 0),
            dropped_relations=n.get("dropped_relations", 0),
            accepted_commands=n.get("accepted_commands", 0),
            rejected_commands=sum(c for _, c in rejections),
            rejections=rejections,
            latency_p50_s=_percentile(lat, 50),
            latency_p95_s=_percentile(lat, 95),
            model_latency_p50_s=_percentile(mlat, 50),
            model_latency_p95_s=_percentile(mlat, 95),
        )

    def close(self) -> None:
        """Stop taking frames and let the workers finish (the backend is left open)."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=False)

    # -- internals -------------------------------------------------------------------------

    def _fail(self, out: Future[PerceptionResult], err: BaseException, counter: str) -> None:
        with self._lock:
            self._n[counter] += 1
            self._n["inflight"] -= 1
        with contextlib.suppress(InvalidStateError):  # cancelled by the caller meanwhile
            out.set_exception(err)

    def _deadline(self, frame: FrameInput, config: PerceptionConfig) -> float:
        now = self._monotonic()
        if frame.timeout_s is not None:
            return now + max(0.0, frame.timeout_s)
        age_s = 0.0
        if self._now_ns is not None:
            age_s = max(0.0, (self._now_ns() - frame.meta.stamp_ns) / 1e9)
        return now + max(0.0, config.max_frame_age_s - age_s)

    def _start(
        self,
        frame: FrameInput,
        config: PerceptionConfig,
        out: Future[PerceptionResult],
        t0: float,
    ) -> None:
        if not out.set_running_or_notify_cancel():
            with self._lock:
                self._n["inflight"] -= 1
            return
        try:
            try:
                image = prepare_for(frame.image, config)
            except ImageError as err:
                self._fail(out, err, "image_errors")
                return
            request = build_request(
                config,
                image,
                task=frame.task,
                prompt=frame.prompt,
                deadline=self._deadline(frame, config),
            )
            try:
                reply_future = self._backend.submit(request)
            except BackendError as err:
                self._fail(out, err, "backend_errors")
                return
            # Decode depth while the model thinks.
            job = _Job(frame, config, request, self._depth(frame), out, t0)
            reply_future.add_done_callback(lambda f: self._on_reply(f, job))
        except Exception as err:
            _log.exception("perceiver: unexpected error preparing a frame")
            self._fail(out, StepPerceptionError(f"internal error: {err!r}"), "internal_errors")

    def _depth(self, frame: FrameInput) -> npt.NDArray[np.float32] | None:
        if frame.depth is None:
            return None
        try:
            return decode_depth(frame.depth)
        except ImageError as err:
            _log.debug("perceiver: depth unusable: %s", err)
            with self._lock:
                self._n["depth_errors"] += 1
            return None

    def _on_reply(self, reply_future: Future[ModelReply], job: _Job) -> None:
        # Runs on a backend thread: hand the (cheap but not free) rest to our pool.
        try:
            self._pool.submit(self._finish, reply_future, job)
        except RuntimeError:  # pool shut down: finish here rather than hang the future
            self._finish(reply_future, job)

    def _finish(self, reply_future: Future[ModelReply], job: _Job) -> None:
        out = job.out
        try:
            try:
                reply = reply_future.result()
            except BackendError as err:
                self._fail(out, err, "backend_errors")
                return
            except Exception as err:  # a backend that broke its contract
                self._fail(out, BackendError(f"backend failed: {err!r}"), "backend_errors")
                return
            deadline = job.request.deadline
            late_s = 0.0 if deadline is None else self._monotonic() - deadline
            if late_s > 0:
                # Whatever the backend does about deadlines, an answer about a frame that is
                # too old by now is never turned into a result (nor a command).
                late = BackendTimeoutError(f"the answer came {late_s:.3f} s after the deadline")
                self._fail(out, late, "backend_errors")
                return
            try:
                result = self._build(reply, job)
            except ParseError as err:
                self._fail(out, err, "parse_failures")
                return
            with self._lock:
                self._n["completed"] += 1
                self._n["inflight"] -= 1
                self._latency.append(self._monotonic() - job.t0)
                self._model_latency.append(reply.latency_s)
            with contextlib.suppress(InvalidStateError):
                out.set_result(result)
        except Exception as err:
            _log.exception("perceiver: unexpected error finishing a frame")
            self._fail(out, StepPerceptionError(f"internal error: {err!r}"), "internal_errors")

    def _build(self, reply: ModelReply, job: _Job) -> PerceptionResult:
        frame, config, image, depth = job.frame, job.config, job.request.image, job.depth
        profile = get_profile(config.model_profile)
        task = config.task if frame.task is None else frame.task
        prompt = config.prompt if frame.prompt is None else frame.prompt
        parsed = parse_answer(reply.text, profile, image, max_objects=config.max_objects)
        width, height = image.source_width, image.source_height
        detections = locate(
            parsed.detections, depth, frame.intrinsics, width, height, self._depth_params
        )
        relations = merge_relations(
            parsed.relations,
            geometric_relations(detections, self._relation_params),
            detections,
        )
        # Relations are geometry in the camera frame (left_of = image left); only then are the
        # positions moved into target_frame, for the outputs and the command.
        detections, position_frame = self._to_target_frame(detections, frame.meta, config)
        command = None
        rejection: str | None = None
        if task is Task.COMMAND:
            decision = decide_command(
                parsed.action, detections, config.allowed_actions, position_frame
            )
            command = decision.command
            if command is None:
                rejection = f"{decision.reason}: {decision.detail}"
        with self._lock:
            self._n["dropped_objects"] += parsed.dropped_objects
            self._n["dropped_relations"] += parsed.dropped_relations
            if task is Task.COMMAND:
                if command is None:
                    self._rejections[str(decision.reason)] += 1
                else:
                    self._n["accepted_commands"] += 1
        return PerceptionResult(
            frame=replace(frame.meta, width=width, height=height),
            task=task,
            query=clean_prompt(prompt),
            detections=detections,
            relations=relations,
            summary=parsed.summary,
            command=command,
            command_rejection=rejection,
            reply=reply,
            position_frame=position_frame,
        )

    def _to_target_frame(
        self, detections: tuple[Detection, ...], meta: FrameMeta, config: PerceptionConfig
    ) -> tuple[tuple[Detection, ...], str]:
        """Positions in ``config.target_frame`` at the image's stamp, and the frame they are in.

        Without a transform at that stamp the positions are dropped (counted, logged): a
        position in the wrong frame is worse than none.
        """
        target = config.target_frame
        placed = any(d.position is not None for d in detections)
        if not target or target == meta.frame_id or not placed:
            return detections, meta.frame_id
        lookup = self._lookup_transform
        transform = lookup(target, meta.frame_id, meta.stamp_ns) if lookup else None
        if transform is None:
            with self._lock:
                self._n["missing_transforms"] += 1
            _log.warning(
                "no transform %s -> %s at %d ns: frame published without positions",
                meta.frame_id, target, meta.stamp_ns,
            )  # fmt: skip
            return tuple(replace(d, position=None) for d in detections), meta.frame_id
        moved = tuple(
            d if d.position is None else replace(d, position=transform.apply(d.position))
            for d in detections
        )
        return moved, target
