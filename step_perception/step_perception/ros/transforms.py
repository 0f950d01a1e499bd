"""tf2 for the core: a ``TransformLookup`` (target, source, stamp) -> ``RigidTransform | None``.

The core never imports tf2; the node injects ``TfLookup`` into the ``Perceiver`` when
``target_frame`` is set. A lookup is at the image's stamp exactly (tf2 interpolates between
the transforms around it); when tf2 cannot give it within ``timeout_s`` (unknown frame, not
connected, stamp outside the buffer), the answer is ``None``, never an older transform.
"""

from __future__ import annotations

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.time import Time
from tf2_ros import Buffer, TransformException, TransformListener

from step_perception.core.types import RigidTransform

__all__ = ["TfLookup"]

_LOG_THROTTLE_S = 5.0


class TfLookup:
    """A tf2 buffer and listener on ``node`` (``/tf``, ``/tf_static``), callable as a lookup."""

    def __init__(self, node: Node, *, timeout_s: float = 0.2) -> None:
        self._node = node
        self._buffer = Buffer(node=node)
        self._listener = TransformListener(self._buffer, node)
        # A transform published just after its image (a driver at the same rate) is waited for.
        self._timeout = Duration(seconds=timeout_s)

    def __call__(self, target: str, source: str, stamp_ns: int) -> RigidTransform | None:
        """Return ``source`` -> ``target`` at ``stamp_ns``, or ``None`` (logged) when unknown."""
        try:
            t = self._buffer.lookup_transform(
                target, source, Time(nanoseconds=stamp_ns), timeout=self._timeout
            ).transform
        except TransformException as err:
            self._node.get_logger().warning(
                f"target_frame: no transform {source} -> {target} at {stamp_ns} ns: {err}",
                throttle_duration_sec=_LOG_THROTTLE_S,
            )
            return None
        r, v = t.rotation, t.translation
        return RigidTransform(
            translation=(float(v.x), float(v.y), float(v.z)),
            rotation=(float(r.x), float(r.y), float(r.z), float(r.w)),
        )

    def close(self) -> None:
        """Stop listening."""
        self._listener.unregister()
