"""Core results <-> step_perception_msgs, written once for every message family.

A *message family* is a set of message classes with ROS's field names: rclpy's
generated classes (the node, ``ros/conversions.py``) or a ``rosbags`` typestore's
(the bag tools, no ROS graph needed). This module imports neither: the caller
passes its family, so one mapping serves both and they cannot drift apart.

Every field is passed explicitly (``rosbags`` classes have no defaults), so the
same call builds a complete message in either family.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from step_perception.core.types import (
    Box2D,
    CameraIntrinsics,
    Detection,
    Point3,
    Relation,
)

__all__ = [
    "MessageFamily",
    "detection_array_msg",
    "detection_msg",
    "detections_from_msg",
    "header_msg",
    "intrinsics_from_camera_info",
    "relation_msg",
    "scene_description_msg",
    "stamp_msg",
    "stamp_ns",
]

_NS = 1_000_000_000


@dataclass(frozen=True)
class MessageFamily:
    """The message classes (constructors taking field keywords) of one family."""

    time: Callable[..., Any]  # builtin_interfaces/Time
    header: Callable[..., Any]  # std_msgs/Header
    point: Callable[..., Any]  # geometry_msgs/Point
    bounding_box: Callable[..., Any]  # step_perception_msgs/BoundingBox2D
    detection: Callable[..., Any]  # step_perception_msgs/ObjectDetection
    detection_array: Callable[..., Any]  # step_perception_msgs/ObjectDetectionArray
    relation: Callable[..., Any]  # step_perception_msgs/SpatialRelation
    scene: Callable[..., Any]  # step_perception_msgs/SceneDescription


# --------------------------------------------------------------------------- stamps


def stamp_ns(stamp: Any) -> int:
    """``builtin_interfaces/Time`` (any family) -> integer nanoseconds."""
    return int(stamp.sec) * _NS + int(stamp.nanosec)


def stamp_msg(family: MessageFamily, ns: int) -> Any:
    """Integer nanoseconds -> ``builtin_interfaces/Time`` of ``family``."""
    sec, nanosec = divmod(int(ns), _NS)
    return family.time(sec=sec, nanosec=nanosec)


def header_msg(family: MessageFamily, ns: int, frame_id: str) -> Any:
    """Return a ``std_msgs/Header`` of ``family`` at ``ns`` in ``frame_id``."""
    return family.header(stamp=stamp_msg(family, ns), frame_id=frame_id)


# --------------------------------------------------------------------------- core -> messages


def detection_msg(family: MessageFamily, det: Detection) -> Any:
    """One core detection -> ``ObjectDetection`` (box centre/size in source pixels)."""
    cx, cy = det.box.center
    p = det.position
    return family.detection(
        id=det.id,
        label=det.label,
        description=det.description,
        score=float(det.score),
        bbox=family.bounding_box(
            center_x=float(cx),
            center_y=float(cy),
            size_x=float(det.box.width),
            size_y=float(det.box.height),
        ),
        has_position=p is not None,
        position=family.point(x=p.x, y=p.y, z=p.z)
        if p is not None
        else family.point(x=0.0, y=0.0, z=0.0),
    )


def relation_msg(family: MessageFamily, rel: Relation) -> Any:
    """One core relation -> ``SpatialRelation``."""
    return family.relation(
        subject_id=rel.subject_id,
        relation=rel.relation.value,
        object_id=rel.object_id,
        distance=float(rel.distance),
        source=rel.source.value,
    )


def detection_array_msg(
    family: MessageFamily,
    header: Any,
    detections: Sequence[Detection],
    width: int,
    height: int,
    query: str = "",
) -> Any:
    """Core detections of one frame -> ``ObjectDetectionArray`` stamped with ``header``."""
    return family.detection_array(
        header=header,
        image_width=int(width),
        image_height=int(height),
        query=query,
        detections=[detection_msg(family, d) for d in detections],
    )


def scene_description_msg(
    family: MessageFamily,
    header: Any,
    summary: str,
    detections: Sequence[Detection],
    relations: Sequence[Relation],
) -> Any:
    """Core results of one frame -> ``SceneDescription`` stamped with ``header``."""
    return family.scene(
        header=header,
        summary=summary,
        objects=[detection_msg(family, d) for d in detections],
        relations=[relation_msg(family, r) for r in relations],
    )


# --------------------------------------------------------------------------- messages -> core


def detections_from_msg(msg: Any) -> tuple[Detection, ...]:
    """``ObjectDetectionArray`` or ``SceneDescription`` (any family) -> core detections."""
    items = msg.detections if hasattr(msg, "detections") else msg.objects
    out = []
    for d in items:
        b = d.bbox
        half_w, half_h = float(b.size_x) / 2.0, float(b.size_y) / 2.0
        cx, cy = float(b.center_x), float(b.center_y)
        pos = d.position
        out.append(
            Detection(
                id=str(d.id),
                label=str(d.label),
                box=Box2D(cx - half_w, cy - half_h, cx + half_w, cy + half_h),
                score=float(d.score),
                description=str(d.description),
                position=Point3(float(pos.x), float(pos.y), float(pos.z))
                if d.has_position
                else None,
            )
        )
    return tuple(out)


def intrinsics_from_camera_info(msg: Any) -> CameraIntrinsics | None:
    """Pinhole intrinsics from ``CameraInfo.k`` (any family); ``None`` when K or size is unset."""
    k = [float(v) for v in msg.k]
    fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    if not all(math.isfinite(v) for v in (fx, fy, cx, cy)) or fx <= 0 or fy <= 0:
        return None
    width, height = int(msg.width), int(msg.height)
    if width <= 0 or height <= 0:
        return None
    return CameraIntrinsics(fx=fx, fy=fy, cx=cx, cy=cy, width=width, height=height)
