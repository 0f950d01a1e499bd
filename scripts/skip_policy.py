"""pytest plugin of ``make test``: a skip is allowed only from ``ALLOWED``; any other fails the run.

A skipped test proves nothing. A missing dependency (rclpy, our messages, torch, a model
folder) or a stale ``pytest.skip`` would otherwise turn into a green run that checked less
than it says. ``scripts/test.sh`` loads this plugin (``-p scripts.skip_policy``); a plain
``python -m pytest`` on a developer's machine does not, so skips there stay skips.

Each allowed skip names the test (or the marker) and a fragment of the skip reason, and says
why the skip is right on the CI machine. A skip that matches no entry is reported as a
failure of that test (or, at collection, as a collection error of that module), and the
summary at the end lists every skip, allowed or not.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass

import pytest


@dataclass(frozen=True)
class AllowedSkip:
    """One skip ``make test`` accepts: by node id (or marker) and a fragment of its reason."""

    reason_contains: str
    why: str
    nodeid: str = ""  # exact pytest node id; "" = any test carrying ``marker``
    marker: str = ""

    def matches(self, item: pytest.Item, reason: str) -> bool:
        """Whether this entry allows ``item`` to skip for ``reason``."""
        if self.reason_contains not in reason:
            return False
        if self.nodeid:
            return item.nodeid == self.nodeid
        return bool(self.marker) and item.get_closest_marker(self.marker) is not None


ALLOWED: tuple[AllowedSkip, ...] = (
    AllowedSkip(
        marker="gpu",
        reason_contains="CUDA",
        why="GPU-only test: the CI machine has no CUDA device",
    ),
    AllowedSkip(
        nodeid="step_perception/test/integration/test_content_filter.py"
        "::test_node_filters_1080p_and_the_camera_is_unharmed",
        reason_contains="content filters unusable on this middleware",
        why="the filter runs on Fast DDS 3 (Kilted): `make test-kilted`, which CI runs after "
        "`make test`, runs this test; on Jazzy's Fast DDS 2.x the filter cannot take images",
    ),
    AllowedSkip(
        nodeid="step_perception/test/integration/test_node_loop.py::test_content_filter_path",
        reason_contains="content filters unusable on this middleware",
        why="Fast DDS 2.x (Jazzy) crashes or hangs a writer beside a content-filtered reader "
        "(eProsima/Fast-DDS#4878, #6017); the node does not use the filter there (auto)",
    ),
)

_allowed: list[tuple[str, str, str]] = []  # (node id, reason, why)
_refused: list[tuple[str, str]] = []  # (node id, reason)


def _reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _allowed_entry(item: pytest.Item, reason: str) -> AllowedSkip | None:
    return next((entry for entry in ALLOWED if entry.matches(item, reason)), None)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """Turn a skip that is not on the allow-list into a failure of that test."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    reason = _reason(report)
    entry = _allowed_entry(item, reason)
    if entry is not None:
        _allowed.append((item.nodeid, reason, entry.why))
        return
    _refused.append((item.nodeid, reason))
    report.outcome = "failed"
    report.longrepr = (
        f"skip refused by scripts/skip_policy.py (not on its allow-list): {reason}\n"
        "A skipped test checks nothing: fix the environment, or add an entry with the reason "
        "the skip is right."
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, None]:
    """A module that skips itself at import (``importorskip``, ``allow_module_level``) fails."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.skipped:
        return
    reason = _reason(report)
    _refused.append((collector.nodeid, reason))
    report.outcome = "failed"
    report.longrepr = f"module-level skip refused by scripts/skip_policy.py: {reason}"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List every skip: the allowed ones with their reason, the refused ones as failures."""
    tr = terminalreporter
    tr.section("skip policy (scripts/skip_policy.py)")
    for nodeid, reason, why in _allowed:
        tr.line(f"allowed  {nodeid}: {reason} [{why}]")
    for nodeid, reason in _refused:
        tr.line(f"REFUSED  {nodeid}: {reason}", red=True)
    tr.line(f"{len(_allowed)} allowed skip(s), {len(_refused)} refused (each fails the run)")
