"""The harness of step_perception: the ``step-perception`` CLI and the modules behind it.

Not needed on a robot. It depends on the node package ``step_perception`` (core, backends,
ros); nothing there imports this package. Modules, lowest first:

* ``scenes``: the synthetic tabletop renderer (numpy/OpenCV, ground truth);
* ``bags``: rosbag2 reading and writing with ``rosbags`` (no rclpy);
* ``progress``: the progress bar; ``topics``, ``ros_context``: rclpy leaves;
* ``make_scenes``, ``evaluate``, ``offline``: bag-only subcommands;
* ``replay``, ``record``: the subcommands on the ROS graph;
* ``demo``: ``make demo``; ``cli``: the ``step-perception`` entry point.

Submodules are imported on use (``from step_perception_tools import bags``), so importing the
package loads neither rclpy nor rosbags.
"""

__all__ = [
    "bags",
    "cli",
    "demo",
    "evaluate",
    "make_scenes",
    "offline",
    "progress",
    "record",
    "replay",
    "ros_context",
    "scenes",
    "topics",
]
