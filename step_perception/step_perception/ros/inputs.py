"""The node's camera subscriptions and the DDS content filters on them.

``CameraInputs`` subscribes to ``image_raw`` (or ``image_raw/compressed``),
``camera_info``, ``prompt`` and, with ``use_depth``, ``depth/image_raw`` plus a
timer that releases a colour frame whose depth did not come. When the RMW
supports it (and ``content_filter`` allows it) the colour and depth
subscriptions get a content filter on ``header.stamp``; ``set_bounds`` moves it
to what ``core.frames.content_filter_bounds`` decided. Any filter failure falls
back to the plain subscriptions, never to half-filtered ones.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.clock import Clock
from rclpy.lifecycle import LifecycleNode
from rclpy.subscription import Subscription
from rclpy.utilities import get_rmw_implementation_identifier
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from step_perception.core.config import ImageTransportKind, PerceptionConfig
from step_perception.core.frames import FilterBounds
from step_perception.ros.content_filter import (
    ContentFilterError,
    StampFilter,
    middleware_filter_is_safe,
)
from step_perception.ros.params import ContentFilterMode
from step_perception.ros.qos import depth_qos, image_qos, output_qos

__all__ = ["CameraCallbacks", "CameraInputs"]

_HELD_CHECK_S = 0.05  # [s] how often a colour frame waiting for depth is checked


@dataclass(frozen=True)
class CameraCallbacks:
    """What the node runs for each input."""

    image: Callable[[Any], None]
    depth: Callable[[Image], None]
    camera_info: Callable[[CameraInfo], None]
    prompt: Callable[[String], None]
    check_held: Callable[[], None]


class CameraInputs:
    """Subscriptions of one camera; ``input_path`` is ``none``, ``plain`` or ``content_filter``."""

    def __init__(
        self, node: LifecycleNode, group: CallbackGroup, steady: Clock, cb: CameraCallbacks
    ) -> None:
        self._node, self._group, self._steady, self._cb = node, group, steady, cb
        self._subs: list[Subscription] = []
        self._filters: list[StampFilter] = []
        self._timer: Any = None
        self.input_path = "none"

    @property
    def filtered(self) -> bool:
        """Whether content filters are in use (their bounds must be kept up to date)."""
        return bool(self._filters)

    def subscribe(self, config: PerceptionConfig, filter_mode: ContentFilterMode) -> None:
        """Create the subscriptions (and the content filters when possible)."""
        node, group, cb, qos = self._node, self._group, self._cb, image_qos(config.reliability)
        if config.image_transport is ImageTransportKind.COMPRESSED:
            image = node.create_subscription(
                CompressedImage, "image_raw/compressed", cb.image, qos, callback_group=group
            )
        else:
            image = node.create_subscription(
                Image, "image_raw", cb.image, qos, callback_group=group
            )
        self._subs = [
            image,
            node.create_subscription(
                CameraInfo, "camera_info", cb.camera_info, qos, callback_group=group
            ),
            node.create_subscription(
                String, "prompt", cb.prompt, output_qos(), callback_group=group
            ),
        ]
        depth = None
        if config.use_depth:
            depth = node.create_subscription(
                Image, "depth/image_raw", cb.depth, depth_qos(config.reliability),
                callback_group=group,
            )  # fmt: skip
            self._subs.append(depth)
            self._timer = node.create_timer(
                _HELD_CHECK_S, cb.check_held, callback_group=group, clock=self._steady
            )
        self._filters, self.input_path = [], "plain"
        log = node.get_logger()
        why = _filter_refusal(filter_mode)
        if why:
            log.info(f"input path: plain keep-last-1 subscription ({why})")
            return
        filters = [StampFilter(s) for s in (image, depth) if s is not None]
        if all(f.enable() for f in filters):
            self._filters, self.input_path = filters, "content_filter"
            log.info("input path: DDS content filter on header.stamp, driven by the throttle")
        else:
            _open(filters)  # leave none half-filtered
            log.info(
                "input path: plain keep-last-1 subscription (the RMW has no "
                "content-filtered topics: is_cft_enabled is false)"
            )

    def set_bounds(self, bounds: FilterBounds) -> None:
        """Move the filters (colour first, then depth); on failure fall back to plain."""
        try:
            for f, b in zip(self._filters, (bounds.colour, bounds.depth), strict=False):
                f.set_bound(b)
        except ContentFilterError as err:
            self._node.get_logger().error(
                f"content filter update failed ({err}); falling back to the plain subscription"
            )
            _open(self._filters)
            self._filters, self.input_path = [], "plain"

    def unsubscribe(self) -> None:
        """Destroy every subscription and the held-frame timer."""
        for sub in self._subs:
            self._node.destroy_subscription(sub)
        self._subs, self._filters = [], []
        if self._timer is not None:
            self._node.destroy_timer(self._timer)
            self._timer = None
        self.input_path = "none"


def _filter_refusal(mode: ContentFilterMode) -> str:
    """Why the content filter is not used, or '' when it should be tried."""
    if mode is ContentFilterMode.OFF:
        return "content_filter is off"
    if mode is ContentFilterMode.AUTO:
        safe, why = middleware_filter_is_safe(get_rmw_implementation_identifier())
        if not safe:
            return f"content_filter auto: {why}; set content_filter:=on to force it"
    return ""


def _open(filters: list[StampFilter]) -> None:
    for f in filters:
        with contextlib.suppress(ContentFilterError):
            f.set_bound(0)
