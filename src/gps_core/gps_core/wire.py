"""numpy <-> standard ROS message conversion (sensor_msgs/Image, geometry_msgs/Pose, time, flat
arrays) with validation, shared by the simulation node and the controller. No rclpy and no message
package of ours: the gps_msgs conversions live in gps_controller.conversions.

Rules of the wire (DESIGN.md): arrays are flattened row-major ``float64[]`` (``uint8[]`` for images
and weights) with explicit dimensions; a receiver checks every size and rejects NaN/Inf and unknown
encodings. Every rejection is a :class:`MessageValidationError` that names the offending field.
Large arrays go through ``array.array`` and come back through ``np.frombuffer`` (no copy):
element-wise assignment of large sequences is orders of magnitude slower in rclpy.
"""

from __future__ import annotations

import array

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Pose
from sensor_msgs.msg import Image

#: Image encodings the controller and trainer accept, with their channel count.
IMAGE_ENCODINGS = {"rgb8": 3, "bgr8": 3}

class MessageValidationError(ValueError):
    """A message (or request) failed validation; ``field`` names the offending field."""

    def __init__(self, field_name: str, reason: str):
        super().__init__(f"{field_name}: {reason}")
        self.field = field_name
        self.reason = reason



# --------------------------------------------------------------------------- primitives


def to_float64_array(values: np.ndarray, field_name: str = "array", allow_nonfinite: bool = False) -> array.array:
    """Flatten ``values`` row-major into an ``array.array('d')`` for a ``float64[]`` field."""
    flat = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
    if not allow_nonfinite and not np.isfinite(flat).all():
        raise MessageValidationError(field_name, f"contains NaN or Inf at flat index {_first_nonfinite(flat)}")
    out = array.array("d")
    out.frombytes(flat.tobytes())
    return out


def to_uint8_array(values: np.ndarray | bytes) -> array.array:
    """An ``array.array('B')`` for a ``uint8[]`` field, from a uint8 array or bytes."""
    out = array.array("B")
    if isinstance(values, bytes | bytearray | memoryview):
        out.frombytes(bytes(values))
    else:
        out.frombytes(np.ascontiguousarray(values, dtype=np.uint8).tobytes())
    return out


def read_float64(values, shape: tuple[int, ...], field_name: str, allow_nonfinite: bool = False) -> np.ndarray:
    """Read a flattened ``float64[]`` field back into ``shape``; size and finiteness are checked."""
    expected = int(np.prod(shape, dtype=np.int64))
    if isinstance(values, array.array) and values.typecode == "d":
        flat = np.frombuffer(values, dtype=np.float64)
    else:
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
    if flat.size != expected:
        raise MessageValidationError(
            field_name, f"has {flat.size} elements, expected {expected} for shape {tuple(shape)}"
        )
    if not allow_nonfinite and not np.isfinite(flat).all():
        raise MessageValidationError(field_name, f"contains NaN or Inf at flat index {_first_nonfinite(flat)}")
    return flat.reshape(shape).copy()


def read_uint8(values, shape: tuple[int, ...], field_name: str) -> np.ndarray:
    """Read a ``uint8[]`` field (array.array('B'), bytes or a sequence) back into ``shape``."""
    expected = int(np.prod(shape, dtype=np.int64))
    if isinstance(values, array.array | bytes | bytearray | memoryview):
        flat = np.frombuffer(values, dtype=np.uint8)
    else:
        flat = np.asarray(values, dtype=np.uint8).reshape(-1)
    if flat.size != expected:
        raise MessageValidationError(
            field_name, f"has {flat.size} elements, expected {expected} for shape {tuple(shape)}"
        )
    return flat.reshape(shape).copy()


def _first_nonfinite(flat: np.ndarray) -> int:
    return int(np.flatnonzero(~np.isfinite(flat))[0])


def _require_positive(value: int, field_name: str) -> int:
    if value <= 0:
        raise MessageValidationError(field_name, "must be > 0 (required dimension is empty)")
    return int(value)


def seconds_to_time(seconds: float) -> Time:
    """ROS ``builtin_interfaces/Time`` from seconds."""
    sec = int(np.floor(seconds))
    return Time(sec=sec, nanosec=int(round((seconds - sec) * 1e9)) % 1_000_000_000)


def time_to_seconds(stamp: Time) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


# --------------------------------------------------------------------------- images


def image_to_msg(image: np.ndarray, stamp: Time | None = None, frame_id: str = "", encoding: str = "rgb8") -> Image:
    """``sensor_msgs/Image`` from an (H, W, 3) uint8 array (the numpy equivalent of cv_bridge)."""
    if encoding not in IMAGE_ENCODINGS:
        raise MessageValidationError("encoding", f"unknown image encoding {encoding!r}; known: {sorted(IMAGE_ENCODINGS)}")
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != IMAGE_ENCODINGS[encoding] or image.dtype != np.uint8:
        raise MessageValidationError(
            "data", f"expected an (H, W, 3) uint8 image, got shape {image.shape} dtype {image.dtype}"
        )
    height, width, channels = image.shape
    msg = Image(
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * channels,
        data=to_uint8_array(image),
    )
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def image_from_msg(msg: Image) -> np.ndarray:
    """(H, W, 3) uint8 RGB array from an rgb8 or bgr8 ``sensor_msgs/Image`` (row padding allowed)."""
    if msg.encoding not in IMAGE_ENCODINGS:
        raise MessageValidationError(
            "encoding", f"unknown image encoding {msg.encoding!r}; known: {sorted(IMAGE_ENCODINGS)}"
        )
    channels = IMAGE_ENCODINGS[msg.encoding]
    height = _require_positive(msg.height, "height")
    width = _require_positive(msg.width, "width")
    if msg.step < width * channels:
        raise MessageValidationError("step", f"{msg.step} is smaller than width*channels = {width * channels}")
    rows = read_uint8(msg.data, (height, msg.step), "data")
    image = rows[:, : width * channels].reshape(height, width, channels)
    if msg.encoding == "bgr8":
        image = image[:, :, ::-1]
    return np.ascontiguousarray(image)


# --------------------------------------------------------------------------- poses and joint vectors


def pose_to_array(pose: Pose, field_name: str = "pose") -> np.ndarray:
    """(7,) = position xyz + quaternion wxyz; rejects NaN and a zero quaternion, normalizes the rest."""
    p, q = pose.position, pose.orientation
    arr = np.array([p.x, p.y, p.z, q.w, q.x, q.y, q.z], dtype=np.float64)
    if not np.isfinite(arr).all():
        raise MessageValidationError(field_name, "contains NaN or Inf")
    norm = np.linalg.norm(arr[3:])
    if norm < 1e-9:
        raise MessageValidationError(field_name, "orientation quaternion is zero")
    arr[3:] /= norm
    return arr


def array_to_pose(arr: np.ndarray) -> Pose:
    pose = Pose()
    pose.position.x, pose.position.y, pose.position.z = (float(v) for v in arr[:3])
    pose.orientation.w, pose.orientation.x, pose.orientation.y, pose.orientation.z = (float(v) for v in arr[3:7])
    return pose


def joint_vector(values, expected: int, field_name: str) -> np.ndarray:
    """A finite (expected,) float vector from a sequence field."""
    return read_float64(values, (expected,), field_name)
