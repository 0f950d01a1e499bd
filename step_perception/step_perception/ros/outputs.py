"""The node's result publishers, and how a finished frame's outcome is published or logged."""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from rclpy.lifecycle import LifecycleNode
from rclpy.lifecycle.publisher import LifecyclePublisher
from sensor_msgs.msg import Image
from std_msgs.msg import Header, String
from visualization_msgs.msg import MarkerArray

from step_perception.core.errors import BackendError, ImageError, ParseError
from step_perception.core.query import format_stamp
from step_perception.core.types import PerceptionResult
from step_perception.ros.conversions import command_msg, detection_array, scene_msg, stamp_to_ns
from step_perception.ros.qos import output_qos
from step_perception.ros.viz import debug_image, markers

# The repo's source folder step_perception_msgs/ shadows the built package for mypy.
from step_perception_msgs.msg import ObjectDetectionArray, SceneDescription  # type: ignore[attr-defined]

__all__ = ["Outputs"]

_LOG_THROTTLE_S = 5.0


class Outputs:
    """``detections``, ``scene``, ``command``, ``debug_image`` and ``markers`` (lifecycle)."""

    def __init__(self, node: LifecycleNode) -> None:
        self._node = node
        qos = output_qos()
        self._pubs: dict[str, LifecyclePublisher] = {
            "detections": node.create_lifecycle_publisher(ObjectDetectionArray, "detections", qos),
            "scene": node.create_lifecycle_publisher(SceneDescription, "scene", qos),
            "command": node.create_lifecycle_publisher(String, "command", qos),
            "debug_image": node.create_lifecycle_publisher(Image, "debug_image", qos),
            "markers": node.create_lifecycle_publisher(MarkerArray, "markers", qos),
        }

    def destroy(self) -> None:
        """Destroy the publishers (cleanup)."""
        for pub in self._pubs.values():
            self._node.destroy_lifecycle_publisher(pub)
        self._pubs = {}

    def publish_outcome(
        self, msg: Any, future: Future[PerceptionResult], *, always_debug: bool
    ) -> bool:
        """Publish a finished frame's result, or log why it has none; ``True`` when published."""
        log, throttle = self._node.get_logger(), _LOG_THROTTLE_S
        try:
            result = future.result()
        except ImageError as err:
            log.error(
                f"malformed image (stamp {format_stamp(stamp_to_ns(msg.header.stamp))}, "
                f"frame_id {msg.header.frame_id!r}): {err}",
                throttle_duration_sec=throttle,
            )
            return False
        except ParseError as err:
            log.warning(f"unusable model answer: {err}", throttle_duration_sec=throttle)
            return False
        except BackendError as err:
            log.warning(f"model backend: {err}", throttle_duration_sec=throttle)
            return False
        except Exception as err:
            log.error(f"frame failed: {err!r}", throttle_duration_sec=throttle)
            return False
        self.publish(msg, result, always_debug=always_debug)
        return True

    def publish(self, msg: Any, result: PerceptionResult, *, always_debug: bool) -> None:
        """Publish every output of ``result`` for the colour message ``msg``."""
        header: Header = msg.header
        pubs, log = self._pubs, self._node.get_logger()
        if not pubs:
            return
        pubs["detections"].publish(detection_array(result, header))
        pubs["scene"].publish(scene_msg(result, header))
        command = command_msg(result)
        if command is not None:
            pubs["command"].publish(command)
        if result.command_rejection:
            log.info(
                f"command rejected: {result.command_rejection}",
                throttle_duration_sec=_LOG_THROTTLE_S,
            )
        arr = markers(result, header)
        if arr is not None:
            pubs["markers"].publish(arr)
        if always_debug or pubs["debug_image"].get_subscription_count() > 0:
            try:
                pubs["debug_image"].publish(debug_image(msg, result, header))
            except ImageError as err:
                log.warning(f"debug image: {err}", throttle_duration_sec=_LOG_THROTTLE_S)
