"""Turn the model's proposed action into a command a planner may trust, or refuse it.

The proposal is untrusted text. It becomes a ``Command`` only when its action
is in ``allowed_actions`` and its target resolves to a detection of this very
frame. The rendered text must match the grammar (one command, one line)::

    <action> target="<label>" id=<id>[ x=<m> y=<m> z=<m> frame=<frame_id>]

with the position part present exactly when the target has a 3D position
(metres, 3 decimals, camera optical frame). Anything else is a rejection with
a reason (the pipeline counts it); nothing here raises.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum

from step_perception.core.parsing import ProposedAction
from step_perception.core.types import Command, Detection

__all__ = ["COMMAND_RE", "CommandDecision", "RejectReason", "decide_command"]

_NUM = r"-?\d{1,6}\.\d{3}"
#: The whole grammar; a rendered command must match it in full.
_LABEL = r"[A-Za-z0-9][A-Za-z0-9 _\-.,'()/+#&]{0,63}"
_FRAME = r"[A-Za-z0-9_/.\-]{1,128}"
COMMAND_RE = re.compile(
    rf'(?P<action>[a-z][a-z0-9_]{{0,31}}) target="(?P<label>{_LABEL})"'
    r" id=(?P<id>[A-Za-z0-9_]{1,32})"
    rf"(?: x=(?P<x>{_NUM}) y=(?P<y>{_NUM}) z=(?P<z>{_NUM}) frame=(?P<frame>{_FRAME}))?"
)


class RejectReason(str, Enum):
    """Reason codes of refused proposals (stable strings for diagnostics; ``str()`` is the code).

    ``str, Enum`` with ``__str__`` rather than ``enum.StrEnum``: StrEnum is Python 3.11+, and
    ROS 2 Humble runs Python 3.10.
    """

    NO_ACTION = "no_action"  # the model proposed nothing
    NOT_ALLOWED = "action_not_allowed"
    NO_TARGET = "no_target"
    UNKNOWN_TARGET = "unknown_target"
    AMBIGUOUS_TARGET = "ambiguous_target"
    BAD_POSITION = "bad_position"
    GRAMMAR = "grammar"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


@dataclass(frozen=True)
class CommandDecision:
    """Either an accepted command or the reason there is none."""

    command: Command | None
    reason: RejectReason | None = None  # None when accepted
    detail: str = ""  # human-readable context (bounded, no raw model text beyond 64 chars)


def _resolve(
    target: str, detections: Sequence[Detection]
) -> tuple[Detection | None, RejectReason | None]:
    by_id = [d for d in detections if d.id == target]
    if by_id:
        return by_id[0], None
    wanted = " ".join(target.lower().split())
    by_label = [d for d in detections if d.label.lower() == wanted]
    if len(by_label) == 1:
        return by_label[0], None
    if len(by_label) > 1:
        return None, RejectReason.AMBIGUOUS_TARGET
    return None, RejectReason.UNKNOWN_TARGET


def decide_command(
    proposal: ProposedAction | None,
    detections: Sequence[Detection],
    allowed_actions: Sequence[str],
    frame_id: str,
) -> CommandDecision:
    """Accept ``proposal`` as a ``Command`` or return why not (never raises)."""
    if proposal is None:
        return CommandDecision(None, RejectReason.NO_ACTION, "the model proposed no action")
    name = proposal.name.strip().lower()
    # A bare string would make ``in`` a substring test ("ick" in "pick, place"); it is one name.
    allowed = (allowed_actions,) if isinstance(allowed_actions, str) else tuple(allowed_actions)
    if name not in allowed:
        return CommandDecision(None, RejectReason.NOT_ALLOWED, f"action {name[:64]!r}")
    if proposal.target is None:
        return CommandDecision(None, RejectReason.NO_TARGET, f"action {name!r} has no target")
    target, why = _resolve(proposal.target, detections)
    if target is None:
        return CommandDecision(None, why, f"target {proposal.target[:64]!r}")
    position = target.position
    if position is not None and not all(
        math.isfinite(c) and abs(c) < 1e6 for c in (position.x, position.y, position.z)
    ):
        return CommandDecision(None, RejectReason.BAD_POSITION, f"target {target.id}")
    command = Command(
        action=name,
        target_id=target.id,
        target_label=target.label,
        position=position,
        frame_id=frame_id,
    )
    text = command.text()
    if COMMAND_RE.fullmatch(text) is None:
        return CommandDecision(None, RejectReason.GRAMMAR, f"rendered {text[:96]!r}")
    return CommandDecision(command)
