"""numpy <-> ROS message conversions that the node and every tool share (no rclpy).

The readers take messages by their fields only, so the same function reads an rclpy message in
the node and a rosbags message in the tools (``mono-depth evaluate``, ``train``, ``adapt``):
a frame decodes to the same array everywhere. The writers that need rclpy's message classes
live in :mod:`mono_depth_ros.ros.conversions`, which re-exports these readers.

Stamps are int nanoseconds inside the package (:mod:`mono_depth_ros.conventions`).
"""
from __future__ import annotations

import cv2
import numpy as np
from rosbags.image import ImageConversionError, ImageFormatError
from rosbags.image.image import convert_color, to_cvtype

from mono_depth_ros.conventions import NS_PER_S, transform_matrix

__all__ = ["InputError", "DEPTH_ENCODINGS", "stamp_to_ns", "ns_to_stamp", "image_to_rgb", "compressed_to_rgb",
           "camera_info_to_K", "depth_image_to_metres", "pose_to_matrix", "transform_to_matrix"]

#: Encodings of depth images (REP 118: 32FC1 metres; 16UC1 millimetres).
DEPTH_ENCODINGS = ("32FC1", "16UC1")


def stamp_to_ns(stamp) -> int:
    """``builtin_interfaces/Time`` (``.sec``, ``.nanosec``) -> int ns."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(ns: int) -> tuple[int, int]:
    """int ns -> (sec, nanosec) of a ``builtin_interfaces/Time``."""
    sec, nanosec = divmod(int(ns), NS_PER_S)
    return int(sec), int(nanosec)


def pose_to_matrix(pose) -> np.ndarray:
    """``geometry_msgs/Pose`` -> (4,4) float64 ``T_frame_child`` (e.g. T_map_camera of a PoseStamped).

    The quaternion (x, y, z, w) is normalised, not checked (ground-truth poses).
    """
    p, q = pose.position, pose.orientation
    return transform_matrix([p.x, p.y, p.z], [q.x, q.y, q.z, q.w], tol=None)


def transform_to_matrix(transform) -> np.ndarray:
    """``geometry_msgs/Transform`` -> (4,4) float64; a quaternion beyond tf2's tolerance raises ValueError."""
    t, q = transform.translation, transform.rotation
    return transform_matrix([t.x, t.y, t.z], [q.x, q.y, q.z, q.w])


class InputError(ValueError):
    """A message the node cannot use; the text names the problem, ``kind`` classifies it (for throttling)."""

    def __init__(self, text: str, kind: str = "input"):
        super().__init__(text)
        self.kind = kind


def image_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/Image (rclpy or rosbags) -> (H,W,3) uint8 RGB, any colour encoding. Raises InputError.

    16-bit and float sources are scaled to 8 bit by their min/max (depth images are read with
    :func:`depth_image_to_metres`).
    """
    h, w, enc = int(msg.height), int(msg.width), str(msg.encoding)
    if h <= 0 or w <= 0:
        raise InputError(f"image has zero size ({w}x{h})", "size")
    try:
        _, _, typestr, nchan = to_cvtype(enc)
    except (ImageFormatError, ImageConversionError, KeyError, ValueError) as exc:
        raise InputError(f"unsupported image encoding {enc!r}: {exc}", "encoding") from None
    dtype = np.dtype(typestr)
    row = w * nchan * dtype.itemsize
    step = int(msg.step) if msg.step else row
    if step < row:
        raise InputError(f"image step {step} is smaller than width*channels*bytes = {row} ({enc}, {w}x{h})", "step")
    data = msg.data
    if len(data) < step * (h - 1) + row:
        raise InputError(f"truncated image data: {len(data)} bytes for {w}x{h} {enc} with step {step} "
                         f"(need {step * h})", "truncated")
    buf = np.frombuffer(data, dtype=np.uint8, count=step * h if len(data) >= step * h else len(data))
    rows = np.lib.stride_tricks.as_strided(buf, shape=(h, row), strides=(step, 1))
    arr = np.ascontiguousarray(rows).view(dtype)
    if dtype.itemsize > 1 and bool(msg.is_bigendian) != (np.little_endian is False):
        arr = arr.byteswap()
    arr = arr.reshape((h, w) if nchan == 1 else (h, w, nchan))
    if enc == "rgb8":
        return arr
    try:
        out = convert_color(arr, enc, "rgb8")
    except (ImageFormatError, ImageConversionError, KeyError, ValueError, cv2.error) as exc:
        raise InputError(f"cannot convert image encoding {enc!r} to rgb8: {exc}", "encoding") from None
    if out.dtype != np.uint8:  # 16-bit / float sources: scale to 8 bit
        out = cv2.normalize(out, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if out.ndim == 2:
        out = np.repeat(out[..., None], 3, axis=2)
    return out


def compressed_to_rgb(msg) -> np.ndarray:
    """sensor_msgs/CompressedImage (jpeg/png) -> (H,W,3) uint8 RGB. Raises InputError."""
    data = np.frombuffer(bytes(msg.data), np.uint8)
    if data.size == 0:
        raise InputError("compressed image has no data", "size")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"compressed image ({msg.format!r}, {data.size} bytes) could not be decoded", "decode")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def camera_info_to_K(info) -> np.ndarray:
    """CameraInfo -> (3,3) K in pixels, validated. Raises InputError."""
    K = np.asarray(info.k, dtype=np.float64).reshape(3, 3)
    if not np.all(np.isfinite(K)):
        raise InputError("camera_info K contains NaN/inf", "camera_info")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"camera_info has non-positive focal length (fx={K[0, 0]}, fy={K[1, 1]})", "camera_info")
    if np.abs(K[2] - (0.0, 0.0, 1.0)).max() > 1e-6:
        raise InputError(f"camera_info K's last row is {K[2].tolist()}, not [0, 0, 1]", "camera_info")
    with np.errstate(all="ignore"):
        if not np.all(np.isfinite(np.linalg.inv(K))):     # fx or fy so small that 1/f overflows
            raise InputError(f"camera_info K is not invertible (fx={K[0, 0]}, fy={K[1, 1]})", "camera_info")
    if info.width <= 0 or info.height <= 0:
        raise InputError(f"camera_info has zero size ({info.width}x{info.height})", "camera_info")
    return K



def depth_image_to_metres(msg) -> np.ndarray:
    """``sensor_msgs/msg/Image`` depth -> (H,W) float32 metres.

    32FC1 is taken as metres (REP 118: +inf/NaN kept); 16UC1 as millimetres (0 -> NaN).
    """
    h, w = int(msg.height), int(msg.width)
    data = np.asarray(msg.data, dtype=np.uint8)
    if msg.encoding == "32FC1":
        dt = np.dtype(">f4" if msg.is_bigendian else "<f4")
        rows = data.reshape(h, int(msg.step))[:, : 4 * w]
        return np.ascontiguousarray(rows).view(dt).reshape(h, w).astype(np.float32)
    if msg.encoding == "16UC1":
        dt = np.dtype(">u2" if msg.is_bigendian else "<u2")
        rows = data.reshape(h, int(msg.step))[:, : 2 * w]
        mm = np.ascontiguousarray(rows).view(dt).reshape(h, w).astype(np.float32)
        return np.where(mm > 0, mm / 1000.0, np.nan).astype(np.float32)
    raise ValueError(f"depth_image_to_metres: unsupported encoding {msg.encoding!r} (expected 32FC1 or 16UC1)")
