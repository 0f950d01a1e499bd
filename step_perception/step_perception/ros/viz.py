"""What people look at: the annotated debug image and RViz markers of one result."""

from __future__ import annotations

import hashlib

import cv2
import numpy as np
from geometry_msgs.msg import Point, Vector3
from sensor_msgs.msg import Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from step_perception.core.imaging import decode_color
from step_perception.core.types import PerceptionResult
from step_perception.ros.conversions import copy_header

__all__ = ["MARKER_NAMESPACE", "debug_image", "label_colour", "markers"]

MARKER_NAMESPACE = "step_perception"
_SPHERE_M = 0.06  # [m] marker sphere diameter
_TEXT_M = 0.05  # [m] label text height


def label_colour(label: str) -> tuple[int, int, int]:
    """Return a stable, bright BGR colour for a label (same label, same colour, every frame)."""
    h = hashlib.sha256(label.encode("utf-8")).digest()
    hsv = np.array([[[h[0] % 180, 200, 255]]], dtype=np.uint8)
    b, g, r = (int(v) for v in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
    return b, g, r


def debug_image(source: object, result: PerceptionResult, header: Header) -> Image:
    """Draw boxes, labels and the summary on the source image (full resolution, bgr8).

    ``ImageError`` if the source cannot be decoded (it already was once, so
    this is rare).
    """
    img = decode_color(source)
    h, w = img.shape[:2]
    thick = max(1, round(max(w, h) / 640))
    scale = max(0.4, max(w, h) / 1600)
    for det in result.detections:
        colour = label_colour(det.label)
        p1 = (round(det.box.x1), round(det.box.y1))
        p2 = (round(det.box.x2), round(det.box.y2))
        cv2.rectangle(img, p1, p2, colour, thick)
        text = f"{det.id}:{det.label}"
        if det.score == det.score:  # not NaN
            text += f" {det.score:.2f}"
        if det.position is not None:
            text += f" z={det.position.z:.2f}m"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        y = max(th + base, p1[1])
        cv2.rectangle(img, (p1[0], y - th - base), (p1[0] + tw, y), colour, cv2.FILLED)
        cv2.putText(img, text, (p1[0], y - base), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick)
    footer = result.summary or (result.command.text() if result.command else "")
    if result.command_rejection:
        footer = f"rejected: {result.command_rejection}"
    if footer:
        cv2.putText(
            img,
            footer[:120],
            (8, h - 8),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (255, 255, 255),
            thick,
            cv2.LINE_AA,
        )
    out = Image(header=copy_header(header), height=h, width=w, encoding="bgr8", is_bigendian=0)
    out.step = w * 3
    out.data = np.ascontiguousarray(img).tobytes()
    return out


def markers(result: PerceptionResult, header: Header) -> MarkerArray | None:
    """Spheres and labels at the 3D positions of one result; ``None`` when none has a position.

    The first marker deletes the previous frame's markers, so RViz shows one
    frame at a time.
    """
    placed = [d for d in result.detections if d.position is not None]
    if not placed:
        return None
    out = MarkerArray()
    clear = Marker(header=copy_header(header), ns=MARKER_NAMESPACE, action=Marker.DELETEALL)
    out.markers.append(clear)
    for i, det in enumerate(placed):
        assert det.position is not None
        b, g, r = label_colour(det.label)
        colour = ColorRGBA(r=r / 255.0, g=g / 255.0, b=b / 255.0, a=0.9)
        where = Point(x=det.position.x, y=det.position.y, z=det.position.z)
        sphere = Marker(header=copy_header(header), ns=MARKER_NAMESPACE, id=2 * i)
        sphere.type = Marker.SPHERE
        sphere.action = Marker.ADD
        sphere.pose.position = where
        sphere.pose.orientation.w = 1.0
        sphere.scale = Vector3(x=_SPHERE_M, y=_SPHERE_M, z=_SPHERE_M)
        sphere.color = colour
        text = Marker(header=copy_header(header), ns=MARKER_NAMESPACE, id=2 * i + 1)
        text.type = Marker.TEXT_VIEW_FACING
        text.action = Marker.ADD
        # Optical frame: y points down, so "above" the object is -y.
        text.pose.position = Point(x=where.x, y=where.y - 1.5 * _SPHERE_M, z=where.z)
        text.pose.orientation.w = 1.0
        text.scale.z = _TEXT_M
        text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
        text.text = f"{det.id}:{det.label}"
        out.markers.extend((sphere, text))
    return out
