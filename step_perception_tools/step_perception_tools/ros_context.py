"""The rclpy context a tool runs in: the caller's, or its own for the tool's lifetime."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import rclpy
from rclpy.context import Context
from rclpy.signals import SignalHandlerOptions

__all__ = ["ros_context"]


@contextlib.contextmanager
def ros_context(context: Context | None = None) -> Iterator[Context]:
    """Yield ``context`` untouched, or a fresh initialised one that is shut down afterwards.

    A fresh context installs no signal handlers: the tools stop on their own ``stop`` event,
    which their command-line wrappers set on SIGINT/SIGTERM.
    """
    if context is not None:
        yield context
        return
    ctx = Context()
    rclpy.init(context=ctx, signal_handler_options=SignalHandlerOptions.NO)
    try:
        yield ctx
    finally:
        ctx.try_shutdown()
