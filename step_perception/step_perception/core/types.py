"""Value types shared by the core, the backends and the ROS adapter.

All are frozen dataclasses or enums: they cross threads (executor thread,
backend worker threads) and are never mutated after creation.

Conventions used everywhere:
* time stamps are integer nanoseconds (``stamp_ns``) taken from the frame's
  own header, never from the wall clock;
* a ``Box2D`` in a ``Detection`` is in pixels of the *source* image
  (full resolution, origin top-left, x right, y down);
* a ``Point3`` is in metres in the camera optical frame (x right, y down,
  z forward) named by ``FrameMeta.frame_id``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = [
    "BackendHealth",
    "Box2D",
    "CameraIntrinsics",
    "Command",
    "Detection",
    "FrameMeta",
    "ImageTransform",
    "ModelReply",
    "ModelRequest",
    "PerceptionResult",
    "Point3",
    "PreparedImage",
    "Relation",
    "RelationKind",
    "RelationSource",
    "RigidTransform",
    "SamplingParams",
    "Task",
    "TokenUsage",
    "TransformLookup",
]


class Task(str, Enum):
    """What the model is asked to do with a frame."""

    DETECT = "detect"  # all salient objects, or those named in the prompt
    LOCATE = "locate"  # the object(s) a natural-language prompt describes
    DESCRIBE = "describe"  # summary + objects + relations
    COMMAND = "command"  # the prompt is a goal; the model proposes one action


class RelationKind(str, Enum):
    """Spatial relation names; values match step_perception_msgs/SpatialRelation constants."""

    LEFT_OF = "left_of"
    RIGHT_OF = "right_of"
    ABOVE = "above"
    BELOW = "below"
    IN_FRONT_OF = "in_front_of"
    BEHIND = "behind"
    NEAR = "near"
    ON_TOP_OF = "on_top_of"
    INSIDE = "inside"


class RelationSource(str, Enum):
    """Where a relation came from."""

    GEOMETRY = "geometry"
    MODEL = "model"


@dataclass(frozen=True)
class FrameMeta:
    """Identity of a source frame: its header and resolution."""

    stamp_ns: int  # header.stamp in nanoseconds
    frame_id: str  # header.frame_id
    width: int  # [px] source width
    height: int  # [px] source height


@dataclass(frozen=True)
class ImageTransform:
    """Affine map from sent-image pixels to source-image pixels.

    ``source = sent * scale + offset`` per axis. Kept exactly so boxes the
    model returns in sent-image coordinates map back to the source image.
    """

    scale_x: float
    scale_y: float
    offset_x: float = 0.0
    offset_y: float = 0.0

    def to_source(self, x: float, y: float) -> tuple[float, float]:
        """Map a point from sent-image pixels to source pixels."""
        return x * self.scale_x + self.offset_x, y * self.scale_y + self.offset_y

    def to_sent(self, x: float, y: float) -> tuple[float, float]:
        """Map a point from source pixels to sent-image pixels."""
        return (x - self.offset_x) / self.scale_x, (y - self.offset_y) / self.scale_y


@dataclass(frozen=True)
class PreparedImage:
    """The image exactly as it is sent to the model (encoded), plus the way back."""

    data: bytes  # encoded bytes (JPEG or PNG)
    mime: str  # "image/jpeg" or "image/png"
    width: int  # [px] sent width
    height: int  # [px] sent height
    transform: ImageTransform  # sent px -> source px
    source_width: int = 0  # [px] decoded source width (0 = unknown)
    source_height: int = 0  # [px] decoded source height (0 = unknown)

    @property
    def sha256(self) -> str:
        """Hex digest of the encoded bytes (the replay cassette key uses it)."""
        return hashlib.sha256(self.data).hexdigest()

    def data_url(self) -> str:
        """Return the image as a base64 ``data:`` URL for an OpenAI ``image_url`` part."""
        return f"data:{self.mime};base64,{base64.b64encode(self.data).decode('ascii')}"


@dataclass(frozen=True)
class SamplingParams:
    """Decoding settings sent with a request."""

    temperature: float = 0.0
    max_tokens: int = 512
    reasoning_effort: str | None = "low"  # for reasoning models (Step-3.7-Flash); None = don't send
    # Most reasoning tokens before the server forces the end of thinking (vLLM 0.32's
    # ``thinking_token_budget``; needs the server's --reasoning-parser). None = don't send.
    thinking_token_budget: int | None = None


@dataclass(frozen=True)
class ModelRequest:
    """One chat request for one frame: system + user text + the image."""

    model: str  # model name/path as the server knows it
    profile: str  # model profile name (fixes the box convention and wording)
    system: str
    user: str
    image: PreparedImage
    sampling: SamplingParams = field(default_factory=SamplingParams)
    json_schema: Mapping[str, Any] | None = None  # JSON schema of the answer
    use_response_format: bool = False  # send json_schema as response_format
    deadline: float | None = None  # time.monotonic() after which the answer is useless

    def cache_key(self) -> str:
        """Stable key over (model, profile, prompt, sent image bytes) for record/replay."""
        blob = json.dumps(
            [self.model, self.profile, self.system, self.user, self.image.sha256],
            ensure_ascii=True,
        )
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TokenUsage:
    """Token counts as the server reported them."""

    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class ModelReply:
    """The raw answer of a backend, before parsing."""

    text: str  # the answer content (reasoning stripped by the backend where it is separate)
    latency_s: float  # [s] from submit to answer, retries included
    endpoint: str  # which endpoint / backend answered (no secrets)
    usage: TokenUsage | None = None
    attempts: int = 1  # how many HTTP attempts it took


@dataclass(frozen=True)
class BackendHealth:
    """What a backend reports for diagnostics."""

    healthy: bool
    state: str  # e.g. "closed", "open", "half_open", "loaded", "replay"
    detail: str = ""


@dataclass(frozen=True)
class Box2D:
    """Axis-aligned box, corners in pixels (x1 <= x2, y1 <= y2)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def width(self) -> float:
        """Width [px] (x2 - x1)."""
        return self.x2 - self.x1

    @property
    def height(self) -> float:
        """Height [px] (y2 - y1)."""
        return self.y2 - self.y1

    @property
    def center(self) -> tuple[float, float]:
        """Centre (x, y) [px]."""
        return (self.x1 + self.x2) / 2.0, (self.y1 + self.y2) / 2.0

    @property
    def area(self) -> float:
        """Area [px²], 0 for an inverted box."""
        return max(0.0, self.width) * max(0.0, self.height)

    def iou(self, other: Box2D) -> float:
        """Intersection over union with another box in the same pixel frame."""
        iw = min(self.x2, other.x2) - max(self.x1, other.x1)
        ih = min(self.y2, other.y2) - max(self.y1, other.y1)
        if iw <= 0 or ih <= 0:
            return 0.0
        inter = iw * ih
        return inter / (self.area + other.area - inter)


@dataclass(frozen=True)
class Point3:
    """A 3D point [m] in the camera optical frame (x right, y down, z forward)."""

    x: float
    y: float
    z: float

    def distance(self, other: Point3) -> float:
        """Euclidean distance [m] to ``other``."""
        return math.dist((self.x, self.y, self.z), (other.x, other.y, other.z))


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics of the colour camera (from CameraInfo.k)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int  # [px] resolution the intrinsics refer to
    height: int


@dataclass(frozen=True)
class RigidTransform:
    """A rigid transform (rotation, then translation) taking points of one frame into another.

    ``rotation`` is a unit quaternion (x, y, z, w), ``translation`` metres, as in
    ``geometry_msgs/Transform``: ``apply(p) = R p + t``.
    """

    translation: tuple[float, float, float]
    rotation: tuple[float, float, float, float]

    def apply(self, p: Point3) -> Point3:
        """Return ``p`` expressed in the target frame."""
        qx, qy, qz, qw = self.rotation
        # v' = v + 2 w (q x v) + 2 q x (q x v), q = (qx, qy, qz): the unit-quaternion rotation.
        cx = qy * p.z - qz * p.y
        cy = qz * p.x - qx * p.z
        cz = qx * p.y - qy * p.x
        ccx = qy * cz - qz * cy
        ccy = qz * cx - qx * cz
        ccz = qx * cy - qy * cx
        tx, ty, tz = self.translation
        return Point3(
            p.x + 2.0 * (qw * cx + ccx) + tx,
            p.y + 2.0 * (qw * cy + ccy) + ty,
            p.z + 2.0 * (qw * cz + ccz) + tz,
        )


#: ``lookup(target_frame, source_frame, stamp_ns)``: the transform at that stamp, or ``None``
#: when it is not known (never a stale or identity guess). The ROS adapter injects tf2's.
TransformLookup = Callable[[str, str, int], "RigidTransform | None"]


@dataclass(frozen=True)
class Detection:
    """One validated object, in source pixels (and metres when depth allowed)."""

    id: str
    label: str
    box: Box2D  # source pixels
    score: float = math.nan  # 0..1, NaN when the model gave none
    description: str = ""
    position: Point3 | None = None  # None = no trustworthy depth


@dataclass(frozen=True)
class Relation:
    """``subject relation object`` between two detections of one frame."""

    subject_id: str
    relation: RelationKind
    object_id: str
    source: RelationSource
    distance: float = math.nan  # [m], NaN when unknown


@dataclass(frozen=True)
class Command:
    """An accepted action on a detection of this frame."""

    action: str
    target_id: str
    target_label: str
    position: Point3 | None
    frame_id: str

    def text(self) -> str:
        """Render the command in the planner grammar (see core/commands.py)."""
        out = f'{self.action} target="{self.target_label}" id={self.target_id}'
        if self.position is not None:
            p = self.position
            out += f" x={p.x:.3f} y={p.y:.3f} z={p.z:.3f} frame={self.frame_id}"
        return out


@dataclass(frozen=True)
class PerceptionResult:
    """Everything one processed frame produced, validated and safe to publish."""

    frame: FrameMeta
    task: Task
    query: str
    detections: tuple[Detection, ...]
    relations: tuple[Relation, ...] = ()
    summary: str = ""
    command: Command | None = None
    command_rejection: str | None = None  # why a proposed action was refused
    position_frame: str = ""  # frame of the 3D positions; "" = frame.frame_id
    reply: ModelReply | None = None
