"""Core results -> ``vision_msgs`` (``Detection2DArray`` / ``Detection3DArray``).

For planners that speak the standard ROS detection messages rather than ``step_perception_msgs``.

The mapping, field by field (the same frame's ``detections`` message carries the same values):

- ``header``: the source image's header (stamp and frame_id), as on ``detections``.
- ``id``: the detection's id (the track id once tracking exists).
- ``results``: one hypothesis, ``class_id`` = the label, ``score`` = the model's score
  (NaN when the model gave none, as on ``detections``).
- 2D ``bbox``: centre and size in source pixels, ``theta`` 0 (boxes are axis-aligned).
- 3D (only detections that have a measured position): ``bbox.center`` and the hypothesis
  pose = the position in metres (orientation identity: none is estimated), ``bbox.size`` 0
  (the extent is not measured).
"""

from __future__ import annotations

from collections.abc import Iterable

from geometry_msgs.msg import Point, Pose, PoseWithCovariance, Quaternion
from std_msgs.msg import Header
from vision_msgs.msg import (
    BoundingBox2D,
    BoundingBox3D,
    Detection2D,
    Detection2DArray,
    Detection3D,
    Detection3DArray,
    ObjectHypothesis,
    ObjectHypothesisWithPose,
    Point2D,
    Pose2D,
)

from step_perception.core.types import Detection, PerceptionResult, Point3
from step_perception.ros.conversions import copy_header

__all__ = ["detection2d_array", "detection3d_array"]


def _hypothesis(det: Detection, pose: Pose | None = None) -> ObjectHypothesisWithPose:
    out = ObjectHypothesisWithPose(
        hypothesis=ObjectHypothesis(class_id=det.label, score=float(det.score))
    )
    if pose is not None:
        out.pose = PoseWithCovariance(pose=pose)
    return out


def _pose(p: Point3) -> Pose:
    return Pose(position=Point(x=p.x, y=p.y, z=p.z), orientation=Quaternion(w=1.0))


def _detection2d(det: Detection, header: Header) -> Detection2D:
    cx, cy = det.box.center
    bbox = BoundingBox2D(
        center=Pose2D(position=Point2D(x=cx, y=cy), theta=0.0),
        size_x=det.box.width,
        size_y=det.box.height,
    )
    return Detection2D(header=header, results=[_hypothesis(det)], bbox=bbox, id=det.id)


def _detection3d(det: Detection, position: Point3, header: Header) -> Detection3D:
    pose = _pose(position)
    return Detection3D(
        header=header,
        results=[_hypothesis(det, pose)],
        bbox=BoundingBox3D(center=pose),
        id=det.id,
    )


def detection2d_array(result: PerceptionResult, header: Header) -> Detection2DArray:
    """Return every detection of ``result`` as ``Detection2DArray`` (the source header)."""
    h = copy_header(header)
    return Detection2DArray(header=h, detections=[_detection2d(d, h) for d in result.detections])


def _placed(dets: Iterable[Detection]) -> list[tuple[Detection, Point3]]:
    return [(d, d.position) for d in dets if d.position is not None]


def detection3d_array(result: PerceptionResult, header: Header) -> Detection3DArray:
    """Return the detections of ``result`` that have a measured position as ``Detection3DArray``."""
    h = copy_header(header)
    return Detection3DArray(
        header=h, detections=[_detection3d(d, p, h) for d, p in _placed(result.detections)]
    )
