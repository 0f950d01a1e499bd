"""Depth to 3D positions, and spatial relations from geometry.

Depth is the aligned depth image as float32 metres (NaN = no return, see
``imaging.decode_depth``); it may have another resolution than the colour
image, so boxes are scaled by the resolution ratio (continuous pixel
coordinates, pixel ``i`` covers ``[i, i + 1)``). A box's depth is the median
of the valid pixels of its inner region after rejecting outliers by the
median absolute deviation; too few valid pixels give no position, never a
made-up one. Back-projection uses the pinhole model of ``CameraIntrinsics``
(pixel centres at integer coordinates, as in ROS ``CameraInfo``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from step_perception.core.types import (
    Box2D,
    CameraIntrinsics,
    Detection,
    Point3,
    Relation,
    RelationKind,
    RelationSource,
)

__all__ = [
    "DEFAULT_DEPTH",
    "DEFAULT_RELATIONS",
    "DepthParams",
    "RelationParams",
    "back_project",
    "box_depth",
    "geometric_relations",
    "locate",
    "merge_relations",
]


@dataclass(frozen=True)
class DepthParams:
    """How a box's depth is measured."""

    inner_fraction: float = 0.5  # use the central part of the box (fraction of each side)
    min_valid_fraction: float = 0.1  # of the inner region's pixels
    min_valid_pixels: int = 4
    min_depth_m: float = 0.05
    max_depth_m: float = 50.0
    mad_k: float = 3.0  # reject |d - median| > k * 1.4826 * MAD


@dataclass(frozen=True)
class RelationParams:
    """Thresholds of the geometric relations."""

    margin_m: float = 0.05  # 3D: left/above/in-front need this separation
    near_m: float = 0.3  # 3D: centres closer than this are "near"
    overlap_max: float = 0.5  # 2D: left/above need overlap below this fraction of the smaller box
    on_top_gap: float = 0.2  # 2D: bottom of one within this fraction of the other's height
    inside_min: float = 0.9  # 2D: this fraction of one box inside a larger one


DEFAULT_DEPTH = DepthParams()
DEFAULT_RELATIONS = RelationParams()


def box_depth(
    depth: npt.NDArray[np.float32],
    box: Box2D,
    color_width: int,
    color_height: int,
    params: DepthParams = DEFAULT_DEPTH,
) -> float | None:
    """Return a robust depth [m] for ``box`` (colour pixels); None without enough valid pixels."""
    if depth.ndim != 2 or depth.size == 0 or color_width <= 0 or color_height <= 0:
        return None
    dh, dw = depth.shape
    sx, sy = dw / color_width, dh / color_height
    shrink = (1.0 - params.inner_fraction) / 2.0
    ix1, ix2 = box.x1 + box.width * shrink, box.x2 - box.width * shrink
    iy1, iy2 = box.y1 + box.height * shrink, box.y2 - box.height * shrink
    x0 = min(max(math.floor(ix1 * sx), 0), dw - 1)
    y0 = min(max(math.floor(iy1 * sy), 0), dh - 1)
    x1 = min(max(math.ceil(ix2 * sx), x0 + 1), dw)
    y1 = min(max(math.ceil(iy2 * sy), y0 + 1), dh)
    region = depth[y0:y1, x0:x1]
    valid = region[
        np.isfinite(region) & (region >= params.min_depth_m) & (region <= params.max_depth_m)
    ]
    need = max(min(params.min_valid_pixels, region.size), params.min_valid_fraction * region.size)
    if valid.size == 0 or valid.size < need:
        return None
    med = float(np.median(valid))
    mad = float(np.median(np.abs(valid - med)))
    if mad > 0:
        valid = valid[np.abs(valid - med) <= params.mad_k * 1.4826 * mad]
    return float(np.median(valid))


def back_project(
    u: float, v: float, z: float, k: CameraIntrinsics, color_width: int, color_height: int
) -> Point3:
    """Return the 3D point at depth ``z`` of colour pixel ``(u, v)`` (continuous coordinates).

    The intrinsics are scaled when they refer to another resolution than the
    colour image (``k.width``/``k.height`` of 0 mean "the colour resolution").
    """
    sx = color_width / k.width if k.width > 0 else 1.0
    sy = color_height / k.height if k.height > 0 else 1.0
    fx, fy = k.fx * sx, k.fy * sy
    cx, cy = (k.cx + 0.5) * sx - 0.5, (k.cy + 0.5) * sy - 0.5
    px, py = u - 0.5, v - 0.5  # continuous -> pixel-centre coordinates
    return Point3((px - cx) * z / fx, (py - cy) * z / fy, z)


def locate(
    detections: Iterable[Detection],
    depth: npt.NDArray[np.float32] | None,
    intrinsics: CameraIntrinsics | None,
    color_width: int,
    color_height: int,
    params: DepthParams = DEFAULT_DEPTH,
) -> tuple[Detection, ...]:
    """Return the detections with ``position`` set where depth allows (else left None)."""
    dets = tuple(detections)
    if depth is None or intrinsics is None or intrinsics.fx <= 0 or intrinsics.fy <= 0:
        return dets
    out: list[Detection] = []
    for d in dets:
        z = box_depth(depth, d.box, color_width, color_height, params)
        if z is None:
            out.append(replace(d, position=None))
            continue
        u, v = d.box.center
        p = back_project(u, v, z, intrinsics, color_width, color_height)
        ok = all(math.isfinite(c) for c in (p.x, p.y, p.z))
        out.append(replace(d, position=p if ok else None))
    return tuple(out)


def _overlap(a1: float, a2: float, b1: float, b2: float) -> float:
    return max(0.0, min(a2, b2) - max(a1, b1))


_Triple = tuple[Detection, RelationKind, Detection]


def _ordered(a: Detection, kind: RelationKind, b: Detection, a_first: bool) -> _Triple:
    return (a, kind, b) if a_first else (b, kind, a)


def _pair(a: Detection, b: Detection, p: RelationParams) -> list[_Triple]:
    out: list[_Triple] = []
    ba, bb = a.box, b.box
    pa, pb = a.position, b.position
    if pa is not None and pb is not None:
        if abs(pb.x - pa.x) > p.margin_m:
            out.append(_ordered(a, RelationKind.LEFT_OF, b, pa.x < pb.x))
        if abs(pb.y - pa.y) > p.margin_m:  # y points down
            out.append(_ordered(a, RelationKind.ABOVE, b, pa.y < pb.y))
        if abs(pb.z - pa.z) > p.margin_m:
            out.append(_ordered(a, RelationKind.IN_FRONT_OF, b, pa.z < pb.z))
        if pa.distance(pb) < p.near_m:
            out.append((a, RelationKind.NEAR, b))
    else:
        ox = _overlap(ba.x1, ba.x2, bb.x1, bb.x2)
        oy = _overlap(ba.y1, ba.y2, bb.y1, bb.y2)
        if ox < p.overlap_max * min(ba.width, bb.width):
            out.append(_ordered(a, RelationKind.LEFT_OF, b, ba.center[0] < bb.center[0]))
        if oy < p.overlap_max * min(ba.height, bb.height):
            out.append(_ordered(a, RelationKind.ABOVE, b, ba.center[1] < bb.center[1]))
    for top, base in ((a, b), (b, a)):
        t, s = top.box, base.box
        inter = _overlap(t.x1, t.x2, s.x1, s.x2) * _overlap(t.y1, t.y2, s.y1, s.y2)
        if t.area > 0 and t.area < s.area and inter >= p.inside_min * t.area:
            out.append((top, RelationKind.INSIDE, base))
        elif (
            _overlap(t.x1, t.x2, s.x1, s.x2) >= 0.5 * min(t.width, s.width)
            and t.center[1] < s.center[1]
            and abs(t.y2 - s.y1) <= p.on_top_gap * s.height
        ):
            out.append((top, RelationKind.ON_TOP_OF, base))
    return out


def geometric_relations(
    detections: Sequence[Detection], params: RelationParams = DEFAULT_RELATIONS
) -> tuple[Relation, ...]:
    """Return relations between every pair: 3D when both have positions, else 2D (image).

    Only one direction of each opposite pair is stated (``left_of``, not also
    ``right_of``); ``distance`` is the 3D centre distance [m] when known.
    """
    out: list[Relation] = []
    for i, a in enumerate(detections):
        for b in detections[i + 1 :]:
            for s, kind, o in _pair(a, b, params):
                out.append(Relation(s.id, kind, o.id, RelationSource.GEOMETRY, _distance(s, o)))
    return tuple(out)


def _distance(a: Detection, b: Detection) -> float:
    if a.position is None or b.position is None:
        return math.nan
    return a.position.distance(b.position)


def merge_relations(
    model: Iterable[Relation], geometry: Iterable[Relation], detections: Sequence[Detection]
) -> tuple[Relation, ...]:
    """Return model-stated relations (distance filled in where known) followed by geometric ones."""
    by_id = {d.id: d for d in detections}
    out: list[Relation] = []
    seen: set[tuple[str, RelationKind, str, RelationSource]] = set()
    for r in (*model, *geometry):
        s, o = by_id.get(r.subject_id), by_id.get(r.object_id)
        key = (r.subject_id, r.relation, r.object_id, r.source)
        if s is None or o is None or key in seen:
            continue
        seen.add(key)
        out.append(replace(r, distance=_distance(s, o)))
    return tuple(out)
