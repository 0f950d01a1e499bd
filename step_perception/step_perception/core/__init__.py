"""The pure perception core: no rclpy, no ROS messages, nothing from backends, ros or tools.

``__all__`` names the public modules; they are not imported here, so importing one
(``step_perception.core.errors``) does not pull in OpenCV or the others. Entry points:
``pipeline.Perceiver`` and ``pipeline.frame_input`` (a frame to a ``PerceptionResult``),
``frames.FrameGate`` and ``loop.FrameLoop`` (which frames go, with which depth),
``session.Session`` (one configuration: perceiver, backend and loop),
``query.FrameMailbox`` (which frame answers a query), ``ordering.StampOrder`` (results
leave in stamp order), ``config.PerceptionConfig``
(every parameter, validated), ``backend.Backend`` (what a model backend implements)
``health.assess`` (the /diagnostics level) and the typed errors in ``errors``.
"""

__all__ = [
    "backend",
    "box_encoding",
    "commands",
    "config",
    "endpoints",
    "errors",
    "frames",
    "geometry",
    "health",
    "imaging",
    "loop",
    "ordering",
    "parsing",
    "pipeline",
    "profiles",
    "prompts",
    "query",
    "session",
    "sync",
    "tokens",
    "types",
]
