"""``perception.launch.py`` with its defaults (one node, no namespace) on simulated time.

``use_sim_time:=true``: the node's clock follows ``/clock`` (published here from a time far from
the wall clock), so its ``/diagnostics`` stamps and its frame-age check both run on bag time.
"""

from __future__ import annotations

import unittest
from typing import Any

import launch_testing
import launch_testing.asserts
from launch import LaunchDescription
from model_server import ModelServer
from ros_harness import Camera, Collector, Ros, publish_until_answered, stamp_of, wait_for
from support import assert_interfaces, include_perception, parameters, wait_active

SIM_START_NS = 1_000_000 * 1_000_000_000  # 1e6 s: about 11.6 days after the epoch


def generate_test_description() -> tuple[LaunchDescription, dict[str, Any]]:
    server = ModelServer()
    description = LaunchDescription(
        [
            include_perception(endpoint=server.url(), use_sim_time="true"),
            launch_testing.actions.ReadyToTest(),
        ]
    )
    return description, {"server": server}


class TestOneCameraOnSimTime(unittest.TestCase):
    ros: Ros
    node: Any

    @classmethod
    def setUpClass(cls) -> None:
        from support import SimClock

        cls.ros = Ros()
        cls.node = cls.ros.node("launch_one_camera_tester")
        cls.clock = SimClock(cls.node, SIM_START_NS)

    @classmethod
    def tearDownClass(cls) -> None:
        cls.clock.stop()
        cls.ros.close()

    def test_1_the_node_is_active_at_the_root(self) -> None:
        self.assertEqual(wait_active(self.ros, self.node, "/"), "active")
        assert_interfaces(self.node, "/")

    def test_2_defaults_come_from_the_package_params_file(self, server: ModelServer) -> None:
        got = parameters(self.ros, self.node, "/", ["use_sim_time", "endpoint", "model", "rate_hz"])
        self.assertIs(got["use_sim_time"], True)
        self.assertEqual(got["endpoint"], server.url())
        self.assertEqual(got["model"], "stepfun-ai/Step-3.7-Flash")  # config/params.yaml
        self.assertEqual(got["rate_hz"], 1.0)

    def test_3_diagnostics_are_stamped_with_sim_time(self) -> None:
        from diagnostic_msgs.msg import DiagnosticArray

        diags = Collector(self.node, DiagnosticArray, "/diagnostics", reliable=False)
        try:
            self.assertTrue(wait_for(lambda: len(diags.msgs) >= 2, 10.0), "no /diagnostics")
            stamp = stamp_of(diags.msgs[-1])
            self.assertGreaterEqual(stamp, SIM_START_NS)
            self.assertLess(stamp, SIM_START_NS + 120 * 1_000_000_000)
        finally:
            self.node.destroy_subscription(diags.sub)

    def test_4_a_frame_stamped_in_sim_time_yields_detections(self) -> None:
        from step_perception_msgs.msg import ObjectDetectionArray

        answers = Collector(self.node, ObjectDetectionArray, "/detections")
        # Best effort: the package's params.yaml keeps the sensor-data QoS.
        camera = Camera(self.node, "/image_raw", reliable=False, stamp_ns=self.clock.now_ns)
        self.assertTrue(camera.wait_matched(15.0))
        msg = publish_until_answered(camera, 0, answers, timeout=30.0)
        self.assertEqual(len(msg.detections), 2)
        self.assertGreaterEqual(stamp_of(msg), SIM_START_NS)


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    def test_the_node_exited_cleanly(self, proc_info: Any, proc_output: Any) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)
        self.assertEqual(len(proc_info.process_names()), 1)
        for process in proc_info.process_names():
            text = "".join(o.text.decode(errors="replace") for o in proc_output[process])
            self.assertNotIn("Traceback", text, process)
