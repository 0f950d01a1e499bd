"""The step_perception lifecycle node: a thin adapter from camera topics to the perception core.

Data path: image callback -> ``FrameGate.offer`` (stamp only, nothing decoded)
-> ``Perceiver.submit`` (runs on worker and backend threads) -> the finished
future is queued and a guard condition wakes the executor -> results are
published, the gate's slot is freed and the next waiting frame is sent.

Threads: the node's default (mutually exclusive) callback group runs
everything that touches node state: image/depth/info/prompt callbacks, the
result drain, timers, parameter and lifecycle services. The ``query`` and
``enable`` services run in a reentrant group, so a query that waits for its
answer occupies one executor thread and never the loop. ``ros/main.py``
spins a ``MultiThreadedExecutor``.

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
import math
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.clock import Clock

try:
    from rclpy.clock_type import ClockType  # Jazzy and later
except ImportError:  # Humble: ClockType lives in rclpy.clock (rclpy.clock_type came with Jazzy)
    from rclpy.clock import ClockType  # type: ignore[attr-defined,no-redef]
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header, String
from std_srvs.srv import SetBool

from step_perception.backends.factory import backend_from_config
from step_perception.core.backend import Backend
from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import BackendError, ConfigError, StepPerceptionError
from step_perception.core.frames import FrameGate, GateCounters
from step_perception.core.health import stall_after_s
from step_perception.core.loop import Dispatch, FrameLoop
from step_perception.core.pipeline import Perceiver, PerceiverStats, frame_input
from step_perception.core.query import FrameMailbox
from step_perception.core.sync import ClockJump, DepthSync
from step_perception.core.types import CameraIntrinsics, PerceptionResult
from step_perception.ros.conversions import intrinsics_from_camera_info, stamp_to_ns
from step_perception.ros.diagnostics import Diagnostics, DiagnosticsSnapshot
from step_perception.ros.inputs import CameraCallbacks, CameraInputs
from step_perception.ros.outputs import Outputs
from step_perception.ros.params import (
    NodeSettings,
    apply_updates,
    declare_parameters,
    read_settings,
    validate_updates,
)
from step_perception.ros.qos import DEPTH_KEEP
from step_perception.ros.query_service import QueryContext, QueryService
from step_perception.ros.transforms import TfLookup

__all__ = ["NODE_NAME", "PerceptionNode"]

NODE_NAME = "step_perception"
# [s] how long an admitted colour frame waits for its aligned depth. Measured here (replayed
# 1280x720 bags, reliable, LARGE_DATA, loaded 2-core machine): most depth frames arrive within
# milliseconds, but about a third arrive seconds late (Fast DDS repairs lost fragments at its
# next heartbeat); waiting longer would stall the loop, so those frames go out without 3D
# positions and are counted as drops_no_depth_in_time.
_DEPTH_WAIT_S = 0.5
_CLOCK_JUMP_NS = 1_000_000_000  # a clock going back further than this resets the gate
_LOG_THROTTLE_S = 5.0


@dataclass(frozen=True)
class _Finished:
    """A loop request whose future completed (queued from a worker thread)."""

    msg: Any
    stamp_ns: int
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
        self._loop: FrameLoop[Any, Image] | None = None
        self._enabled = True
        self._outputs: Outputs | None = None
        self._tf: TfLookup | None = None  # with target_frame: tf2 for the positions
        self._inputs = CameraInputs(
            self,
            self._loop_group,
            self._steady,
            CameraCallbacks(
                self._on_image, self._on_depth, self._on_camera_info, self._on_prompt,
                self._check_held,
            ),
        )  # fmt: skip
        self._intrinsics: CameraIntrinsics | None = None
        self._sync: DepthSync[Any, Image] = DepthSync(
            time.monotonic, keep=DEPTH_KEEP, wait_s=_DEPTH_WAIT_S
        )
        self._clock_jump = ClockJump(_CLOCK_JUMP_NS)
        self._mailbox: FrameMailbox[Any] = FrameMailbox(time.monotonic)
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
        self._query = QueryService(
            self, self._service_group, self._mailbox, self._query_context, self._wake.trigger
        )
        self.create_service(SetBool, "enable", self._on_enable, callback_group=self._service_group)
        self.add_on_set_parameters_callback(lambda ps: validate_updates(self, self._config, ps))
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
            loop = FrameLoop(gate, self._sync, self._clock_jump, use_depth=config.use_depth)
            if config.target_frame and self._tf is None:
                self._tf = TfLookup(self)
            perceiver = Perceiver(
                config,
                backend,
                now_ns=self._now_ns,
                lookup_transform=self._tf if config.target_frame else None,
            )
        except StepPerceptionError as err:
            backend.close()
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        with self._lock:
            self._settings, self._config = settings, config
            self._backend, self._perceiver, self._loop = backend, perceiver, loop
        self._outputs = Outputs(self, vision_msgs=settings.vision_msgs, depth=config.use_depth)
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
            self._inputs.subscribe(self._config, self._settings.content_filter)
        except Exception as err:  # an RMW error must not leave half a subscription set
            self.get_logger().error(f"activate failed: {err!r}")
            self._unsubscribe()
            return TransitionCallbackReturn.FAILURE
        self._update_filter()
        self._state = "active"
        self._diag.restart()
        ret = super().on_activate(state)
        self._wake.trigger()
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe; answers still in flight are discarded."""
        self._unsubscribe()
        if self._loop is not None:
            self._loop.reset()
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

    def _unsubscribe(self) -> None:
        self._inputs.unsubscribe()
        self._sync.clear()

    def _release(self) -> None:
        with self._lock:
            perceiver, backend = self._perceiver, self._backend
            self._perceiver = self._backend = self._loop = None
            self._settings = self._config = None
        self._mailbox.release_waiters()
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None
        if perceiver is not None:
            perceiver.close()
        if backend is not None:
            backend.close()

    def _update_filter(self) -> None:
        """Move the content filters to what the gate (and waiting queries) will take next."""
        loop = self._loop
        if loop is not None and self._inputs.filtered:
            self._inputs.set_bounds(
                loop.filter_bounds(
                    enabled=self._enabled,
                    query_waiting=self._mailbox.waiting,
                    latest_stamp_ns=self._mailbox.latest_stamp_ns,
                )
            )

    # -- the loop ----------------------------------------------------------------------------

    def _now_ns(self) -> int:
        return int(self.get_clock().now().nanoseconds)

    def _on_image(self, msg: Any) -> None:
        self._diag.frame()
        loop = self._loop
        if loop is None or self._state != "active":
            self._diag.drop("inactive")
            return
        if loop.check_clock(self._now_ns()):
            self.get_logger().info("clock jumped back (bag loop?): throttle reset")
        stamp = _stamp(msg)
        self._mailbox.put(stamp, msg)
        if not self._enabled:
            self._diag.drop("disabled")
        else:
            self._send(loop.offer(stamp, msg)[1])
        self._update_filter()

    def _on_depth(self, msg: Image) -> None:
        self._diag.received("depth")
        dispatch = self._loop.add_depth(_stamp(msg), msg) if self._loop is not None else None
        if dispatch is not None:  # the held colour frame now has its depth
            self._send(dispatch)
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
        loop = self._loop
        dispatch = loop.expired() if loop is not None else None
        if dispatch is not None:
            self._diag.drop("no_depth_in_time")
            self._send(dispatch)
            self._update_filter()

    def _send(self, d: Dispatch[Any, Image] | None) -> None:
        """Hand a frame the loop decided to send to the perceiver."""
        perceiver = self._perceiver
        if d is None or perceiver is None:
            return
        msg, stamp_ns, generation = d.payload, d.stamp_ns, d.generation
        frame = frame_input(
            msg, d.stamp_ns, msg.header.frame_id, depth=d.depth, intrinsics=self._intrinsics
        )
        perceiver.submit(frame).add_done_callback(
            lambda f: self._post(_Finished(msg, stamp_ns, generation, f))
        )

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
            loop = self._loop
            if loop is None:
                continue
            finished = loop.done(item.generation, item.stamp_ns)
            if finished.current and self._state == "active" and self._outputs is not None:
                config = self._config
                always = config is not None and config.publish_debug_image
                if self._outputs.publish_outcome(item.msg, item.future, always_debug=always):
                    self._diag.result()
            self._send(finished.next)
        self._update_filter()

    # -- services ----------------------------------------------------------------------------

    def _on_enable(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        if request.data and not self._enabled:
            self._diag.restart()
        self._enabled = bool(request.data)
        self._wake.trigger()  # the loop moves the content filter
        response.success = True
        response.message = "enabled" if self._enabled else "disabled (queries still answered)"
        self.get_logger().info(f"enable service: {response.message}")
        return response

    def _query_context(self) -> QueryContext | str:
        with self._lock:
            perceiver, config, loop = self._perceiver, self._config, self._loop
        if perceiver is None or config is None or loop is None or self._state != "active":
            return f"not active (lifecycle state {self._state})"
        latest_is_newest = self._inputs.input_path == "plain"  # filtered frames never arrived
        return QueryContext(perceiver, config, loop, self._intrinsics, latest_is_newest)

    # -- parameters --------------------------------------------------------------------------

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
        if self._loop is not None:
            self._loop.gate.reconfigure(rate_hz=new.rate_hz, max_frame_age_s=new.max_frame_age_s)
        names = ", ".join(sorted(p.name for p in params))
        self.get_logger().info(f"parameters changed at run time: {names}")
        self._wake.trigger()

    # -- diagnostics -------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        perceiver, loop, config, backend = self._perceiver, self._loop, self._config, self._backend
        snap = DiagnosticsSnapshot(
            lifecycle_state=self._state,
            enabled=self._enabled,
            input_path=self._inputs.input_path,
            rate_limit_hz=config.rate_hz if config is not None else float("nan"),
            input_rate_hz=self._diag.input.rate(),
            processed_rate_hz=self._diag.processed.rate(),
            gate=loop.gate.counters() if loop is not None else GateCounters(),
            node_drops={
                **self._diag.node_drops(),
                # late older replies (max_inflight > 1), never published
                "out_of_order": loop.order_counters().dropped_out_of_order if loop else 0,
            },
            stats=perceiver.stats() if perceiver is not None else PerceiverStats(),
            health=backend.health() if backend is not None else None,
            backend_name=backend.name if backend is not None else "",
            stall_after_s=(
                stall_after_s(config.rate_hz, config.request_timeout_s)
                if config is not None
                else math.inf
            ),
        )
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diag_pub.publish(self._diag.array(header, snap))
