"""A camera in its own process: ``python camera_proc.py TOPIC FPS SECONDS WIDTH HEIGHT [be]``.

Used where the publishing side may be taken down by the middleware (Fast DDS
2.x writers with content-filtered readers), so that a crash there cannot take
the test session with it. Prints the number of frames sent.
"""

from __future__ import annotations

import sys
import threading
import time

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from ros_harness import DOMAIN_ID, Camera


def main(argv: list[str]) -> int:
    topic, fps, seconds = argv[0], float(argv[1]), float(argv[2])
    width, height = int(argv[3]), int(argv[4])
    rclpy.init(domain_id=DOMAIN_ID)
    node = Node("test_camera")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    reliable = argv[5:6] != ["be"]
    camera = Camera(node, topic, fps=fps, reliable=reliable, width=width, height=height)
    camera.start()
    time.sleep(seconds)
    camera.stop()
    print(len(camera.sent), flush=True)
    # Stop the spin thread before tearing the node down: a thread still inside rcl's wait
    # while the middleware is destroyed ends the process with std::terminate (seen in CI).
    executor.shutdown(timeout_sec=1.0)
    spinner.join(timeout=5.0)
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
