"""The step_perception lifecycle node: a thin adapter from camera topics to the perception core.

Data path: image callback -> ``FrameLoop.offer`` (stamp only, nothing decoded)
-> ``Perceiver.submit`` (runs on worker and backend threads) -> the loop queues
the finished future and a guard condition wakes the executor -> results are
published, the gate's slot is freed and the next waiting frame is sent.

Threads: the node's default (mutually exclusive) callback group runs
everything that touches node state: image/depth/info/prompt callbacks, the
result drain, timers, parameter and lifecycle services. The ``query`` and
``enable`` services run in a reentrant group, so a query that waits for its
answer occupies one executor thread and never the loop. ``ros/main.py``
spins a ``MultiThreadedExecutor``.

The decisions live in the pure core and are unit-tested there: one
configuration's perceiver, loop and backend, their run-time reconfiguration and
status (core/session.py), the loop and its completed requests (core/loop.py),
the frame gate and the content-filter policy (core/frames.py), depth pairing,
held frames and the clock-jump reset (core/sync.py), the query's frame and
reply (core/query.py). This module only translates between ROS and the core.

Lifecycle: configure reads the parameters and builds the backend, activate
subscribes, deactivate unsubscribes (in-flight answers are discarded),
cleanup frees the backend. ``autostart`` (default true) walks to active.
"""

from __future__ import annotations

import contextlib
import time
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
from step_perception.core.config import PerceptionConfig
from step_perception.core.errors import BackendError, ConfigError, StepPerceptionError
from step_perception.core.loop import Dispatch
from step_perception.core.pipeline import frame_input
from step_perception.core.query import FrameMailbox
from step_perception.core.session import Session, SessionStatus
from step_perception.core.types import CameraIntrinsics
from step_perception.ros.conversions import intrinsics_from_camera_info, stamp_to_ns
from step_perception.ros.diagnostics import Diagnostics
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
_LOG_THROTTLE_S = 5.0


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
        # One reference, swapped whole: the query threads read it without a lock.
        self._session: Session[Any, Image] | None = None
        self._settings: NodeSettings | None = None
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
        self._mailbox: FrameMailbox[Any] = FrameMailbox(time.monotonic)

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
        self.add_on_set_parameters_callback(lambda ps: validate_updates(self, self._config(), ps))
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
        if config.target_frame and self._tf is None:
            self._tf = TfLookup(self)
        try:
            session: Session[Any, Image] = Session.build(
                config,
                backend,
                now_ns=self._now_ns,
                depth_keep=DEPTH_KEEP,
                on_complete=self._wake.trigger,  # from a worker thread: wake the drain
                lookup_transform=self._tf if config.target_frame else None,
            )
        except StepPerceptionError as err:  # the backend is closed
            self.get_logger().error(f"configure failed: {err}")
            return TransitionCallbackReturn.FAILURE
        self._settings, self._session = settings, session
        self._outputs = Outputs(self, vision_msgs=settings.vision_msgs, depth=config.use_depth)
        self.get_logger().info(f"configured: backend={backend.name} {config.summary()}")
        self._state = "inactive"
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the camera topics and start publishing."""
        assert self._settings is not None and self._session is not None
        try:
            self._inputs.subscribe(self._session.config, self._settings.content_filter)
        except Exception as err:  # an RMW error must not leave half a subscription set
            self.get_logger().error(f"activate failed: {err!r}")
            self._unsubscribe()
            return TransitionCallbackReturn.FAILURE
        self._update_filter()
        self._state = "active"
        self._diag.restart()
        ret = super().on_activate(state)
        self._wake.trigger()
        self.get_logger().info(f"active: input path {self._inputs.input_path}")
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe; answers still in flight are discarded."""
        self._unsubscribe()
        if self._session is not None:
            self._session.loop.reset()
        self._state = "inactive"
        self._mailbox.release_waiters()  # queries waiting for a frame get none now
        self.get_logger().info("deactivated: camera unsubscribed")
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the backend (and the model it holds) and the publishers."""
        self.get_logger().info("cleaning up: closing the backend")
        return self._teardown("unconfigured")

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and free everything."""
        return self._teardown("finalized")

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything; the node returns to unconfigured."""
        self.get_logger().error(f"error during a transition from {state.label}; cleaning up")
        return self._teardown("unconfigured")

    def shutdown(self) -> None:
        """Leave every state cleanly (for ``main`` and tests)."""
        if self._state in ("active", "inactive", "unconfigured"):
            with contextlib.suppress(Exception):
                self.trigger_shutdown()
        self._teardown(self._state)

    def _teardown(self, state: str) -> TransitionCallbackReturn:
        self._unsubscribe()  # nothing to undo when inactive or unconfigured
        self._release()
        self._state = state
        return TransitionCallbackReturn.SUCCESS

    def _config(self) -> PerceptionConfig | None:
        session = self._session
        return session.config if session is not None else None

    def _unsubscribe(self) -> None:
        self._inputs.unsubscribe()
        if self._session is not None:
            self._session.loop.clear_depth()

    def _release(self) -> None:
        session, self._session, self._settings = self._session, None, None
        self._mailbox.release_waiters()
        if self._outputs is not None:
            self._outputs.destroy()
            self._outputs = None
        if session is not None:
            session.close()

    def _update_filter(self) -> None:
        """Move the content filters to what the gate (and waiting queries) will take next."""
        session = self._session
        if session is not None and self._inputs.filtered:
            self._inputs.set_bounds(
                session.loop.filter_bounds(
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
        session = self._session
        if session is None or self._state != "active":
            self._diag.drop("inactive")
            return
        loop = session.loop
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
        session = self._session
        dispatch = session.loop.add_depth(_stamp(msg), msg) if session is not None else None
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
        session = self._session
        dispatch = session.loop.expired() if session is not None else None
        if dispatch is not None:
            self._diag.drop("no_depth_in_time")
            self._send(dispatch)
            self._update_filter()

    def _send(self, d: Dispatch[Any, Image] | None) -> None:
        """Hand a frame the loop decided to send to the perceiver; the loop tracks its answer."""
        session = self._session
        if d is None or session is None:
            return
        frame = frame_input(
            d.payload, d.stamp_ns, d.payload.header.frame_id, depth=d.depth,
            intrinsics=self._intrinsics,
        )  # fmt: skip
        session.loop.track(d, session.perceiver.submit(frame))

    def _drain(self) -> None:
        session = self._session
        if session is None:
            return  # answers of a released session are not wanted
        for done in session.loop.take_completed():
            outputs = self._outputs if done.publish and self._state == "active" else None
            if outputs is not None and outputs.publish_outcome(
                done.sent.payload, done.answer, always_debug=session.config.publish_debug_image
            ):
                self._diag.result()
            else:
                self._diag.unanswered()
            self._send(done.next)
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
        session = self._session
        if session is None or self._state != "active":
            return f"not active (lifecycle state {self._state})"
        latest_is_newest = self._inputs.input_path == "plain"  # filtered frames never arrived
        return QueryContext(
            session.perceiver, session.config, session.loop, self._intrinsics, latest_is_newest
        )

    # -- parameters --------------------------------------------------------------------------

    def _apply_parameters(self, params: list[Parameter]) -> None:
        session = self._session
        if session is None:
            return  # read at configure
        try:
            changed = session.reconfigure(apply_updates(session.config, params))
        except ConfigError as err:  # validated just before; only a race could get here
            self.get_logger().error(f"parameter change not applied: {err}")
            return
        if changed:
            names = ", ".join(sorted(p.name for p in params))
            self.get_logger().info(f"parameters changed at run time: {names}")
            self._wake.trigger()

    # -- diagnostics -------------------------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        session = self._session
        snap = self._diag.snapshot(
            session.status() if session is not None else SessionStatus(),
            lifecycle_state=self._state,
            enabled=self._enabled,
            input_path=self._inputs.input_path,
        )
        header = Header(stamp=self.get_clock().now().to_msg())
        self._diag_pub.publish(self._diag.array(header, snap))
