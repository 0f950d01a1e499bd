"""Core results -> step_perception_msgs, and the few ROS messages the core reads.

Every output carries a copy of the source image's header (same stamp, same
frame_id), so consumers can time-sync outputs with the camera.
"""

from __future__ import annotations

import math

from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header, String

from step_perception.core.types import (
    CameraIntrinsics,
    Detection,
    PerceptionResult,
    Relation,
)

# The repo's source folder step_perception_msgs/ shadows the built package for mypy.
from step_perception_msgs.msg import (  # type: ignore[attr-defined]
    BoundingBox2D,
    ObjectDetection,
    ObjectDetectionArray,
    SceneDescription,
    SpatialRelation,
)

__all__ = [
    "command_msg",
    "copy_header",
    "detection_array",
    "detection_msg",
    "intrinsics_from_camera_info",
    "ns_to_stamp",
    "relation_msg",
    "scene_msg",
    "stamp_to_ns",
]


def stamp_to_ns(stamp: Time) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> Time:
    """Integer nanoseconds -> ``builtin_interfaces/Time``."""
    sec, nanosec = divmod(int(ns), 1_000_000_000)
    return Time(sec=sec, nanosec=nanosec)


def copy_header(header: Header) -> Header:
    """Return an independent copy of ``header`` (stamp and frame_id unchanged)."""
    return Header(
        stamp=Time(sec=header.stamp.sec, nanosec=header.stamp.nanosec), frame_id=header.frame_id
    )


def intrinsics_from_camera_info(msg: CameraInfo) -> CameraIntrinsics | None:
    """Pinhole intrinsics from ``CameraInfo.k``; ``None`` when K is unset or not finite."""
    k = [float(v) for v in msg.k]
    fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
        return None
    if msg.width <= 0 or msg.height <= 0:
        return None
    return CameraIntrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=msg.width, height=msg.height)


def detection_msg(det: Detection) -> ObjectDetection:
    """One core detection -> ``ObjectDetection`` (box centre/size in source pixels)."""
    cx, cy = det.box.center
    out = ObjectDetection(
        id=det.id,
        label=det.label,
        description=det.description,
        score=float(det.score),
        bbox=BoundingBox2D(
            center_x=float(cx),
            center_y=float(cy),
            size_x=float(det.box.width),
            size_y=float(det.box.height),
        ),
    )
    if det.position is not None:
        out.has_position = True
        out.position = Point(x=det.position.x, y=det.position.y, z=det.position.z)
    return out


def relation_msg(rel: Relation) -> SpatialRelation:
    """One core relation -> ``SpatialRelation``."""
    return SpatialRelation(
        subject_id=rel.subject_id,
        relation=rel.relation.value,
        object_id=rel.object_id,
        distance=float(rel.distance),
        source=rel.source.value,
    )


def detection_array(result: PerceptionResult, header: Header) -> ObjectDetectionArray:
    """Build the ``detections`` message of one result, stamped with the source ``header``."""
    return ObjectDetectionArray(
        header=copy_header(header),
        image_width=result.frame.width,
        image_height=result.frame.height,
        query=result.query,
        detections=[detection_msg(d) for d in result.detections],
    )


def scene_msg(result: PerceptionResult, header: Header) -> SceneDescription:
    """Build the ``scene`` message of one result, stamped with the source ``header``."""
    return SceneDescription(
        header=copy_header(header),
        summary=result.summary,
        objects=[detection_msg(d) for d in result.detections],
        relations=[relation_msg(r) for r in result.relations],
    )


def command_msg(result: PerceptionResult) -> String | None:
    """Return the accepted command in the planner grammar, or ``None`` when there is none."""
    if result.command is None:
        return None
    return String(data=result.command.text())
