"""A DDS content filter on ``header.stamp``, moved forward by the frame gate.

While the gate will not take a frame (a request in flight, or too early for
``rate_hz``), the filter keeps those frames from ever reaching this process: the
writer (or the reader's middleware) drops them before rclpy sees a byte.

Two ways to set it, picked once per process by what rclpy offers:

* rclpy's own API (Kilted and later: ``Subscription.set_content_filter``,
  ``is_cft_enabled``, and ``ContentFilterOptions`` at creation). No ctypes.
* rclpy on Jazzy and Humble has no content-filter API, but rcl has had one since
  Humble, so there this module calls it through ctypes on the
  ``rcl_subscription_t`` behind an rclpy subscription.

Caveat, measured here: Fast DDS 2.x (the middleware of Jazzy and Humble)
evaluates the SQL filter by deserialising every sample into DynamicData. For
samples over about 64 KB (any real camera Image) the filtered reader receives
nothing and the publishing process grows by gigabytes (eProsima/Fast-DDS#6017,
#4878). ``middleware_filters_large_samples`` tells when that middleware is
loaded. Fast DDS 3 (Kilted) filters 1080p and 4K frames at the writer
(``test/integration/test_content_filter.py``), but its writer can abort while a
reader moves its filter: a camera publishing to the node's filtered reader
aborted inside ``publish`` in 1 of 8 runs of the node-loop tests on Kilted
(2026-12-02, with the shipped profile; 2 segfaults in 23 filtered 1080p runs
before it). The filter is the node's, the crash is the camera driver's, so
``middleware_filter_is_safe`` says no there too and ``content_filter: auto``
stays on the plain subscription on every middleware measured; ``content_filter:
on`` turns it on where a camera restart is acceptable.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
import threading
from pathlib import Path
from typing import Any

from rclpy.subscription import Subscription

try:  # Kilted and later
    from rclpy.subscription_content_filter_options import ContentFilterOptions
except ImportError:  # Jazzy and Humble: rcl's API through ctypes instead
    ContentFilterOptions = None

__all__ = [
    "CLOSED_STAMP_NS",
    "FASTDDS3_WRITER_ABORT",
    "FILTER_EXPRESSION",
    "RCLPY_HAS_CONTENT_FILTER",
    "ContentFilterError",
    "StampFilter",
    "creation_options",
    "middleware_filter_is_safe",
    "middleware_filters_large_samples",
]

#: Samples pass when their stamp is >= (%0 s, %1 ns).
FILTER_EXPRESSION = (
    "header.stamp.sec > %0 OR (header.stamp.sec = %0 AND header.stamp.nanosec >= %1)"
)
#: The bound used to close the filter (no real stamp reaches it: int32 seconds max).
CLOSED_STAMP_NS = (2**31 - 1) * 1_000_000_000


#: rclpy's own content-filter API is there (Kilted and later); else rcl through ctypes.
RCLPY_HAS_CONTENT_FILTER = ContentFilterOptions is not None


class ContentFilterError(RuntimeError):
    """The content filter could not be set (the RMW lacks it, or rcl failed)."""


def _parameters(stamp_ns: int | None) -> list[str]:
    """Return the filter's two parameters (seconds, nanoseconds) for "stamp >= stamp_ns"."""
    ns = CLOSED_STAMP_NS if stamp_ns is None else min(max(0, stamp_ns), CLOSED_STAMP_NS)
    sec, nanosec = divmod(ns, 1_000_000_000)
    return [str(sec), str(nanosec)]


def creation_options(stamp_ns: int | None = 0) -> Any:
    """``content_filter_options`` for ``create_subscription`` (rclpy with the API), else ``None``.

    Creating the reader filtered saves the middleware from recreating it on the first
    ``set_content_filter`` (Fast DDS swaps the DataReader for a filtered one then).
    """
    if ContentFilterOptions is None:
        return None
    return ContentFilterOptions(FILTER_EXPRESSION, _parameters(stamp_ns))


class _Allocator(ctypes.Structure):
    _fields_ = (  # rcutils_allocator_t
        ("allocate", ctypes.c_void_p),
        ("deallocate", ctypes.c_void_p),
        ("reallocate", ctypes.c_void_p),
        ("zero_allocate", ctypes.c_void_p),
        ("state", ctypes.c_void_p),
    )


class _StringArray(ctypes.Structure):
    _fields_ = (  # rcutils_string_array_t
        ("size", ctypes.c_size_t),
        ("data", ctypes.POINTER(ctypes.c_char_p)),
        ("allocator", _Allocator),
    )


class _RmwOptions(ctypes.Structure):
    _fields_ = (  # rmw_subscription_content_filter_options_t
        ("filter_expression", ctypes.c_char_p),
        ("expression_parameters", _StringArray),
    )


class _RclOptions(ctypes.Structure):
    _fields_ = (("rmw_subscription_content_filter_options", _RmwOptions),)


_lib: ctypes.CDLL | None = None
_lib_lock = threading.Lock()


def _find_librcl() -> str:
    names = ["librcl.so", "librcl.dylib"]
    dirs = [Path(sys.prefix) / "lib"]
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
        if prefix:
            dirs.append(Path(prefix) / "lib")
    for d in dirs:
        for name in names:
            if (d / name).is_file():
                return str(d / name)
    found = ctypes.util.find_library("rcl")
    if found is None:
        raise ContentFilterError("librcl not found (sys.prefix/lib, AMENT_PREFIX_PATH, ld path)")
    return found


def _librcl() -> ctypes.CDLL:
    global _lib
    with _lib_lock:
        if _lib is None:
            try:
                lib = ctypes.CDLL(_find_librcl())
                lib.rcl_get_zero_initialized_subscription_content_filter_options.restype = (
                    _RclOptions
                )
                lib.rcl_subscription_content_filter_options_init.argtypes = (
                    ctypes.c_void_p,
                    ctypes.c_char_p,
                    ctypes.c_size_t,
                    ctypes.POINTER(ctypes.c_char_p),
                    ctypes.POINTER(_RclOptions),
                )
                lib.rcl_subscription_content_filter_options_init.restype = ctypes.c_int
                lib.rcl_subscription_content_filter_options_fini.argtypes = (
                    ctypes.c_void_p,
                    ctypes.POINTER(_RclOptions),
                )
                lib.rcl_subscription_content_filter_options_fini.restype = ctypes.c_int
                lib.rcl_subscription_set_content_filter.argtypes = (
                    ctypes.c_void_p,
                    ctypes.POINTER(_RclOptions),
                )
                lib.rcl_subscription_set_content_filter.restype = ctypes.c_int
                lib.rcl_subscription_is_cft_enabled.argtypes = (ctypes.c_void_p,)
                lib.rcl_subscription_is_cft_enabled.restype = ctypes.c_bool
                lib.rcutils_reset_error.argtypes = ()
            except (OSError, AttributeError) as err:
                raise ContentFilterError(f"rcl content-filter API unavailable: {err}") from err
            _lib = lib
        return _lib


#: Why ``auto`` leaves the filter off on Fast DDS 3 (see the module docstring).
FASTDDS3_WRITER_ABORT = (
    "Fast DDS 3 writers can abort while a reader moves its filter (a camera publishing to "
    "the node's filtered reader aborted in publish in 1 of 8 test runs on Kilted)"
)


def _fast_dds_major() -> int | None:
    """Return the Fast DDS major version this process has loaded (2, 3); None if unknown.

    Looks at the shared objects: Fast DDS 2.x is ``libfastrtps.so.2``; Fast DDS 3
    renamed it ``libfastdds.so.3``.
    """
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    if "libfastrtps.so.2" in maps:
        return 2
    if "libfastdds.so.3" in maps:
        return 3
    return None


def middleware_filters_large_samples(rmw_implementation: str) -> tuple[bool, str]:
    """Whether content filters on camera-sized samples work with this middleware, and why not."""
    if "fastrtps" not in rmw_implementation:
        return True, ""
    major = _fast_dds_major()
    if major == 2:
        return False, (
            "Fast DDS 2.x evaluates filters by deserialising whole samples: images over "
            "64 KB stop arriving and the publisher balloons (eProsima/Fast-DDS#6017)"
        )
    if major is None:
        return False, "cannot tell the Fast DDS version (no /proc/self/maps)"
    return True, ""


def middleware_filter_is_safe(rmw_implementation: str) -> tuple[bool, str]:
    """Whether ``content_filter: auto`` may turn the filter on here, and why not.

    It works (``middleware_filters_large_samples``) and no crash of the publishing side is
    known: not on any Fast DDS measured (2.x: whole-sample deserialising; 3: writer aborts).
    """
    works, why = middleware_filters_large_samples(rmw_implementation)
    # On Fast DDS only major version 3 "works" (2 and an unknown version do not): that is the one.
    if works and "fastrtps" in rmw_implementation:
        return False, FASTDDS3_WRITER_ABORT
    return works, why


class StampFilter:
    """Keeps a subscription's content filter at "stamp >= bound" (or closed).

    ``enable`` installs the filter (accepting everything) and reports whether
    the RMW actually filters (``is_cft_enabled``). ``set_bound`` moves it; it
    skips calls that would not change anything, because each change travels to
    the writers through discovery. rclpy's API is used where it exists, rcl
    through ctypes otherwise.
    """

    def __init__(self, subscription: Subscription) -> None:
        self._sub = subscription
        self._bound: int | None = -1  # never equal to a real bound: the first set goes through
        self.enabled = False

    def enable(self) -> bool:
        """Install the filter; ``True`` when the RMW filters (else the caller falls back)."""
        try:
            self._set(0)
        except ContentFilterError:
            self.enabled = False
            return False
        if RCLPY_HAS_CONTENT_FILTER:
            self.enabled = bool(self._sub.is_cft_enabled)  # type: ignore[attr-defined,unused-ignore]
        else:
            with self._sub.handle:
                ptr = self._sub.handle.pointer
                self.enabled = bool(_librcl().rcl_subscription_is_cft_enabled(ptr))
        return self.enabled

    @property
    def bound(self) -> int | None:
        """The current lower stamp bound [ns]; ``None`` when closed."""
        return self._bound

    def set_bound(self, stamp_ns: int | None) -> bool:
        """Pass only stamps >= ``stamp_ns`` (``None`` closes it); ``True`` if it changed."""
        if not self.enabled or stamp_ns == self._bound:
            return False
        self._set(stamp_ns)
        return True

    def _set(self, stamp_ns: int | None) -> None:
        if RCLPY_HAS_CONTENT_FILTER:
            setter = self._sub.set_content_filter  # type: ignore[attr-defined,unused-ignore]
            try:
                setter(FILTER_EXPRESSION, _parameters(stamp_ns))
            except Exception as err:  # rclpy's RCLError (its _rclpy module is untyped)
                raise ContentFilterError(f"set_content_filter: {err}") from err
        else:
            _set_through_rcl(self._sub, _parameters(stamp_ns))
        self._bound = stamp_ns


def _set_through_rcl(sub: Subscription, parameters: list[str]) -> None:
    """``rcl_subscription_set_content_filter`` through ctypes (rclpy without the API)."""
    lib = _librcl()
    params = (ctypes.c_char_p * 2)(*(p.encode() for p in parameters))
    opts = lib.rcl_get_zero_initialized_subscription_content_filter_options()
    with sub.handle:
        ptr = sub.handle.pointer
        rc = lib.rcl_subscription_content_filter_options_init(
            ptr, FILTER_EXPRESSION.encode(), 2, params, ctypes.byref(opts)
        )
        if rc != 0:
            lib.rcutils_reset_error()
            raise ContentFilterError(f"rcl_subscription_content_filter_options_init: {rc}")
        try:
            rc = lib.rcl_subscription_set_content_filter(ptr, ctypes.byref(opts))
        finally:
            lib.rcl_subscription_content_filter_options_fini(ptr, ctypes.byref(opts))
        if rc != 0:
            lib.rcutils_reset_error()
            raise ContentFilterError(f"rcl_subscription_set_content_filter: {rc}")
