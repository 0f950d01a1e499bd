"""The progress bar every long-running tool shows (a leaf: rich only)."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["progress_bar"]


def progress_bar(console: Console | None = None, total: bool = True) -> Progress:
    """Return a rich progress bar (on stderr) with the columns the tools use."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
    if total:
        columns += [TaskProgressColumn(), TimeRemainingColumn()]
    columns.append(TimeElapsedColumn())
    return Progress(*columns, console=console or Console(stderr=True))
