"""The step_perception lifecycle node: a thin adapter from camera topics to the perception core.

Data path: image callback -> ``FrameGate.offer`` (stamp only, nothing decoded)
-> ``Perceiver.submit`` (runs on worker and backend threads) -> the finished
future is queued and a guard condition wakes the executor -> results are
published, the gate's slot is freed and the next waiting frame is sent.

Threads: the node's default (mutually exclusive) callback group runs
everything that touches node state: image/depth/info/prompt callbacks, the
result drain, timers, parameter and lifecycle services. The ``query`` and
``enable`` services run in a reentrant group, so a query that waits for its
answer occupies one executor thread and never the loop. ``main`` spins a
``MultiThreadedExecutor``.

The decisions live in the pure core and are unit-tested there: the frame gate
and the content-filter policy (core/frames.py), depth pairing, held frames and
the clock-jump reset (core/sync.py), the query's frame and reply
(core/query.py). This module only translates between ROS and the core.

Lifecycle: configure reads the parameters and builds the backend, activate
subscribes, deactivate unsubscribes (in-flight answers are discarded),
cleanup frees the backend. ``autostart`` (default true) walks to active.
"""

from __future__ import annotations

import contextlib
import queue
import sys
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock
from rclpy.clock_type import ClockType
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.lifecycle.publisher import LifecyclePublisher
from rclpy.logging import get_logger
from rclpy.parameter import Parameter
from rclpy.subscription import Subscription
from rclpy.utilities import get_rmw_implementation_identifier, try_shutdown
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool
from visualization_msgs.msg import MarkerArray

from step_perception.backends.factory import backend_from_config
from step_perception.core.backend import Backend
from step_perception.core.config import ImageTransportKind, PerceptionConfig
from step_perception.core.errors import (
    BackendError,
    ConfigError,
    ImageError,
    ParseError,
    StepPerceptionError,
)
from step_perception.core.frames import Decision, FrameGate, GateCounters, content_filter_bounds
from step_perception.core.pipeline import Perceiver, PerceiverStats, frame_input
from step_perception.core.query import FrameMailbox, format_stamp, query_reply, query_timeout
from step_perception.core.sync import ClockJump, DepthSync
from step_perception.core.types import CameraIntrinsics, PerceptionResult
from step_perception.ros.content_filter import (
    ContentFilterError,
    StampFilter,
    middleware_filter_is_safe,
)
from step_perception.ros.conversions import (
    command_msg,
    detection_array,
    intrinsics_from_camera_info,
    scene_msg,
    stamp_to_ns,
)
from step_perception.ros.diagnostics import Diagnostics, DiagnosticsSnapshot
from step_perception.ros.params import (
    ContentFilterMode,
    NodeSettings,
    apply_updates,
    declare_parameters,
    read_settings,
)
from step_perception.ros.qos import DEPTH_KEEP, depth_qos, image_qos, output_qos
from step_perception.ros.viz import debug_image, markers

# The repo's source folder step_perception_msgs/ shadows the built package for mypy.
from step_perception_msgs.msg import ObjectDetectionArray, SceneDescription  # type: ignore[attr-defined]
from step_perception_msgs.srv import Query  # type: ignore[attr-defined]

__all__ = ["NODE_NAME", "PerceptionNode", "main"]

NODE_NAME = "step_perception"
# [s] how long an admitted colour frame waits for its aligned depth. Measured here (replayed
# 1280x720 bags, reliable, LARGE_DATA, loaded 2-core machine): most depth frames arrive within
# milliseconds, but about a third arrive seconds late (Fast DDS repairs lost fragments at its
# next heartbeat); waiting longer would stall the loop, so those frames go out without 3D
# positions and are counted as drops_no_depth_in_time.
_DEPTH_WAIT_S = 0.5
_CLOCK_JUMP_NS = 1_000_000_000  # a clock going back further than this resets the gate
_LOG_THROTTLE_S = 5.0
_MAX_QUERIES = 2  # concurrent queries; more are refused at once (keeps executor threads free)
_EXECUTOR_THREADS = 4


@dataclass(frozen=True)
class _Finished:
    """A loop request whose future completed (queued from a worker thread)."""

    msg: Any
    generation: int
    future: Future[PerceptionResult]


def _stamp(msg: Any) -> int:
    return stamp_to_ns(msg.header.stamp)


class PerceptionNode(LifecycleNode):
    """One camera's perception node (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(NODE_NAME, **kwargs)
        declare_parameters(self)
        self._loop_group = self.default_callback_group
        self._service_group = ReentrantCallbackGroup()
        self._steady = Clock(clock_type=ClockType.STEADY_TIME)
        self._state = "unconfigured"
        self._lock = threading.Lock()  # guards what the query threads share with the loop

        self._settings: NodeSettings | None = None
        self._config: PerceptionConfig | None = None
        self._backend: Backend | None = None
        self._perceiver: Perceiver | None = None
        self._gate: FrameGate[Any] | None = None
        self._enabled = True
        self._pubs: dict[str, LifecyclePublisher] = {}
        self._subs: list[Subscription] = []
        self._filters: list[StampFilter] = []
        self._input_path = "none"
        self._intrinsics: CameraIntrinsics | None = None
        self._sync: DepthSync[Any, Image] = DepthSync(
            time.monotonic, keep=DEPTH_KEEP, wait_s=_DEPTH_WAIT_S
        )
        self._clock_jump = ClockJump(_CLOCK_JUMP_NS)
        self._mailbox: FrameMailbox[Any] = FrameMailbox(time.monotonic)
        self._depth_timer: Any = None
        self._queries = threading.BoundedSemaphore(_MAX_QUERIES)
        self._finished: queue.SimpleQueue[_Finished] = queue.SimpleQueue()

        ns = self.get_namespace()
        self._diag = Diagnostics(
            name=f"{self.get_fully_qualified_name()}: perception",
            hardware_id=ns if ns != "/" else NODE_NAME,
        )
        self._wake = self.create_guard_condition(self._drain, callback_group=self._loop_group)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.create_timer(
            1.0, self._publish_diagnostics, callback_group=self._loop_group, clock=self._steady
        )
        self.create_service(Query, "query", self._on_query, callback_group=self._service_group)
        self.create_service(SetBool, "enable", self._on_enable, callback_group=self._service_group)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def lifecycle_state(self) -> str:
        """``unconfigured``, ``inactive``, ``active`` or ``finalized``."""
        return self._state

    @property
    def autostart(self) -> bool:
        """The ``autostart`` parameter."""
        value: object = self.get_parameter("autostart").value
        return value is True

    def start(self) -> bool:
        """Configure and activate (what ``autostart`` does); ``True`` when active."""
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            return False
        return bool(self.trigger_activate() == TransitionCallbackReturn.SUCCESS)

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Read the parameters, build the backend, the perceiver, the gate and the publishers."""
        try:
            settings = read_settings(self)
        except ConfigError as err:
            self.get_logger().error(f"configure failed: bad parameter: {err}")
            return TransitionCallbackReturn.FAILURE
        config = settings.config
        try:
            backend = backend_from_config(config)
        except (ConfigError, BackendError, OSError, ImportError) as err:
            self.get_logger().error(
                f"configure failed: cannot build the {config.backend.value} backend: {err}"
            )
            return TransitionCallbackReturn.FAILURE
        try:
            gate: FrameGate[Any] = FrameGate(
                self._now_ns,
                rate_hz=config.rate_hz,
                max_inflight=config.max_inflight,
                max_frame_age_s=config.max_frame_age_s,
            )
            perceiver = Perceiver(config, backend, now_ns=self._now_ns)
        except StepPerceptionError as err:
            backend.close()
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            self._settings, self._config = settings, config
            self._backend, self._perceiver, self._gate = backend, perceiver, gate
        qos = output_qos()
        self._pubs = {
            "detections": self.create_lifecycle_publisher(ObjectDetectionArray, "detections", qos),
            "scene": self.create_lifecycle_publisher(SceneDescription, "scene", qos),
            "command": self.create_lifecycle_publisher(String, "command", qos),
            "debug_image": self.create_lifecycle_publisher(Image, "debug_image", qos),
            "markers": self.create_lifecycle_publisher(MarkerArray, "markers", qos),
        }
        self.get_logger().info(
            f"configured: backend={backend.name} model={config.model} "
            f"profile={config.model_profile} task={config.task.value} rate_hz={config.rate_hz:g} "
            f"max_image_side={config.max_image_side} input={config.image_transport.value}"
            f"/{config.reliability.value} use_depth={config.use_depth}"
        )
        self._state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the camera topics and start publishing."""
        assert self._settings is not None and self._config is not None
        try:
            self._subscribe(self._settings, self._config)
        except Exception as err:  # an RMW error must not leave half a subscription set
            self.get_logger().error(f"activate failed: {err!r}")
            self._unsubscribe()
            return TransitionCallbackReturn.FAILURE
        self._state = "active"
        ret = super().on_activate(state)
        self._wake.trigger()
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe; answers still in flight are discarded."""
        self._unsubscribe()
        if self._gate is not None:
            self._gate.reset()
        self._sync.drop_held()
        self._state = "inactive"
        self._mailbox.release_waiters()  # queries waiting for a frame get none now
        self.get_logger().info("deactivated: camera unsubscribed")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the backend (and the model it holds) and the publishers."""
        self._release()
        self._state = "unconfigured"
        self.get_logger().info("cleaned up: backend closed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and free everything."""
        self._unsubscribe()
        self._release()
        self._state = "finalized"
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything; the node returns to unconfigured."""
        self.get_logger().error(f"error during a transition from {state.label}; cleaning up")
        self._unsubscribe()
        self._release()
        self._state = "unconfigured"
        return TransitionCallbackReturn.SUCCESS

    def shutdown(self) -> None:
        """Leave every state cleanly (for ``main`` and tests)."""
        if self._state in ("active", "inactive", "unconfigured"):
            with contextlib.suppress(Exception):
                self.trigger_shutdown()
        self._unsubscribe()
        self._release()

    def _release(self) -> None:
        with self._lock:
            perceiver, backend = self._perceiver, self._backend
            self._perceiver = self._backend = self._gate = None
            self._settings = self._config = None
        self._mailbox.release_waiters()
        for pub in self._pubs.values():
            self.destroy_lifecycle_publisher(pub)
        self._pubs = {}
        if perceiver is not None:
            perceiver.close()
        if backend is not None:
            backend.close()

    # -- subscriptions and the content filter ------------------------------------------------

    def _subscribe(self, settings: NodeSettings, config: PerceptionConfig) -> None:
        qos, group = image_qos(config.reliability), self._loop_group
        if config.image_transport is ImageTransportKind.COMPRESSED:
            image = self.create_subscription(
                CompressedImage, "image_raw/compressed", self._on_image, qos, callback_group=group
            )
        else:
            image = self.create_subscription(
                Image, "image_raw", self._on_image, qos, callback_group=group
            )
        self._subs = [
            image,
            self.create_subscription(
                CameraInfo, "camera_info", self._on_camera_info, qos, callback_group=group
            ),
            self.create_subscription(
                String, "prompt", self._on_prompt, output_qos(), callback_group=group
            ),
        ]
        depth = None
        if config.use_depth:
            depth = self.create_subscription(
                Image, "depth/image_raw", self._on_depth, depth_qos(config.reliability),
                callback_group=group,
            )  # fmt: skip
            self._subs.append(depth)
            self._depth_timer = self.create_timer(
                0.05, self._check_held, callback_group=group, clock=self._steady
            )
        self._filters, self._input_path = [], "plain"
        why = self._filter_refusal(settings.content_filter)
        if why:
            self.get_logger().info(f"input path: plain keep-last-1 subscription ({why})")
        else:
            filters = [StampFilter(s) for s in (image, depth) if s is not None]
            if all(f.enable() for f in filters):
                self._filters, self._input_path = filters, "content_filter"
                self.get_logger().info(
                    "input path: DDS content filter on header.stamp, driven by the throttle"
                )
            else:
                self._open_filters(filters)  # leave none half-filtered
                self.get_logger().info(
                    "input path: plain keep-last-1 subscription (the RMW has no "
                    "content-filtered topics: is_cft_enabled is false)"
                )
        self._update_filter()

    def _filter_refusal(self, mode: ContentFilterMode) -> str:
        """Why the content filter is not used, or '' when it should be tried."""
        if mode is ContentFilterMode.OFF:
            return "content_filter is off"
        if mode is ContentFilterMode.AUTO:
            safe, why = middleware_filter_is_safe(get_rmw_implementation_identifier())
            if not safe:
                return f"content_filter auto: {why}; set content_filter:=on to force it"
        return ""

    @staticmethod
    def _open_filters(filters: list[StampFilter]) -> None:
        for f in filters:
            with contextlib.suppress(ContentFilterError):
                f.set_bound(0)

    def _unsubscribe(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs, self._filters = [], []
        if self._depth_timer is not None:
            self.destroy_timer(self._depth_timer)
            self._depth_timer = None
        self._input_path = "none"
        self._sync.clear()

    def _update_filter(self) -> None:
        """Move the content filters to what the gate (and waiting queries) will take next."""
        if not self._filters or self._gate is None:
            return
        held = self._sync.held
        bounds = content_filter_bounds(
            self._gate.next_accept_stamp_ns(),
            enabled=self._enabled,
            query_waiting=self._mailbox.waiting,
            latest_stamp_ns=self._mailbox.latest_stamp_ns,
            held_stamp_ns=held.stamp_ns if held is not None else None,
        )
        try:  # filters[0] is the colour image, filters[1] (if any) the depth
            for f, b in zip(self._filters, (bounds.colour, bounds.depth), strict=False):
                f.set_bound(b)
        except ContentFilterError as err:
            self.get_logger().error(
                f"content filter update failed ({err}); falling back to the plain subscription"
            )
            self._open_filters(self._filters)
            self._filters, self._input_path = [], "plain"

    # -- the loop ----------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return int(self.get_clock().now().nanoseconds)

    def _on_image(self, msg: Any) -> None:
        self._diag.input.tick()
        gate = self._gate
        if gate is None or self._state != "active":
            self._diag.drop("inactive")
            return
        if self._clock_jump.jumped_back(self._now_ns()):
            self.get_logger().info("clock jumped back (bag loop?): throttle reset")
            gate.reset()
            self._sync.drop_held()
        stamp = _stamp(msg)
        self._mailbox.put(stamp, msg)
        if not self._enabled:
            self._diag.drop("disabled")
        elif gate.offer(stamp, msg) is Decision.SEND_NOW:
            self._send(msg, gate.generation)
        self._update_filter()

    def _on_depth(self, msg: Image) -> None:
        self._diag.received("depth")
        held = self._sync.add_depth(_stamp(msg), msg)
        if held is not None:
            self._send(held.payload, held.generation)
            self._update_filter()

    def _on_camera_info(self, msg: CameraInfo) -> None:
        self._diag.received("camera_info")
        intrinsics = intrinsics_from_camera_info(msg)
        if intrinsics is None:
            self.get_logger().warning(
                "camera_info has no valid K: positions unavailable",
                throttle_duration_sec=_LOG_THROTTLE_S,
            )
        self._intrinsics = intrinsics

    def _on_prompt(self, msg: String) -> None:
        result = self.set_parameters([Parameter("prompt", Parameter.Type.STRING, msg.data)])[0]
        if not result.successful:
            self.get_logger().warning(f"prompt topic: rejected: {result.reason}")

    def _check_held(self) -> None:
        held = self._sync.expired()
        if held is not None:
            self._diag.drop("no_depth_in_time")
            self._send(held.payload, held.generation, wait_depth=False)
            self._update_filter()

    def _send(self, msg: Any, generation: int, *, wait_depth: bool = True) -> None:
        """Hand an admitted frame to the perceiver (or hold it briefly for its depth)."""
        perceiver, config = self._perceiver, self._config
        if perceiver is None or config is None:
            return
        stamp, depth = _stamp(msg), None
        if config.use_depth:
            depth = self._sync.match(stamp)
            if depth is None and wait_depth:
                self._sync.hold(stamp, msg, generation)
                return
        frame = frame_input(
            msg, stamp, msg.header.frame_id, depth=depth, intrinsics=self._intrinsics
        )
        future = perceiver.submit(frame)
        future.add_done_callback(lambda f: self._post(_Finished(msg, generation, f)))

    def _post(self, item: _Finished) -> None:
        # Worker thread: queue it and wake the executor; nothing else happens here.
        self._finished.put(item)
        self._wake.trigger()

    def _drain(self) -> None:
        while True:
            try:
                item = self._finished.get_nowait()
            except queue.Empty:
                break
            gate = self._gate
            if gate is None:
                continue
            current = item.generation == gate.generation
            nxt = gate.done(item.generation)
            if current and self._state == "active":
                self._publish(item.msg, item.future)
            if nxt is not None:
                self._send(nxt.payload, nxt.generation)
        self._update_filter()

    def _publish(self, msg: Any, future: Future[PerceptionResult]) -> None:
        log, throttle = self.get_logger(), _LOG_THROTTLE_S
        try:
            result = future.result()
        except ImageError as err:
            log.error(
                f"malformed image (stamp {format_stamp(_stamp(msg))}, "
                f"frame_id {msg.header.frame_id!r}): {err}",
                throttle_duration_sec=throttle,
            )
            return
        except ParseError as err:
            log.warning(f"unusable model answer: {err}", throttle_duration_sec=throttle)
            return
        except BackendError as err:
            log.warning(f"model backend: {err}", throttle_duration_sec=throttle)
            return
        except Exception as err:
            log.error(f"frame failed: {err!r}", throttle_duration_sec=throttle)
            return
        self._diag.processed.tick()
        self._publish_result(msg, result)

    def _publish_result(self, msg: Any, result: PerceptionResult) -> None:
        header: Header = msg.header
        pubs = self._pubs
        if not pubs:
            return
        pubs["detections"].publish(detection_array(result, header))
        pubs["scene"].publish(scene_msg(result, header))
        command = command_msg(result)
        if command is not None:
            pubs["command"].publish(command)
        if result.command_rejection:
            self.get_logger().info(
                f"command rejected: {result.command_rejection}",
                throttle_duration_sec=_LOG_THROTTLE_S,
            )
        arr = markers(result, header)
        if arr is not None:
            pubs["markers"].publish(arr)
        config = self._config
        want_debug = (config is not None and config.publish_debug_image) or pubs[
            "debug_image"
        ].get_subscription_count() > 0
        if want_debug:
            try:
                pubs["debug_image"].publish(debug_image(msg, result, header))
            except ImageError as err:
                self.get_logger().warning(
                    f"debug image: {err}", throttle_duration_sec=_LOG_THROTTLE_S
                )

    # -- services ----------------------------------------------------------------------------

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        self._enabled = bool(request.data)
        self._wake.trigger()  # the loop moves the content filter
        response.success = True
        response.message = "enabled" if self._enabled else "disabled (queries still answered)"
        self.get_logger().info(f"enable service: {response.message}")
        return response

    def _on_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        response.success = False
        if not self._queries.acquire(blocking=False):
            response.message = f"busy: {_MAX_QUERIES} queries are already running"
            return response
        try:
            return self._answer_query(request, response)
        finally:
            self._queries.release()

    def _answer_query(self, request: Query.Request, response: Query.Response) -> Query.Response:
        with self._lock:
            perceiver, config = self._perceiver, self._config
        if perceiver is None or config is None or self._state != "active":
            response.message = f"not active (lifecycle state {self._state})"
            return response
        try:
            timeout = query_timeout(request.timeout_s, config.request_timeout_s)
        except ConfigError as err:
            response.message = str(err)
            return response
        deadline = time.monotonic() + timeout
        msg = self._mailbox.frame_for_query(
            deadline,
            max_age_s=config.max_frame_age_s,
            latest_is_newest=self._input_path == "plain",  # filtered frames never arrived
            on_change=self._wake.trigger,  # the loop opens/closes the content filter
        )
        if msg is None:
            response.message = f"no image arrived within {timeout:g} s"
            return response
        stamp, remaining = _stamp(msg), max(0.0, deadline - time.monotonic())
        future = perceiver.submit(
            frame_input(
                msg, stamp, msg.header.frame_id,
                depth=self._sync.match(stamp) if config.use_depth else None,
                intrinsics=self._intrinsics, prompt=request.prompt.strip() or None,
                timeout_s=remaining,
            )
        )  # fmt: skip
        try:
            result = future.result(timeout=remaining + 0.5)
        except FutureTimeout:
            future.cancel()
            response.message = f"no answer within {timeout:g} s"
            return response
        except StepPerceptionError as err:
            response.message = f"{type(err).__name__}: {err}"
            return response
        reply = query_reply(result, stamp)
        response.success = True
        response.detections = detection_array(result, msg.header)
        response.scene = scene_msg(result, msg.header)
        response.answer, response.message = reply.answer, reply.message
        return response

    # -- parameters --------------------------------------------------------------------------

    def _validate_parameters(self, params: list[Parameter]) -> SetParametersResult:
        config = self._config or self._config_from_parameters()
        try:
            apply_updates(config, params)
        except ConfigError as err:
            return SetParametersResult(successful=False, reason=str(err))
        return SetParametersResult(successful=True)

    def _config_from_parameters(self) -> PerceptionConfig:
        try:
            return read_settings(self).config
        except ConfigError:
            return PerceptionConfig()

    def _apply_parameters(self, params: list[Parameter]) -> None:
        config = self._config
        if config is None:
            return  # read at configure
        try:
            new = apply_updates(config, params)
        except ConfigError as err:  # validated just before; only a race could get here
            self.get_logger().error(f"parameter change not applied: {err}")
            return
        if new == config:
            return
        with self._lock:
            self._config = new
        if self._perceiver is not None:
            self._perceiver.update_config(new)
        if self._gate is not None:
            self._gate.reconfigure(rate_hz=new.rate_hz, max_frame_age_s=new.max_frame_age_s)
        names = ", ".join(sorted(p.name for p in params))
        self.get_logger().info(f"parameters changed at run time: {names}")
        self._wake.trigger()

    # -- diagnostics -------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        perceiver, gate, config, backend = self._perceiver, self._gate, self._config, self._backend
        snap = DiagnosticsSnapshot(
            lifecycle_state=self._state,
            enabled=self._enabled,
            input_path=self._input_path,
            rate_limit_hz=config.rate_hz if config is not None else float("nan"),
            input_rate_hz=self._diag.input.rate(),
            processed_rate_hz=self._diag.processed.rate(),
            gate=gate.counters() if gate is not None else GateCounters(),
            node_drops=self._diag.node_drops(),
            stats=perceiver.stats() if perceiver is not None else PerceiverStats(),
            health=backend.health() if backend is not None else None,
            backend_name=backend.name if backend is not None else "",
        )
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diag_pub.publish(self._diag.array(header, snap))


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``perception_node`` (``ros2 run step_perception perception_node``)."""
    rclpy.init(args=list(args) if args is not None else sys.argv)
    node: PerceptionNode | None = None
    code = 0
    try:
        try:
            node = PerceptionNode()
        except (InvalidParameterTypeException, InvalidParameterValueException) as err:
            # rclpy checked a -p / --params-file value against its descriptor.
            get_logger(NODE_NAME).fatal(f"startup failed: bad parameter: {err}")
            return 1
        if node.autostart and not node.start():
            node.get_logger().fatal("autostart failed (see the error above); exiting")
            code = 1
        else:
            executor = MultiThreadedExecutor(num_threads=_EXECUTOR_THREADS)
            executor.add_node(node)
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.shutdown()
            node.destroy_node()
        try_shutdown()
    return code


if __name__ == "__main__":
    sys.exit(main())
