"""Model-server endpoint URLs: the one parser and validator (config, factory and backends share it).

An endpoint is the base URL of an OpenAI-compatible server (``http://host:8000/v1``).
It must be http(s) with a host and a valid port, and carries no ``user:password@``,
no query and no fragment: secrets never travel in parameters (use ``api_key_env``
or ``api_key_file``). A trailing slash is removed; a URL with no path gets ``/v1``.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

from step_perception.core.errors import ConfigError

__all__ = ["normalise_endpoint", "parse_endpoints", "redact_url", "split_list"]

_SEPARATORS = re.compile(r"[,\s]+")


def split_list(value: str) -> list[str]:
    """Items of a comma/whitespace separated string."""
    return [p for p in _SEPARATORS.split(value) if p]


def redact_url(url: str) -> str:
    """``url`` without user info, query or fragment (safe for logs, errors and diagnostics)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        if ":" in host:  # IPv6 literal
            host = f"[{host}]"
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<invalid url>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def normalise_endpoint(url: object) -> str:
    """Validate one endpoint base URL and return it normalised; ``ConfigError`` if bad."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"endpoint: must be a non-empty URL string, got {url!r}")
    try:
        parts = urlsplit(url.strip())
        _ = parts.port  # raises ValueError on a bad port
    except ValueError as err:
        raise ConfigError(f"endpoint: {redact_url(url)!r} is not a valid URL ({err})") from err
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"endpoint: {redact_url(url)!r} must start with http:// or https://")
    if not parts.hostname:
        raise ConfigError(f"endpoint: {redact_url(url)!r} has no host")
    if parts.username is not None or parts.password is not None:
        raise ConfigError("endpoint: credentials in the URL are not allowed (use api_key_env)")
    if parts.query or parts.fragment:
        raise ConfigError(f"endpoint: {redact_url(url)!r} must not have a query or fragment")
    path = parts.path.rstrip("/") or "/v1"
    return urlunsplit((parts.scheme, parts.netloc, path, "", ""))


def parse_endpoints(value: object) -> tuple[str, ...]:
    """Normalise one or more endpoint URLs (duplicates dropped, order kept); ``ConfigError``.

    Accepts a comma/whitespace separated string or a sequence of such strings.
    """
    items: list[str]
    if isinstance(value, str):
        items = split_list(value)
    elif isinstance(value, (list, tuple)):
        items = []
        for v in value:
            if not isinstance(v, str):
                raise ConfigError(f"endpoint: expected strings, got {type(v).__name__}")
            items.extend(split_list(v))
    else:
        raise ConfigError(f"endpoint: expected a string or list, got {type(value).__name__}")
    return tuple(dict.fromkeys(normalise_endpoint(url) for url in items))
