"""What the launch tests share: the launch file included for real, a test-side graph, checks."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml
from ament_index_python.packages import get_package_share_directory
from launch.actions import IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from rclpy._rclpy_pybind11 import NodeNameNonExistentError
from ros_harness import Camera, Collector, Ros, frame_boxes, publish_until_answered, wait_for

#: The installed launch file (colcon --symlink-install: the source file itself).
LAUNCH_FILE = (
    Path(get_package_share_directory("step_perception")) / "launch" / "perception.launch.py"
)
NODE = "step_perception"
#: Endpoints every node creates, relative to its namespace (name -> type).
PUBLISHED = {
    "detections": "step_perception_msgs/msg/ObjectDetectionArray",
    "detections_2d": "vision_msgs/msg/Detection2DArray",  # vision_msgs: true by default
    "scene": "step_perception_msgs/msg/SceneDescription",
    "command": "std_msgs/msg/String",
    "markers": "visualization_msgs/msg/MarkerArray",
}
SUBSCRIBED = {
    "image_raw": "sensor_msgs/msg/Image",
    "camera_info": "sensor_msgs/msg/CameraInfo",
    "prompt": "std_msgs/msg/String",
}
SERVICES = {
    "query": "step_perception_msgs/srv/Query",
    "enable": "std_srvs/srv/SetBool",
    "get_state": "lifecycle_msgs/srv/GetState",
    "get_parameters": "rcl_interfaces/srv/GetParameters",
}


def include_perception(**arguments: str) -> IncludeLaunchDescription:
    """``perception.launch.py`` with ``name:=value`` launch arguments, as ``ros2 launch`` does."""
    return IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(LAUNCH_FILE)), launch_arguments=arguments.items()
    )


def params_file(values: dict[str, object]) -> Path:
    """A ``/**: ros__parameters:`` YAML file holding ``values`` (in a fresh temp folder)."""
    path = Path(tempfile.mkdtemp(prefix="sp_launch_")) / "params.yaml"
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": values}}))
    return path


def wait_active(ros: Ros, node: Any, namespace: str, timeout: float = 60.0) -> str:
    """Wait until ``<namespace>/step_perception`` answers get_state; return its state label."""
    from lifecycle_msgs.srv import GetState

    name = f"{namespace.rstrip('/')}/{NODE}"
    deadline = time.monotonic() + timeout
    label = ""
    while time.monotonic() < deadline:
        try:
            state = ros.call(node, GetState, f"{name}/get_state", GetState.Request(), timeout=5.0)
        except TimeoutError:
            continue
        label = str(state.current_state.label)
        if label == "active":
            return label
        time.sleep(0.2)
    return label


def parameters(ros: Ros, node: Any, namespace: str, names: list[str]) -> dict[str, Any]:
    """Current values of ``names`` on the node in ``namespace`` (through get_parameters)."""
    from rcl_interfaces.srv import GetParameters
    from rclpy.parameter import parameter_value_to_python

    name = f"{namespace.rstrip('/')}/{NODE}/get_parameters"
    values = ros.call(node, GetParameters, name, GetParameters.Request(names=names)).values
    return {n: parameter_value_to_python(v) for n, v in zip(names, values, strict=True)}


def graph_of(node: Any, namespace: str) -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """(publishers, subscriptions, services) of the node in ``namespace``: full name -> type."""
    ns = namespace.rstrip("/") or "/"

    def flat(pairs: list[tuple[str, list[str]]]) -> dict[str, str]:
        return {name: types[0] for name, types in pairs}

    return (
        flat(node.get_publisher_names_and_types_by_node(NODE, ns)),
        flat(node.get_subscriber_names_and_types_by_node(NODE, ns)),
        flat(node.get_service_names_and_types_by_node(NODE, ns)),
    )


def assert_interfaces(node: Any, namespace: str) -> None:
    """Every topic and service of the README's interface table exists under ``namespace``."""
    prefix = namespace.rstrip("/")
    want_pub = {f"{prefix}/{k}": v for k, v in PUBLISHED.items()}
    want_pub["/diagnostics"] = "diagnostic_msgs/msg/DiagnosticArray"
    want_sub = {f"{prefix}/{k}": v for k, v in SUBSCRIBED.items()}
    want_srv = {
        (f"{prefix}/{NODE}/{k}" if k.startswith("get_") else f"{prefix}/{k}"): v
        for k, v in SERVICES.items()
    }
    wants = (want_pub, want_sub, want_srv)
    missing: list[list[tuple[str, str]]] = []

    def complete() -> bool:
        try:
            graph = graph_of(node, namespace)
        except NodeNameNonExistentError:  # not discovered yet
            return False
        missing[:] = [
            sorted(set(want.items()) - set(have.items()))
            for want, have in zip(wants, graph, strict=True)
        ]
        return not any(missing)

    assert wait_for(complete, 15.0, step=0.2), f"missing under {namespace!r}: {missing}"


def assert_answers_a_frame(node: Any, namespace: str, index: int) -> None:
    """A frame published on ``<namespace>/image_raw`` comes back on ``<namespace>/detections``."""
    from step_perception_msgs.msg import ObjectDetectionArray

    prefix = namespace.rstrip("/")
    answers = Collector(node, ObjectDetectionArray, f"{prefix}/detections")
    camera = Camera(node, f"{prefix}/image_raw", reliable=True)
    try:
        assert camera.wait_matched(15.0), f"nobody subscribes to {prefix}/image_raw"
        msg = publish_until_answered(camera, index, answers, timeout=30.0)
        got = sorted(
            (
                d.bbox.center_x - d.bbox.size_x / 2,
                d.bbox.center_y - d.bbox.size_y / 2,
                d.bbox.center_x + d.bbox.size_x / 2,
                d.bbox.center_y + d.bbox.size_y / 2,
            )
            for d in msg.detections
        )
        truth = sorted(frame_boxes(index))
        assert len(got) == len(truth), (got, truth)
        for g, t in zip(got, truth, strict=True):
            assert max(abs(a - b) for a, b in zip(g, t, strict=True)) <= 3.0, (g, t)
        assert {d.label for d in msg.detections} == {"white cube"}
        assert msg.header.frame_id == "camera_optical"
    finally:
        node.destroy_subscription(answers.sub)
        node.destroy_publisher(camera.pub)


class SimClock:
    """Publishes ``/clock`` from ``start_ns`` on, advancing with wall time, from a thread."""

    def __init__(self, node: Any, start_ns: int, hz: float = 20.0) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        self._msg = Clock()
        self._pub = node.create_publisher(
            Clock, "/clock", QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE)
        )
        self._start_ns, self._t0 = start_ns, time.monotonic()
        self._period = 1.0 / hz
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def now_ns(self) -> int:
        return self._start_ns + int((time.monotonic() - self._t0) * 1e9)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._msg.clock.sec, self._msg.clock.nanosec = divmod(self.now_ns(), 1_000_000_000)
            self._pub.publish(self._msg)
            self._stop.wait(self._period)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
