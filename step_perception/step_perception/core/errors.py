"""Typed errors of the perception core and its backends.

Every layer raises one of these (``raise X(msg) from err``) so callers can tell
bad input, a misbehaving model server and a wrong model answer apart.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendTimeoutError",
    "BackendUnavailableError",
    "CassetteMissError",
    "ConfigError",
    "ImageError",
    "ParseError",
    "StepPerceptionError",
]

#: Longest piece of a raw model answer an error carries (for logs and diagnostics).
SNIPPET_CHARS = 200


class StepPerceptionError(Exception):
    """Base class of every error step_perception raises on purpose."""


class ConfigError(StepPerceptionError):
    """A parameter or configuration value is invalid."""


class ImageError(StepPerceptionError):
    """An image message could not be decoded or prepared (bad encoding, size, bytes)."""


class ParseError(StepPerceptionError):
    """The model's answer is not a valid answer; carries a bounded snippet of it."""

    def __init__(self, msg: str, raw: str = "") -> None:
        self.snippet = raw[:SNIPPET_CHARS]
        super().__init__(f"{msg} (answer starts: {self.snippet!r})" if raw else msg)


class BackendError(StepPerceptionError):
    """The model backend failed to produce an answer."""


class BackendTimeoutError(BackendError):
    """The backend did not answer within the request deadline."""


class BackendUnavailableError(BackendError):
    """No endpoint can take the request (all down, or the circuit breaker is open)."""


class CassetteMissError(BackendError):
    """Replay mode was asked for a request the cassette does not hold."""

    def __init__(self, key: str) -> None:
        self.key = key
        super().__init__(f"cassette has no answer for key {key}")
