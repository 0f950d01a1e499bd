"""The real node against an smg gateway in front of two real workers, over real DDS.

Robots point at the gateway and the gateway owns the workers: when one worker dies the
node must keep publishing (the gateway retries on the other one), and when it comes back
the gateway must route to it again. Processes: two ``worker_proc.py`` workers, ``smg``, the
``perception_node`` console script; the camera is the test's own DDS publisher.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_support import (
    Gateway,
    Worker,
    listening_addresses,
    smg_binary,
    start_fleet,
    stop_fleet,
)

pytestmark = [pytest.mark.ros, pytest.mark.slow]

MAX_GAP_S = 2.0  # the bound on the publishing gap when a worker dies


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[tuple[Gateway, list[Worker]]]:
    if smg_binary() is None:
        if os.environ.get("CI"):
            pytest.fail("smg is not installed: `make test` runs `make smg` first")
        pytest.skip("smg not installed (make smg)")
    gateway, workers = start_fleet(2, tmp_path / "fleet", service_ms=30.0, slots=2)
    yield gateway, workers
    stop_fleet(gateway, workers)


def _gaps(times: list[float], start: float, end: float) -> float:
    """The longest time without a message between ``start`` and ``end``."""
    inside = [t for t in times if start <= t <= end]
    edges = [start, *inside, end]
    return max(b - a for a, b in itertools.pairwise(edges))


def test_node_rides_through_a_dead_worker_and_it_rejoins(
    tester: Any, launch: Any, fleet: tuple[Gateway, list[Worker]]
) -> None:
    from ros_harness import Camera, Collector, running, wait_for

    from step_perception_msgs.msg import ObjectDetectionArray

    gateway, (doomed, survivor) = fleet
    ns = "/it_gateway"
    node = launch(
        ns,
        {
            "backend": "openai",
            "endpoint": gateway.url,
            "model": "test-model",
            "rate_hz": 10.0,
            "max_inflight": 4,
            "max_frame_age_s": 2.0,
            "request_timeout_s": 5.0,
            "reliability": "reliable",
        },
    )
    got = Collector(tester, ObjectDetectionArray, f"{ns}/detections")
    camera = Camera(tester, f"{ns}/image_raw", fps=15.0, reliable=True)
    with running(camera):
        assert wait_for(lambda: len(got.msgs) >= 10, 20.0), node.log()
        assert wait_for(lambda: doomed.answered() > 0 and survivor.answered() > 0, 10.0), (
            "round robin should have used both workers"
        )
        t_kill = time.monotonic()
        doomed.kill()
        time.sleep(4.0)
        t_back = time.monotonic()
        gap = _gaps([t for t, _ in got.timed], t_kill - 0.5, t_back)
        after_kill = sum(1 for t, _ in got.timed if t > t_kill)
        assert gap <= MAX_GAP_S, f"longest gap {gap:.2f} s after the kill\n{node.log()}"
        assert after_kill >= 10, after_kill

        doomed.start()  # same port: the gateway's health check finds it again
        assert wait_for(lambda: doomed.answered() > 0, 15.0), (
            "the restarted worker got no request from the gateway"
        )
        n = len(got.msgs)
        assert wait_for(lambda: len(got.msgs) >= n + 5, 10.0), node.log()
    assert node.alive(), node.log()
    boxes = [m for m in got.msgs if len(m.detections) > 0]
    assert boxes, "answers came back without the test frames' objects"
    metrics = gateway.metrics()
    assert "smg_" in metrics, metrics[:500]
    # the gateway and its metrics listener (which defaults to 0.0.0.0) listen on loopback only
    assert listening_addresses(gateway.port) == {"127.0.0.1"}
    assert listening_addresses(gateway.metrics_port) == {"127.0.0.1"}
