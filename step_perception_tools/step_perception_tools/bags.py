"""Reading and writing rosbag2 files (MCAP or sqlite3) with ``rosbags``, no rclpy needed.

One module knows the bag formats the tools exchange:

* a *scenes bag* (written by ``step-perception make-scenes``, or any camera bag):
  colour ``Image`` + ``CompressedImage``, ``CameraInfo``, aligned 16UC1 depth in
  millimetres and a ground-truth topic, all of one frame sharing one header stamp;
* an *output bag* (written by ``step-perception record`` or ``run-offline``): the
  node's ``step_perception_msgs`` outputs, logged at their receive time.

Ground truth is carried as ``step_perception_msgs/msg/ObjectDetectionArray`` (the
same type the node publishes, so evaluation compares like with like): its header is
exactly the colour image's header, each detection has the label, the box in source
pixels, ``score`` 1.0 and ``has_position`` true with the object centre [m] in the
camera optical frame.

Our message types are registered in the typestore from the ``.msg`` files, so
bags carry full definitions that Foxglove and ``rosbags`` can decode.
"""

from __future__ import annotations

import contextlib
import enum
import functools
import os
import struct
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar, cast

import cv2
import numpy as np
import numpy.typing as npt
from rosbags.image import image_to_cvimage
from rosbags.interfaces import Connection
from rosbags.rosbag2 import Reader, ReaderError, StoragePlugin, Writer, WriterError
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore
from rosbags.typesys.store import Typestore
from rosbags.typesys.stores.ros2_jazzy import (
    sensor_msgs__msg__CameraInfo as CameraInfo,
)
from rosbags.typesys.stores.ros2_jazzy import (
    sensor_msgs__msg__CompressedImage as CompressedImage,
)
from rosbags.typesys.stores.ros2_jazzy import (
    sensor_msgs__msg__Image as Image,
)
from rosbags.typesys.stores.ros2_jazzy import (
    sensor_msgs__msg__RegionOfInterest as RegionOfInterest,
)
from step_perception.core.errors import StepPerceptionError
from step_perception.core.imaging import decode_color, source_size
from step_perception.core.types import CameraIntrinsics, Detection
from step_perception.ros.messages import (
    MessageFamily,
    detection_array_msg,
    detections_from_msg,
    header_msg,
    intrinsics_from_camera_info,
    stamp_ns,
)

__all__ = [
    "DEFAULT_FRAME_ID",
    "DETECTIONS_TYPE",
    "SCENE_TYPE",
    "BagError",
    "BagWriterBase",
    "CameraTopics",
    "SceneBagWriter",
    "SceneFrame",
    "StampedDetections",
    "Storage",
    "camera_info_to_intrinsics",
    "detections_to_msg",
    "header_at",
    "header_stamp_ns",
    "msg_dirs",
    "open_reader",
    "open_writer",
    "read_detections",
    "read_scene_frames",
    "rosbags_family",
    "typestore",
]

MSGS_PACKAGE = "step_perception_msgs"
DETECTIONS_TYPE = f"{MSGS_PACKAGE}/msg/ObjectDetectionArray"
SCENE_TYPE = f"{MSGS_PACKAGE}/msg/SceneDescription"
DEFAULT_FRAME_ID = "camera_color_optical_frame"
#: rosbag2 metadata version: 8 is what Jazzy's ``ros2 bag`` writes and reads.
BAG_VERSION: Literal[8, 9] = 8
_WRITE_ORDER = ("info", "depth", "truth", "image", "compressed")  # within one frame

_NS = 1_000_000_000


class BagError(StepPerceptionError):
    """A bag cannot be opened, read or written, or lacks what was asked of it."""


class Storage(str, enum.Enum):
    """rosbag2 storage plugins the tools write."""

    MCAP = "mcap"
    SQLITE3 = "sqlite3"

    @property
    def plugin(self) -> StoragePlugin:
        """The ``rosbags`` storage plugin."""
        return StoragePlugin.MCAP if self is Storage.MCAP else StoragePlugin.SQLITE3


@dataclass(frozen=True)
class CameraTopics:
    """Topic names of a scenes bag (the defaults are what ``make-scenes`` writes)."""

    image: str = "/camera/image_raw"
    compressed: str = "/camera/image_raw/compressed"
    camera_info: str = "/camera/camera_info"
    depth: str = "/camera/depth/image_raw"
    truth: str = "/camera/ground_truth"


@dataclass(frozen=True, eq=False)
class SceneFrame:
    """One camera frame read back from a bag: everything sharing one header stamp.

    ``image`` and ``depth`` are the deserialised messages (``rosbags`` types, which
    the core's imaging accepts as they are); ``rgb`` and ``depth_mm`` decode them
    on first use.
    """

    stamp_ns: int  # header.stamp of the colour image
    frame_id: str  # header.frame_id of the colour image
    log_ns: int  # bag log time of the colour image
    image: Any  # sensor_msgs/Image or CompressedImage
    depth: Any | None  # sensor_msgs/Image 16UC1 [mm], None when the bag has none at this stamp
    intrinsics: CameraIntrinsics | None  # this stamp's CameraInfo, else the latest one before
    truth: tuple[Detection, ...] | None  # None when the bag has no truth for this stamp

    @functools.cached_property
    def rgb(self) -> npt.NDArray[np.uint8]:
        """The colour image as (H, W, 3) RGB."""
        return _image_from_msg(self.image)

    @functools.cached_property
    def depth_mm(self) -> npt.NDArray[np.uint16] | None:
        """The depth image as (H, W) millimetres (0 = no reading), or None."""
        return None if self.depth is None else _depth_from_msg(self.depth)


@dataclass(frozen=True)
class StampedDetections:
    """The detections of one ``ObjectDetectionArray`` (or ``SceneDescription``) message."""

    stamp_ns: int  # header.stamp: the source frame's stamp
    log_ns: int  # bag log time (receive time for recorded bags)
    frame_id: str
    detections: tuple[Detection, ...]
    width: int = 0  # [px] source image size (0 when the message does not say)
    height: int = 0


# --------------------------------------------------------------------------- types


def msg_dirs() -> list[Path]:
    """Folders holding the ``step_perception_msgs`` ``.msg`` files.

    ``$STEP_PERCEPTION_MSGS_DIR`` first (an explicit override), then the installed share found
    through ament_index (what a running node was built from; ``. ./env.sh`` puts it on
    ``AMENT_PREFIX_PATH``). This package is installed, so it never guesses at a checkout.
    """
    found: list[Path] = []
    env = os.environ.get("STEP_PERCEPTION_MSGS_DIR")
    if env:
        found.append(Path(env))
    try:
        from ament_index_python.packages import (
            PackageNotFoundError,
            get_package_share_directory,
        )

        with contextlib.suppress(PackageNotFoundError, ValueError, OSError):
            found.append(Path(get_package_share_directory(MSGS_PACKAGE)) / "msg")
    except ImportError:
        pass
    return [d for d in found if d.is_dir() and any(d.glob("*.msg"))]


@functools.lru_cache(maxsize=1)
def typestore() -> Typestore:
    """Return a Jazzy typestore with the ``step_perception_msgs`` messages registered."""
    dirs = msg_dirs()
    if not dirs:
        raise BagError(
            f"cannot find the {MSGS_PACKAGE} .msg files: source the workspace (. ./env.sh) "
            "or set STEP_PERCEPTION_MSGS_DIR"
        )
    store = get_typestore(Stores.ROS2_JAZZY)
    types: dict[str, Any] = {}
    try:
        for path in sorted(dirs[0].glob("*.msg")):
            types.update(
                get_types_from_msg(path.read_text("utf-8"), f"{MSGS_PACKAGE}/msg/{path.stem}")
            )
        store.register(types)
    except (OSError, TypesysError) as err:
        raise BagError(f"cannot register messages from {dirs[0]}: {err}") from err
    return store


@functools.lru_cache(maxsize=1)
def rosbags_family() -> MessageFamily:
    """Return the typestore's classes as a family of ``step_perception.ros.messages``."""
    types = typestore().types
    return MessageFamily(
        time=types["builtin_interfaces/msg/Time"],
        header=types["std_msgs/msg/Header"],
        point=types["geometry_msgs/msg/Point"],
        bounding_box=types[f"{MSGS_PACKAGE}/msg/BoundingBox2D"],
        detection=types[f"{MSGS_PACKAGE}/msg/ObjectDetection"],
        detection_array=types[DETECTIONS_TYPE],
        relation=types[f"{MSGS_PACKAGE}/msg/SpatialRelation"],
        scene=types[SCENE_TYPE],
    )


def header_at(stamp_ns: int, frame_id: str) -> Any:
    """Return a ``std_msgs/Header`` (rosbags type) at ``stamp_ns`` in ``frame_id``."""
    return header_msg(rosbags_family(), stamp_ns, frame_id)


def header_stamp_ns(raw: bytes | memoryview) -> int:
    """Read the stamp of a CDR message that starts with a ``std_msgs/Header``, unparsed.

    Lets readers pick frames by stamp without deserialising whole images.
    """
    if len(raw) < 12:
        raise BagError("CDR message too short to hold a header")
    little = raw[1] & 1  # encapsulation id: 0x0001 CDR_LE, 0x0000 CDR_BE
    sec, nanosec = struct.unpack_from("<iI" if little else ">iI", raw, 4)
    return int(sec) * _NS + int(nanosec)


# --------------------------------------------------------------------------- open


@contextlib.contextmanager
def open_reader(path: str | Path) -> Iterator[Reader]:
    """Open a rosbag2 folder, or a bare ``.mcap`` / ``.db3`` file, for reading (a context)."""
    try:
        reader = Reader(Path(path))
        reader.open()
    except (OSError, ReaderError) as err:
        raise BagError(f"cannot open bag {path}: {err}") from err
    try:
        yield reader
    finally:
        reader.close()


def open_writer(path: str | Path, storage: Storage = Storage.MCAP) -> Writer:
    """Create a new rosbag2 folder ``path`` (it must not exist), opened; the caller closes it."""
    try:
        writer = Writer(Path(path), version=BAG_VERSION, storage_plugin=storage.plugin)
        writer.open()
    except (OSError, WriterError) as err:
        raise BagError(f"cannot create bag {path}: {err}") from err
    return writer


def _connections(reader: Reader, topics: Collection[str]) -> dict[str, Connection]:
    return {c.topic: c for c in reader.connections if c.topic in topics}


# --------------------------------------------------------------------------- conversions


def camera_info_to_intrinsics(info: Any) -> CameraIntrinsics:
    """``sensor_msgs/CameraInfo`` -> pinhole intrinsics from ``K``; BagError when K is unset."""
    intrinsics = intrinsics_from_camera_info(info)
    if intrinsics is None:
        raise BagError(f"CameraInfo has no valid K and size: k={list(info.k)}")
    return intrinsics


def _intrinsics_to_camera_info(header: Any, k: CameraIntrinsics) -> CameraInfo:
    f64 = np.float64
    return CameraInfo(
        header=header,
        height=k.height,
        width=k.width,
        distortion_model="plumb_bob",
        d=np.zeros(5, f64),
        k=np.array([k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0], f64),
        r=np.eye(3, dtype=f64).reshape(9),
        p=np.array([k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0], f64),
        binning_x=0,
        binning_y=0,
        roi=RegionOfInterest(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False),
    )


def detections_to_msg(
    header: Any,
    detections: Sequence[Detection],
    width: int,
    height: int,
    query: str = "",
) -> Any:
    """Core detections -> a ``step_perception_msgs/ObjectDetectionArray`` (rosbags type)."""
    return detection_array_msg(rosbags_family(), header, detections, width, height, query)


def _image_from_msg(msg: Any) -> npt.NDArray[np.uint8]:
    bgr = decode_color(msg)  # ImageError on bad bytes or encodings
    return cast("npt.NDArray[np.uint8]", np.ascontiguousarray(bgr[:, :, ::-1]))


def _depth_from_msg(msg: Any) -> npt.NDArray[np.uint16]:
    if msg.encoding not in ("16UC1", "mono16"):
        raise BagError(f"depth image must be 16UC1 in millimetres, got {msg.encoding!r}")
    return cast("npt.NDArray[np.uint16]", np.array(image_to_cvimage(msg), dtype=np.uint16))


# --------------------------------------------------------------------------- writing scenes


_Writer = TypeVar("_Writer", bound="BagWriterBase")  # typing.Self is 3.11+ (Humble has 3.10)


class BagWriterBase:
    """Owns an open rosbags ``Writer``; ``close`` or leaving ``with`` finishes the bag."""

    _writer: Writer

    def close(self) -> None:
        """Finish the bag (writes the index and ``metadata.yaml``). Idempotent."""
        if self._writer.storage is not None:
            self._writer.close()
            self._writer.storage = None

    def __enter__(self: _Writer) -> _Writer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SceneBagWriter(BagWriterBase):
    """Writes camera frames with depth, intrinsics and ground truth to a new bag.

    Every message of a frame carries the same header (stamp, ``frame_id``) and is
    logged at that stamp, which keeps the bag deterministic for a given input.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        storage: Storage = Storage.MCAP,
        topics: CameraTopics = CameraTopics(),
        encoding: str = "rgb8",
        jpeg_quality: int = 90,
        frame_id: str = DEFAULT_FRAME_ID,
    ) -> None:
        if encoding not in ("rgb8", "bgr8"):
            raise BagError(f"image encoding must be rgb8 or bgr8, got {encoding!r}")
        if not 1 <= jpeg_quality <= 100:
            raise BagError(f"jpeg quality must be in 1..100, got {jpeg_quality}")
        self._store = typestore()
        self._encoding = encoding
        self._jpeg = [int(cv2.IMWRITE_JPEG_QUALITY), jpeg_quality]
        self._frame_id = frame_id
        self._writer = open_writer(path, storage)
        add = self._writer.add_connection
        self._conn = {
            "image": add(topics.image, Image.__msgtype__, typestore=self._store),
            "compressed": add(
                topics.compressed, CompressedImage.__msgtype__, typestore=self._store
            ),
            "info": add(topics.camera_info, CameraInfo.__msgtype__, typestore=self._store),
            "depth": add(topics.depth, Image.__msgtype__, typestore=self._store),
            "truth": add(topics.truth, DETECTIONS_TYPE, typestore=self._store),
        }
        self.frames = 0

    def write(
        self,
        stamp_ns: int,
        rgb: npt.NDArray[np.uint8],
        depth_mm: npt.NDArray[np.uint16],
        intrinsics: CameraIntrinsics,
        truth: Sequence[Detection],
    ) -> None:
        """Write one frame: colour (raw + JPEG), depth, camera info and truth."""
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise BagError(f"rgb must be (H, W, 3) uint8, got {rgb.dtype} {rgb.shape}")
        h, w = rgb.shape[:2]
        if depth_mm.dtype != np.uint16 or depth_mm.shape != (h, w):
            raise BagError(
                f"depth must be ({h}, {w}) uint16, got {depth_mm.dtype} {depth_mm.shape}"
            )
        if (intrinsics.width, intrinsics.height) != (w, h):
            raise BagError(
                f"intrinsics are for {intrinsics.width}x{intrinsics.height}, image {w}x{h}"
            )
        header = header_at(stamp_ns, self._frame_id)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        colour = bgr if self._encoding == "bgr8" else np.ascontiguousarray(rgb)
        ok, jpeg = cv2.imencode(".jpg", bgr, self._jpeg)
        if not ok:
            raise BagError("JPEG encoding failed")
        msgs = {
            "image": Image(
                header=header,
                height=h,
                width=w,
                encoding=self._encoding,
                is_bigendian=0,
                step=w * 3,
                data=colour.reshape(-1),
            ),
            "compressed": CompressedImage(
                header=header,
                format=f"{self._encoding}; jpeg compressed bgr8",
                data=np.asarray(jpeg, dtype=np.uint8).reshape(-1),
            ),
            "info": _intrinsics_to_camera_info(header, intrinsics),
            "depth": Image(
                header=header,
                height=h,
                width=w,
                encoding="16UC1",
                is_bigendian=0,
                step=w * 2,
                data=np.ascontiguousarray(depth_mm, dtype="<u2").reshape(-1).view(np.uint8),
            ),
            "truth": detections_to_msg(header, truth, w, h),
        }
        # Calibration, depth and truth go first: a node that waits for the depth of a
        # colour frame then finds it already there when the frame arrives.
        for role in _WRITE_ORDER:
            conn, msg = self._conn[role], msgs[role]
            self._writer.write(conn, stamp_ns, self._store.serialize_cdr(msg, conn.msgtype))
        self.frames += 1


# --------------------------------------------------------------------------- reading


@dataclass
class _Parts:
    log_ns: int
    raw: dict[str, tuple[str, bytes]] = field(default_factory=dict)


def read_scene_frames(
    path: str | Path,
    topics: CameraTopics = CameraTopics(),
    *,
    compressed: bool = False,
    stamps: Collection[int] | None = None,
    window_s: float = 1.0,
) -> Iterator[SceneFrame]:
    """Yield the colour frames of a bag in stamp order, with what shares their stamp.

    ``compressed`` reads the JPEG topic instead of the raw image. ``stamps`` keeps
    only those frames (others are not decoded). Messages are grouped by header
    stamp; a frame is complete once the log time is ``window_s`` past its stamp.
    Depth and truth must have the colour image's exact stamp; camera info falls
    back to the latest one seen.
    """
    store = typestore()
    image_topic = topics.compressed if compressed else topics.image
    roles = {
        image_topic: "image",
        topics.depth: "depth",
        topics.camera_info: "info",
        topics.truth: "truth",
    }
    window_ns = int(window_s * _NS)
    with open_reader(path) as reader:
        conns = _connections(reader, roles)
        if image_topic not in conns:
            raise BagError(f"bag {path} has no topic {image_topic}")
        pending: dict[int, _Parts] = {}
        latest_info: list[CameraIntrinsics | None] = [None]

        def emit(stamp: int, parts: _Parts) -> Iterator[SceneFrame]:
            info = parts.raw.get("info")
            if info is not None:
                latest_info[0] = camera_info_to_intrinsics(store.deserialize_cdr(info[1], info[0]))
            if "image" not in parts.raw or (stamps is not None and stamp not in stamps):
                return
            yield _frame(store, stamp, parts, latest_info[0])

        try:
            for conn, log_ns, raw in reader.messages(connections=list(conns.values())):
                stamp = header_stamp_ns(raw)
                pending.setdefault(stamp, _Parts(log_ns)).raw[roles[conn.topic]] = (
                    conn.msgtype,
                    bytes(raw),
                )
                for done in sorted(s for s in pending if s < log_ns - window_ns):
                    yield from emit(done, pending.pop(done))
            for done in sorted(pending):
                yield from emit(done, pending.pop(done))
        except (ReaderError, TypesysError) as err:
            raise BagError(f"cannot read bag {path}: {err}") from err


def _frame(
    store: Typestore, stamp: int, parts: _Parts, intrinsics: CameraIntrinsics | None
) -> SceneFrame:
    def load(role: str) -> Any:
        msgtype, raw = parts.raw[role]
        return store.deserialize_cdr(raw, msgtype)

    image = load("image")
    depth = load("depth") if "depth" in parts.raw else None
    if depth is not None and (depth.height, depth.width) != _image_size(image):
        raise BagError(f"depth {depth.width}x{depth.height} does not match the image at {stamp}")
    return SceneFrame(
        stamp_ns=stamp,
        frame_id=str(image.header.frame_id),
        log_ns=parts.log_ns,
        image=image,
        depth=depth,
        intrinsics=intrinsics,
        truth=detections_from_msg(load("truth")) if "truth" in parts.raw else None,
    )


def _image_size(image: Any) -> tuple[int, int]:
    """(height, width) of an Image, or of a CompressedImage from its JPEG header."""
    size = source_size(image)
    if size is None:
        size = decode_color(image).shape[1::-1]
    return size[1], size[0]


def read_detections(path: str | Path, topic: str | None = None) -> list[StampedDetections]:
    """All detection messages of one topic, in log order.

    Without ``topic`` the bag must hold exactly one ``ObjectDetectionArray`` topic
    (or, failing that, exactly one ``SceneDescription`` topic).
    """
    store = typestore()
    with open_reader(path) as reader:
        if topic is None:
            conn = _only_connection(reader, path)
        else:
            found = [c for c in reader.connections if c.topic == topic]
            if not found:
                raise BagError(f"bag {path} has no topic {topic}")
            conn = found[0]
        if conn.msgtype not in (DETECTIONS_TYPE, SCENE_TYPE):
            raise BagError(f"{conn.topic} is {conn.msgtype}, not {DETECTIONS_TYPE}/{SCENE_TYPE}")
        out = []
        try:
            for c, log_ns, raw in reader.messages(connections=[conn]):
                msg: Any = store.deserialize_cdr(raw, c.msgtype)
                out.append(
                    StampedDetections(
                        stamp_ns=stamp_ns(msg.header.stamp),
                        log_ns=log_ns,
                        frame_id=str(msg.header.frame_id),
                        detections=detections_from_msg(msg),
                        width=int(getattr(msg, "image_width", 0)),
                        height=int(getattr(msg, "image_height", 0)),
                    )
                )
        except (ReaderError, TypesysError) as err:
            raise BagError(f"cannot read {conn.topic} from {path}: {err}") from err
    return out


def _only_connection(reader: Reader, path: str | Path) -> Connection:
    for msgtype in (DETECTIONS_TYPE, SCENE_TYPE):
        found = [c for c in reader.connections if c.msgtype == msgtype]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            names = ", ".join(sorted(c.topic for c in found))
            raise BagError(f"bag {path} has several {msgtype} topics ({names}); pick one")
    raise BagError(f"bag {path} has no {DETECTIONS_TYPE} or {SCENE_TYPE} topic")
