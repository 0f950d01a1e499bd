"""Launch step_perception: one perception node per camera.

    ros2 launch step_perception perception.launch.py
    ros2 launch step_perception perception.launch.py cameras:=front,wrist namespace:=/robot \
        endpoint:=http://gpu-box:8000/v1 image_topic:=color/image_raw

Each camera gets its own node in ``<namespace>/<camera>`` reading that namespace's
``image_raw``, ``camera_info`` and ``depth/image_raw`` (remappable below). The
node is a lifecycle node with ``autostart`` on, so it needs no lifecycle manager.

Large images over Fast DDS need the shipped profile ``config/fastdds.xml`` (a 64 MiB
shared-memory segment, SHM + UDPv4, 100 ms writer heartbeat): this file loads it for the
nodes it starts through ``FASTRTPS_DEFAULT_PROFILES_FILE`` (on Kilted, Fast DDS 3:
``config/fastdds3.xml`` through ``FASTDDS_DEFAULT_PROFILES_FILE``). Load it for your camera
driver as well, or most best-effort frames of 640x480 and up are lost (docs/reliability.md).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, SetEnvironmentVariable
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare
from step_perception.ros.dds_profile import fastdds_profile

PACKAGE = "step_perception"
EXECUTABLE = "perception_node"
NODE_NAME = "step_perception"
#: The default parameter file, relative to the package share (and source) folder.
PARAMS_FILE = ("config", "params.yaml")

#: Launch arguments that override a node parameter when not empty: argument -> parameter.
PARAMETER_ARGUMENTS = {
    "endpoint": "endpoint",
    "model": "model",
    "model_profile": "model_profile",
}

#: Remappable camera topics: launch argument -> (node topic, default target).
TOPIC_ARGUMENTS = {
    "image_topic": ("image_raw", "image_raw"),
    "compressed_image_topic": ("image_raw/compressed", "image_raw/compressed"),
    "camera_info_topic": ("camera_info", "camera_info"),
    "depth_topic": ("depth/image_raw", "depth/image_raw"),
}

ARGUMENTS = (
    ("namespace", "", "Namespace of the node(s), e.g. /robot. Cameras go below it."),
    (
        "cameras",
        "",
        "Comma separated camera namespaces, one node each (e.g. front,wrist); "
        "empty = one node directly in `namespace`.",
    ),
    (
        "params_file",
        "",
        "YAML parameter file (`/**: ros__parameters:` form); empty = the package's "
        "config/params.yaml.",
    ),
    ("endpoint", "", "OpenAI-compatible base URL(s), comma separated; empty = from params_file."),
    ("model", "", "Model name as the server knows it; empty = from params_file."),
    (
        "model_profile",
        "",
        "Model profile (step3p7, qwen3_vl, qwen2_5_vl, generic, gemini); empty = from params_file.",
    ),
    ("use_sim_time", "false", "Use /clock (bag replay) instead of the system clock."),
    (
        "image_topic",
        "image_raw",
        "Colour image topic (sensor_msgs/Image), relative to each camera namespace.",
    ),
    (
        "compressed_image_topic",
        "image_raw/compressed",
        "Compressed colour topic (image_transport:=compressed), relative to each camera.",
    ),
    ("camera_info_topic", "camera_info", "CameraInfo topic, relative to each camera namespace."),
    ("depth_topic", "depth/image_raw", "Aligned depth topic (used when use_depth is true)."),
    ("log_level", "info", "Log level of the node(s)."),
)


#: Values ``use_sim_time`` accepts (as ROS parameters read YAML booleans).
_BOOLEANS = {"true": True, "false": False}
_LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")
#: A camera is one namespace token: letters, digits and underscores, not starting with a digit.
_CAMERA_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LaunchArgumentError(ValueError):
    """A launch argument with a value the nodes could not start with; the message says which."""


def _bool_argument(name: str, value: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise LaunchArgumentError(f"{name}:={value!r}: expected true or false") from None


def _cameras(value: str) -> list[str]:
    cameras = [c.strip() for c in value.split(",") if c.strip()]
    for camera in cameras:
        if not _CAMERA_RE.match(camera):
            raise LaunchArgumentError(
                f"cameras:={value!r}: {camera!r} is not a valid namespace name "
                "(letters, digits and _, not starting with a digit)"
            )
    duplicates = sorted({c for c in cameras if cameras.count(c) > 1})
    if duplicates:
        raise LaunchArgumentError(
            f"cameras:={value!r}: {', '.join(duplicates)} given twice (two nodes of one name)"
        )
    return cameras or [""]


def _join_ns(*parts: str) -> str:
    names = [p.strip("/") for p in parts if p.strip("/")]
    return "/" + "/".join(names) if names else ""


def _nodes(context: LaunchContext) -> list[Node]:
    def arg(name: str) -> str:
        return LaunchConfiguration(name).perform(context).strip()

    params_file = arg("params_file") or PathJoinSubstitution(
        [FindPackageShare(PACKAGE), *PARAMS_FILE]
    ).perform(context)
    if not Path(params_file).is_file():
        raise LaunchArgumentError(f"params_file:={params_file!r}: no such file")
    log_level = arg("log_level").lower() or "info"
    if log_level not in _LOG_LEVELS:
        raise LaunchArgumentError(
            f"log_level:={log_level!r}: expected one of {', '.join(_LOG_LEVELS)}"
        )
    overrides: dict[str, object] = {
        param: arg(name) for name, param in PARAMETER_ARGUMENTS.items() if arg(name)
    }
    overrides["use_sim_time"] = _bool_argument("use_sim_time", arg("use_sim_time"))
    remappings = [
        (topic, arg(name) or default) for name, (topic, default) in TOPIC_ARGUMENTS.items()
    ]
    cameras = _cameras(arg("cameras"))
    return [
        Node(
            package=PACKAGE,
            executable=EXECUTABLE,
            name=NODE_NAME,
            namespace=_join_ns(arg("namespace"), camera),
            parameters=[params_file, overrides],
            remappings=remappings,
            arguments=["--ros-args", "--log-level", log_level],
            output="screen",
            emulate_tty=True,
        )
        for camera in cameras
    ]


def generate_launch_description() -> LaunchDescription:
    # The Fast DDS XML profile (SHM segment, transports, heartbeat) of this distro's Fast DDS.
    profile = fastdds_profile(os.environ.get("ROS_DISTRO", ""))
    return LaunchDescription(
        [
            *(
                DeclareLaunchArgument(name, default_value=default, description=description)
                for name, default, description in ARGUMENTS
            ),
            # Large frames over shared memory and a 100 ms writer heartbeat (config/fastdds.xml
            # says why); its transports win over a FASTDDS_BUILTIN_TRANSPORTS in the environment.
            SetEnvironmentVariable(
                profile.variable,
                PathJoinSubstitution([FindPackageShare(PACKAGE), "config", profile.file_name]),
            ),
            OpaqueFunction(function=_nodes),
        ]
    )
