"""Core results -> step_perception_msgs as rclpy messages, and the few ROS messages the core reads.

The mapping itself is ``ros/messages.py`` (shared with the bag tools); this module
binds it to rclpy's message classes. Every output carries a copy of the source
image's header (same stamp, same frame_id), so consumers can time-sync outputs
with the camera.
"""

from __future__ import annotations

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header, String

from step_perception.core.types import CameraIntrinsics, PerceptionResult
from step_perception.ros import messages

# The repo's source folder step_perception_msgs/ shadows the built package for mypy.
from step_perception_msgs.msg import (  # type: ignore[attr-defined]
    BoundingBox2D,
    ObjectDetection,
    ObjectDetectionArray,
    SceneDescription,
    SpatialRelation,
)

__all__ = [
    "RCLPY",
    "command_msg",
    "copy_header",
    "detection_array",
    "intrinsics_from_camera_info",
    "scene_msg",
    "stamp_to_ns",
]

#: rclpy's classes as a message family of ``ros/messages.py``.
RCLPY = messages.MessageFamily(
    time=Time,
    header=Header,
    point=Point,
    bounding_box=BoundingBox2D,
    detection=ObjectDetection,
    detection_array=ObjectDetectionArray,
    relation=SpatialRelation,
    scene=SceneDescription,
)


def stamp_to_ns(stamp: Time) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return messages.stamp_ns(stamp)


def copy_header(header: Header) -> Header:
    """Return an independent copy of ``header`` (stamp and frame_id unchanged)."""
    out: Header = messages.header_msg(RCLPY, stamp_to_ns(header.stamp), header.frame_id)
    return out


def intrinsics_from_camera_info(msg: CameraInfo) -> CameraIntrinsics | None:
    """Pinhole intrinsics from ``CameraInfo.k``; ``None`` when K is unset or not finite."""
    return messages.intrinsics_from_camera_info(msg)


def detection_array(result: PerceptionResult, header: Header) -> ObjectDetectionArray:
    """Build the ``detections`` message of one result, stamped with the source ``header``."""
    meta = result.frame
    return messages.detection_array_msg(
        RCLPY, copy_header(header), result.detections, meta.width, meta.height, result.query
    )


def scene_msg(result: PerceptionResult, header: Header) -> SceneDescription:
    """Build the ``scene`` message of one result, stamped with the source ``header``."""
    return messages.scene_description_msg(
        RCLPY, copy_header(header), result.summary, result.detections, result.relations
    )


def command_msg(result: PerceptionResult) -> String | None:
    """Return the accepted command in the planner grammar, or ``None`` when there is none."""
    if result.command is None:
        return None
    return String(data=result.command.text())
