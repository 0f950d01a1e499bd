"""``perception.launch.py`` with two cameras in a namespace and a params file, launched for real.

Run by launch_testing's runner (``launch_test`` does the same; see conftest.py). The nodes answer
through the oracle model server of the integration tests, over real DDS.
"""

from __future__ import annotations

import unittest
from typing import Any

import launch_testing
import launch_testing.asserts
from launch import LaunchDescription
from model_server import ModelServer
from ros_harness import Ros, wait_for
from support import (
    assert_answers_a_frame,
    assert_interfaces,
    include_perception,
    parameters,
    params_file,
    wait_active,
)

CAMERAS = ("/robot/front", "/robot/wrist")
PARAMS = {
    "backend": "openai",
    "endpoint": "http://127.0.0.1:9/v1",  # replaced by the endpoint launch argument
    "rate_hz": 20.0,
    "max_frame_age_s": 10.0,
    "reliability": "reliable",
    "prompt": "white cube",
}


def generate_test_description() -> tuple[LaunchDescription, dict[str, Any]]:
    server = ModelServer()
    path = params_file(PARAMS)
    description = LaunchDescription(
        [
            include_perception(
                cameras="front, wrist",
                namespace="/robot",
                params_file=str(path),
                endpoint=server.url(),
                model="test-model",
            ),
            launch_testing.actions.ReadyToTest(),
        ]
    )
    return description, {"server": server}


class TestTwoCamerasInANamespace(unittest.TestCase):
    ros: Ros
    node: Any

    @classmethod
    def setUpClass(cls) -> None:
        cls.ros = Ros()
        cls.node = cls.ros.node("launch_cameras_tester")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.ros.close()

    def test_1_one_active_node_per_camera(self) -> None:
        for ns in CAMERAS:
            self.assertEqual(wait_active(self.ros, self.node, ns), "active", ns)
        want = {("step_perception", ns) for ns in CAMERAS}
        names = self.node.get_node_names_and_namespaces
        self.assertTrue(wait_for(lambda: want <= set(names()), 15.0), names())

    def test_2_topics_and_services_under_each_camera(self) -> None:
        for ns in CAMERAS:
            assert_interfaces(self.node, ns)

    def test_3_params_file_and_arguments_take_effect(self, server: ModelServer) -> None:
        for ns in CAMERAS:
            got = parameters(
                self.ros, self.node, ns,
                ["rate_hz", "prompt", "reliability", "endpoint", "model", "use_sim_time"],
            )  # fmt: skip
            self.assertEqual(got["rate_hz"], 20.0)
            self.assertEqual(got["prompt"], "white cube")
            self.assertEqual(got["reliability"], "reliable")
            self.assertEqual(got["endpoint"], server.url())  # the argument beats the file
            self.assertEqual(got["model"], "test-model")
            self.assertIs(got["use_sim_time"], False)

    def test_4_a_frame_on_each_camera_yields_detections(self, server: ModelServer) -> None:
        for i, ns in enumerate(CAMERAS):
            assert_answers_a_frame(self.node, ns, index=i)
        self.assertGreaterEqual(len(server.seen()), 2)
        self.assertTrue(all("white cube" in s.user for s in server.seen()))


@launch_testing.post_shutdown_test()
class TestCleanShutdown(unittest.TestCase):
    def test_every_node_exited_cleanly(self, proc_info: Any, proc_output: Any) -> None:
        launch_testing.asserts.assertExitCodes(proc_info)
        self.assertEqual(len(proc_info.process_names()), len(CAMERAS))
        for process in proc_info.process_names():
            text = "".join(o.text.decode(errors="replace") for o in proc_output[process])
            self.assertNotIn("Traceback", text, process)
            self.assertIn("configured: backend=openai model=test-model", text, process)
