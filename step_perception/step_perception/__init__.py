"""step_perception: a vision-language model in a ROS 2 robot's perception loop.

Three layers, each importing only from the ones before it:

* ``core``: the pure perception core (throttle, image preparation, prompts, parsing,
  geometry, sync, health, the ``Backend`` interface); no rclpy;
* ``backends``: the model clients (``openai``: any OpenAI-compatible server;
  ``transformers``: in process; ``cassette``: recorded answers);
* ``ros``: the lifecycle node and what translates between ROS messages and the core.

Subpackages are imported on use, so ``import step_perception`` loads nothing heavy.
The harness (scenes, bags, replay, record, demo) lives in ``step_perception_tools``.
"""

__all__ = ["backends", "core", "ros"]
