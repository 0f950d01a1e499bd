"""The one interface every model backend implements (it lives in core: the pipeline needs it).

Backends (``step_perception.backends``) implement it; core never imports them.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Protocol, runtime_checkable

from step_perception.core.types import BackendHealth, ModelReply, ModelRequest

__all__ = ["Backend"]


@runtime_checkable
class Backend(Protocol):
    """A model that answers chat requests with an image.

    ``submit`` never blocks the caller: the work runs on the backend's own
    threads and the returned future resolves to a ``ModelReply`` or fails with
    a ``step_perception.core.errors.BackendError`` subclass.
    """

    @property
    def name(self) -> str:
        """Short name for logs and diagnostics (no secrets)."""
        ...

    def submit(self, request: ModelRequest) -> Future[ModelReply]:
        """Start answering ``request``; returns at once."""
        ...

    def health(self) -> BackendHealth:
        """Return the current health; cheap to call (no network)."""
        ...

    def close(self) -> None:
        """Release threads, connections and models. Idempotent."""
        ...
