"""The ROS 2 adapter: the lifecycle node and what translates between ROS and the core.

``__all__`` names the public modules (not imported here). ``main.main`` is the
``perception_node`` entry point; ``node.PerceptionNode`` the node class.
"""

__all__ = [
    "content_filter",
    "conversions",
    "dds_profile",
    "diagnostics",
    "inputs",
    "main",
    "messages",
    "node",
    "outputs",
    "params",
    "qos",
    "query_service",
    "transforms",
    "vision",
    "viz",
]
