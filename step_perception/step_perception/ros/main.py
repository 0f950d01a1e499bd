"""The ``perception_node`` entry point: one ``PerceptionNode`` on a multi-threaded executor.

``ros2 run step_perception perception_node`` (or ``python -m step_perception.ros.main``)
starts the node, walks it to active when ``autostart`` is set and spins until
Ctrl-C or an external shutdown; the node then leaves every state cleanly.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import rclpy
from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.logging import get_logger
from rclpy.utilities import try_shutdown

from step_perception.ros.node import NODE_NAME, PerceptionNode

__all__ = ["main"]

# The loop's (mutually exclusive) group needs one thread; each query waiting for its answer
# holds another one in the reentrant service group, so a few queries never block the loop.
_EXECUTOR_THREADS = 4


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
