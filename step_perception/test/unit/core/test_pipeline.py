"""The pipeline under test is real; only the model is a canned-answer Backend (the boundary)."""

import json
import threading
from concurrent.futures import Future
from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import (
    BackendError,
    BackendTimeoutError,
    ImageError,
    ParseError,
    StepPerceptionError,
)
from step_perception.core.pipeline import FrameInput, Perceiver
from step_perception.core.types import (
    BackendHealth,
    CameraIntrinsics,
    FrameMeta,
    ModelReply,
    RelationSource,
    Task,
)


class CannedBackend:
    """Answers every request with fixed text, optionally from a thread after a gate opens."""

    name = "canned"

    def __init__(self, text="", *, error=None, gate=None, raise_on_submit=None):
        self.text = text
        self.error = error
        self.gate = gate
        self.raise_on_submit = raise_on_submit
        self.requests = []

    def submit(self, request):
        if self.raise_on_submit is not None:
            raise self.raise_on_submit
        self.requests.append(request)
        fut = Future()

        def answer():
            if self.gate is not None:
                self.gate.wait(5)
            if self.error is not None:
                fut.set_exception(self.error)
            else:
                fut.set_result(ModelReply(self.text, 0.05, "canned"))

        threading.Thread(target=answer, daemon=True).start()
        return fut

    def health(self):
        return BackendHealth(True, "ok")

    def close(self):
        pass


W, H = 640, 480
K = CameraIntrinsics(500.0, 500.0, 319.5, 239.5, W, H)


def colour_msg():
    img = np.zeros((H, W, 3), np.uint8)
    img[100:200, 64:192] = (0, 0, 255)
    return SimpleNamespace(
        height=H, width=W, encoding="bgr8", is_bigendian=0, step=W * 3, data=img.tobytes()
    )


def depth_msg(mm=1500):
    d = np.full((H // 2, W // 2), mm, np.uint16)
    return SimpleNamespace(
        height=H // 2, width=W // 2, encoding="16UC1", is_bigendian=0, step=W, data=d.tobytes()
    )


ANSWER = {
    "objects": [
        {"label": "red cube", "bbox_2d": [100, 208, 300, 417], "score": 0.9},
        {"label": "blue mug", "bbox_2d": [600, 600, 800, 900]},
    ],
    "relations": [{"subject": 0, "relation": "left_of", "object": 1}],
    "summary": "A cube and a mug.",
    "action": {"name": "pick", "target": 0},
}
META = FrameMeta(stamp_ns=1_700_000_000_123_456_789, frame_id="cam_optical", width=W, height=H)


def frame(**kw):
    return FrameInput(**{"meta": META, "image": colour_msg(), **kw})


@pytest.fixture
def perceiver_factory():
    made = []

    def make(backend, config=None, **kw):
        p = Perceiver(config or PerceptionConfig(), backend, **kw)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_detect_end_to_end_with_depth(perceiver_factory):
    backend = CannedBackend("<think>ok</think>\n```json\n" + json.dumps(ANSWER) + "\n```")
    p = perceiver_factory(backend)
    r = p.submit(frame(depth=depth_msg(), intrinsics=K)).result(timeout=10)
    assert r.frame == META and r.task is Task.DETECT
    cube, _mug = r.detections
    assert (cube.box.x1, cube.box.y1, cube.box.x2, cube.box.y2) == pytest.approx(
        (64, 99.84, 192, 200.16), abs=0.01
    )
    assert cube.position is not None and cube.position.z == pytest.approx(1.5)
    assert cube.position.x == pytest.approx((127.5 - 319.5) * 1.5 / 500)
    assert {r.source for r in r.relations} == {RelationSource.MODEL, RelationSource.GEOMETRY}
    assert r.summary == "A cube and a mug."
    assert r.command is None and r.command_rejection is None  # not a command task
    req = backend.requests[0]
    assert (req.image.width, req.image.height) == (640, 480)  # already below 728
    assert "Task: detect" in req.user
    s = p.stats()
    assert (s.submitted, s.completed, s.inflight, s.failures) == (1, 1, 0, 0)
    assert s.model_latency_p50_s == pytest.approx(0.05)
    assert s.latency_p95_s >= s.latency_p50_s > 0


def test_submit_returns_before_the_model_answers(perceiver_factory):
    gate = threading.Event()
    p = perceiver_factory(CannedBackend(json.dumps(ANSWER), gate=gate))
    fut = p.submit(frame())
    assert not fut.done()
    assert p.stats().inflight == 1
    gate.set()
    assert len(fut.result(timeout=10).detections) == 2


def test_compressed_input_fills_the_source_size(perceiver_factory):
    img = np.zeros((1080, 1920, 3), np.uint8)
    msg = SimpleNamespace(format="jpeg", data=cv2.imencode(".jpg", img)[1].tobytes())
    backend = CannedBackend(json.dumps(ANSWER))
    p = perceiver_factory(backend)
    meta = FrameMeta(5, "cam", 0, 0)
    r = p.submit(FrameInput(meta=meta, image=msg)).result(timeout=10)
    assert (r.frame.width, r.frame.height) == (1920, 1080)
    assert (backend.requests[0].image.width, backend.requests[0].image.height) == (728, 410)
    assert max(d.box.x2 for d in r.detections) <= 1920


def test_command_task_accepts_and_rejects_with_counts(perceiver_factory):
    cfg = PerceptionConfig.from_mapping({"task": "command", "prompt": "pick the cube"})
    p = perceiver_factory(CannedBackend(json.dumps(ANSWER)), cfg)
    r = p.submit(frame(depth=depth_msg(), intrinsics=K)).result(timeout=10)
    assert r.command is not None
    assert r.command.text().startswith(
        'pick target="red cube" id=0 x='
    ) and r.command.text().endswith(" frame=cam_optical")
    bad = dict(ANSWER, action={"name": "launch_missiles", "target": 0})
    p2 = perceiver_factory(CannedBackend(json.dumps(bad)), cfg)
    r2 = p2.submit(frame()).result(timeout=10)
    assert r2.command is None and r2.command_rejection.startswith("action_not_allowed")
    s = p2.stats()
    assert s.rejected_commands == 1 and s.rejections == (("action_not_allowed", 1),)


def test_query_overrides_and_deadlines(perceiver_factory):
    now = {"ns": META.stamp_ns + 500_000_000}  # the frame is 0.5 s old
    backend = CannedBackend(json.dumps(ANSWER))
    p = perceiver_factory(backend, now_ns=lambda: now["ns"], monotonic=lambda: 100.0)
    r = p.submit(frame(prompt="where is the mug?", task=Task.LOCATE)).result(timeout=10)
    assert r.task is Task.LOCATE and r.query == "where is the mug?"
    req = backend.requests[0]
    assert "Task: locate" in req.user and "Request: where is the mug?" in req.user
    assert req.deadline == pytest.approx(100.0 + 2.0 - 0.5)
    p.submit(frame(timeout_s=7.0)).result(timeout=10)
    assert backend.requests[1].deadline == pytest.approx(107.0)


def test_an_answer_after_the_deadline_is_never_a_result(perceiver_factory):
    # A backend that ignores deadlines (canned) answers after the frame got too old:
    # the perceiver itself refuses to turn it into a result or a command.
    clock = {"t": 100.0}
    gate = threading.Event()
    backend = CannedBackend(json.dumps(ANSWER), gate=gate)
    cfg = PerceptionConfig.from_mapping({"task": "command", "max_frame_age_s": 1.0})
    p = perceiver_factory(backend, cfg, monotonic=lambda: clock["t"])
    fut = p.submit(frame())
    for _ in range(500):  # the request (and its deadline) is made on a worker thread
        if backend.requests:
            break
        threading.Event().wait(0.01)
    assert backend.requests and backend.requests[0].deadline == pytest.approx(101.0)
    clock["t"] = 101.5
    gate.set()
    with pytest.raises(BackendTimeoutError, match="after the deadline"):
        fut.result(timeout=10)
    s = p.stats()
    assert (s.backend_errors, s.completed, s.accepted_commands, s.inflight) == (1, 0, 0, 0)


def test_update_config_applies_to_new_frames(perceiver_factory):
    backend = CannedBackend(json.dumps(ANSWER))
    p = perceiver_factory(backend)
    p.update_config(p.config.with_updates(prompt="only cubes", max_image_side=320))
    p.submit(frame()).result(timeout=10)
    assert "Request: only cubes" in backend.requests[0].user
    assert backend.requests[0].image.width == 320


@pytest.mark.parametrize(
    ("backend", "image", "error", "counter"),
    [
        (
            CannedBackend(json.dumps(ANSWER)),
            SimpleNamespace(format="jpeg", data=b"junk"),
            ImageError,
            "image_errors",
        ),
        (
            CannedBackend(error=BackendTimeoutError("slow")),
            None,
            BackendTimeoutError,
            "backend_errors",
        ),
        (CannedBackend(error=ValueError("contract broken")), None, BackendError, "backend_errors"),
        (CannedBackend(raise_on_submit=BackendError("down")), None, BackendError, "backend_errors"),
        (CannedBackend("I am not sure what I see."), None, ParseError, "parse_failures"),
    ],
)
def test_failures_are_typed_errors_on_the_future(perceiver_factory, backend, image, error, counter):
    p = perceiver_factory(backend)
    fut = p.submit(frame() if image is None else frame(image=image))
    with pytest.raises(error):
        fut.result(timeout=10)
    s = p.stats()
    assert getattr(s, counter) == 1 and s.inflight == 0 and s.completed == 0


def test_bad_depth_costs_positions_not_the_frame(perceiver_factory):
    p = perceiver_factory(CannedBackend(json.dumps(ANSWER)))
    broken = depth_msg()
    broken.step = 3
    r = p.submit(frame(depth=broken, intrinsics=K)).result(timeout=10)
    assert all(d.position is None for d in r.detections)
    assert p.stats().depth_errors == 1


def test_closed_perceiver_fails_futures_instead_of_hanging():
    p = Perceiver(PerceptionConfig(), CannedBackend(json.dumps(ANSWER)))
    p.close()
    with pytest.raises(StepPerceptionError, match="closed"):
        p.submit(frame()).result(timeout=5)


def test_frame_input_builder_reads_the_size_when_the_image_has_one():
    from step_perception.core.pipeline import frame_input

    raw = SimpleNamespace(width=64, height=48)
    f = frame_input(raw, 5, "cam", depth="d", intrinsics=K, prompt="mug", timeout_s=1.5)
    assert f.meta == FrameMeta(5, "cam", 64, 48)
    assert (f.image, f.depth, f.intrinsics, f.prompt, f.timeout_s) == (raw, "d", K, "mug", 1.5)
    compressed = frame_input(SimpleNamespace(format="jpeg", data=b""), 6, "cam", task=Task.LOCATE)
    assert compressed.meta == FrameMeta(6, "cam", 0, 0) and compressed.task is Task.LOCATE
