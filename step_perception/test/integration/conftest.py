"""Fixtures of the node-over-DDS tests: the test-side ROS graph, the model server, a cassette."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def ros() -> Iterator[Any]:
    """The test side of the graph (own rclpy context, executor thread)."""
    # No skip when rclpy or our messages do not import: the import error fails the tests.
    # Fast DDS reads these when the participant is created, so before the context.
    from ros_harness import Ros, dds_env

    os.environ.update(dds_env())

    harness = Ros()
    yield harness
    harness.close()


@pytest.fixture
def tester(ros: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh test-side node for one test."""
    node = ros.node(f"tester_{abs(hash(request.node.name)) % 10**8}")
    yield node
    ros.remove(node)


@pytest.fixture(scope="session")
def model_server() -> Iterator[Any]:
    """A real OpenAI-compatible HTTP server on 127.0.0.1 (see model_server.py)."""
    from model_server import ModelServer

    server = ModelServer()
    yield server
    server.close()


@pytest.fixture
def launch(tester: Any, tmp_path: Path) -> Iterator[Callable[..., Any]]:
    """Start nodes under test; every one is stopped (SIGINT) at teardown."""
    from ros_harness import start_node

    started: list[Any] = []

    def _start(namespace: str, params: dict[str, object], **kwargs: Any) -> Any:
        handle = start_node(tester, namespace, params, tmp_path / "logs", **kwargs)
        started.append(handle)
        return handle

    yield _start
    for handle in reversed(started):
        try:
            handle.stop()
        except Exception:  # still stop the others
            handle.proc.kill()


@pytest.fixture(scope="session")
def cassette(
    ros: Any, model_server: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """A cassette recorded by the real node (record mode wrapping the openai backend).

    The node answers each of the 12 distinct test frames once through the model
    server; the replay tests then run with no server at all.
    """
    from ros_harness import Camera, Collector, stamp_of, start_node, wait_for

    from step_perception_msgs.msg import ObjectDetectionArray

    path = tmp_path_factory.mktemp("cassette") / "answers.jsonl"
    node = ros.node("cassette_recorder")
    ns = "/it_record"
    proc = start_node(
        node,
        ns,
        {
            "backend": "openai",
            "endpoint": model_server.url(),
            "model": "test-model",
            "cassette_mode": "record",
            "cassette": str(path),
            "rate_hz": 100.0,
            "max_frame_age_s": 10.0,
            "reliability": "reliable",
            # One frame at a time, the next sent when the last answer arrives: on Kilted the
            # content filter is closed while a request is in flight and opened again just after
            # the answer is published, so a frame sent on that answer can reach the camera's
            # writer before the new filter does and be dropped there (seen: 2 of 3 runs). That
            # is the filter's documented cost for one-frame-per-answer sources; this fixture
            # records answers, the filter has its own tests.
            "content_filter": "off",
        },
        tmp_path_factory.mktemp("cassette_logs"),
    )
    try:
        got = Collector(node, ObjectDetectionArray, f"{ns}/detections")
        camera = Camera(node, f"{ns}/image_raw", reliable=True)
        for i in range(12):
            stamp = camera.publish_one(i).header.stamp
            want = stamp.sec * 1_000_000_000 + stamp.nanosec
            ok = wait_for(lambda w=want: any(stamp_of(m) == w for m in got.msgs), 15.0)
            assert ok, f"frame {i} not answered while recording:\n{proc.log()}"
    finally:
        assert proc.stop() == 0, proc.log()
        ros.remove(node)
    lines = path.read_text().splitlines()
    assert len(lines) == 12, lines
    yield path
