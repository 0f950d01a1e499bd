"""The rclpy side of a bag's topics: message classes by type name, QoS that matches publishers.

A leaf shared by ``replay`` (publishes a bag) and ``record`` (subscribes to the node's outputs).
"""

from __future__ import annotations

import importlib
from typing import Any

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)

from step_perception_tools.bags import BagError

__all__ = ["matching_qos", "message_class"]


def message_class(msgtype: str) -> Any:
    """Import the rclpy message class of ``pkg/msg/Name`` (the ROS environment must provide it)."""
    pkg, _, name = msgtype.rpartition("/")
    module = pkg.replace("/", ".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise BagError(
            f"message type {msgtype} is not available to rclpy: source the workspace that "
            f"provides {pkg.split('/')[0]}"
        ) from err


def matching_qos(node: Any, topic: str, depth: int) -> QoSProfile:
    """Return a subscription QoS that matches the topic's publishers.

    Reliable when every publisher is, transient-local when every publisher is.
    """
    infos = node.get_publishers_info_by_topic(topic)
    reliable = bool(infos) and all(
        i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos
    )
    latched = bool(infos) and all(
        i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos
    )
    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=depth,
        reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE,
    )
