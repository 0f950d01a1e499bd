"""One configuration without ROS (core/session.py): build, run a frame, reconfigure, report, close.

The session, loop and perceiver are real; only the model is a canned-answer Backend (the boundary).
"""

import json
import math
import threading
from concurrent.futures import Future
from types import SimpleNamespace

import numpy as np
import pytest
from manual_clock import Clock
from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import ConfigError
from step_perception.core.frames import Decision, GateCounters
from step_perception.core.health import stall_after_s
from step_perception.core.pipeline import PerceiverStats, frame_input
from step_perception.core.session import Session, SessionStatus
from step_perception.core.types import BackendHealth, ModelReply

S = 1_000_000_000
W, H = 64, 48
ANSWER = json.dumps({"objects": [{"label": "cube", "bbox_2d": [100, 100, 500, 500]}]})


class CannedBackend:
    """Answers every request with ``ANSWER`` from a thread; remembers whether it was closed."""

    name = "canned"

    def __init__(self):
        self.closed = False

    def submit(self, request):
        fut = Future()
        threading.Thread(
            target=fut.set_result, args=(ModelReply(ANSWER, 0.01, "canned"),), daemon=True
        ).start()
        return fut

    def health(self):
        return BackendHealth(True, "ok")

    def close(self):
        self.closed = True


def image():
    img = np.zeros((H, W, 3), np.uint8)
    return SimpleNamespace(
        height=H, width=W, encoding="bgr8", is_bigendian=0, step=W * 3, data=img.tobytes()
    )


@pytest.fixture
def built():
    made = []

    def build(config=None, **kw):
        backend, woke = CannedBackend(), threading.Event()
        session = Session.build(
            config or PerceptionConfig(),
            backend,
            now_ns=kw.pop("now_ns", Clock(100 * S)),
            depth_keep=kw.pop("depth_keep", 4),
            on_complete=woke.set,
            **kw,
        )
        made.append(session)
        return session, backend, woke

    yield build
    for session in made:
        session.close()


def test_a_frame_goes_through_the_loop_and_the_perceiver_and_comes_back(built):
    session, _backend, woke = built()
    decision, d = session.loop.offer(100 * S, image())
    assert decision is Decision.SEND_NOW and d is not None
    session.loop.track(d, session.perceiver.submit(frame_input(d.payload, d.stamp_ns, "cam")))
    assert woke.wait(10)  # on_complete, from a worker thread
    (completed,) = session.loop.take_completed()
    assert completed.publish and completed.next is None
    assert [o.label for o in completed.answer.result().detections] == ["cube"]
    status = session.status()
    assert (status.gate.sent, status.stats.completed, status.backend_name) == (1, 1, "canned")


def test_status_reports_the_config_and_the_backend(built):
    config = PerceptionConfig(rate_hz=4.0, request_timeout_s=3.0)
    session, _backend, _woke = built(config)
    status = session.status()
    assert status.rate_limit_hz == 4.0 and status.out_of_order == 0
    assert status.stall_after_s == stall_after_s(4.0, 3.0)
    assert status.health == BackendHealth(True, "ok") and status.gate == GateCounters()


def test_without_a_session_the_status_says_nothing_is_configured():
    status = SessionStatus()
    assert math.isnan(status.rate_limit_hz) and status.stall_after_s == math.inf
    assert (status.gate, status.stats, status.health, status.backend_name) == (
        GateCounters(),
        PerceiverStats(),
        None,
        "",
    )


def test_reconfigure_applies_a_change_to_the_perceiver_and_the_gate(built):
    now = Clock(100 * S)
    session, _backend, _woke = built(PerceptionConfig(rate_hz=1.0), now_ns=now)
    assert session.reconfigure(session.config) is False  # nothing changed
    new = session.config.with_updates(rate_hz=100.0, prompt="find the cube")
    assert session.reconfigure(new) is True
    assert session.config is new and session.perceiver.config is new
    _, d = session.loop.offer(100 * S, "c0")
    assert d is not None
    session.loop.done(d.generation, d.stamp_ns)
    now.now += S // 50  # 20 ms: too soon at 1 Hz, fine at 100 Hz
    assert session.loop.offer(now.now, "c1")[0] is Decision.SEND_NOW


def test_a_failed_build_closes_the_backend():
    backend = CannedBackend()
    with pytest.raises(ConfigError):
        Session.build(
            PerceptionConfig(), backend, now_ns=Clock(0), depth_keep=0, on_complete=lambda: None
        )
    assert backend.closed


def test_close_closes_the_backend(built):
    session, backend, _woke = built()
    session.close()
    assert backend.closed
