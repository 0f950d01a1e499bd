"""The ``query`` service: one request in, the answer about the newest frame out.

The frame choice, the time budget and the reply text are core decisions
(core/query.py); this module converts the request and the response, and bounds
how many queries run at once (each one occupies an executor thread while it
waits).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

from rclpy.callback_groups import CallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import Image

from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import ConfigError, StepPerceptionError
from step_perception.core.loop import FrameLoop
from step_perception.core.pipeline import Perceiver, frame_input
from step_perception.core.query import FrameMailbox, query_reply, query_timeout
from step_perception.core.types import CameraIntrinsics, PerceptionResult
from step_perception.ros.conversions import (
    detection_array,
    position_header,
    scene_msg,
    stamp_to_ns,
)

# The repo's source folder step_perception_msgs/ shadows the built package for mypy.
from step_perception_msgs.srv import Query  # type: ignore[attr-defined]

__all__ = ["MAX_QUERIES", "QueryContext", "QueryService"]

MAX_QUERIES = 2  # concurrent queries; more are refused at once (keeps executor threads free)
_RESULT_GRACE_S = 0.5  # [s] past the deadline the perceiver's own timeout gets to report


@dataclass(frozen=True)
class QueryContext:
    """What a query needs from the active node."""

    perceiver: Perceiver
    config: PerceptionConfig
    loop: FrameLoop[Any, Image, PerceptionResult]
    intrinsics: CameraIntrinsics | None
    latest_is_newest: bool  # no content filter holds frames back


class QueryService:
    """Serves ``query``; ``context`` returns the active node's state, or why there is none."""

    def __init__(
        self,
        node: Node,
        group: CallbackGroup,
        mailbox: FrameMailbox[Any],
        context: Callable[[], QueryContext | str],
        wake: Callable[[], None],
    ) -> None:
        self._mailbox, self._context, self._wake = mailbox, context, wake
        self._slots = threading.BoundedSemaphore(MAX_QUERIES)
        node.create_service(Query, "query", self._on_query, callback_group=group)

    def _on_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        response.success = False
        if not self._slots.acquire(blocking=False):
            response.message = f"busy: {MAX_QUERIES} queries are already running"
            return response
        try:
            return self._answer(request, response)
        finally:
            self._slots.release()

    def _answer(self, request: Query.Request, response: Query.Response) -> Query.Response:
        ctx = self._context()
        if isinstance(ctx, str):
            response.message = ctx
            return response
        try:
            timeout = query_timeout(request.timeout_s, ctx.config.request_timeout_s)
        except ConfigError as err:
            response.message = str(err)
            return response
        deadline = time.monotonic() + timeout
        msg = self._mailbox.frame_for_query(
            deadline,
            max_age_s=ctx.config.max_frame_age_s,
            latest_is_newest=ctx.latest_is_newest,
            on_change=self._wake,  # the loop opens/closes the content filter
        )
        if msg is None:
            response.message = f"no image arrived within {timeout:g} s"
            return response
        stamp, remaining = stamp_to_ns(msg.header.stamp), max(0.0, deadline - time.monotonic())
        future = ctx.perceiver.submit(
            frame_input(
                msg, stamp, msg.header.frame_id,
                depth=ctx.loop.depth_for(stamp), intrinsics=ctx.intrinsics,
                prompt=request.prompt.strip() or None, timeout_s=remaining,
            )
        )  # fmt: skip
        try:
            result = future.result(timeout=remaining + _RESULT_GRACE_S)
        except FutureTimeout:
            future.cancel()
            response.message = f"no answer within {timeout:g} s"
            return response
        except StepPerceptionError as err:
            response.message = f"{type(err).__name__}: {err}"
            return response
        reply = query_reply(result, stamp)
        response.success = True
        placed = position_header(result, msg.header)
        response.detections = detection_array(result, placed)
        response.scene = scene_msg(result, placed)
        response.answer, response.message = reply.answer, reply.message
        return response
