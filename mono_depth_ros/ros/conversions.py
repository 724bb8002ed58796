"""Message <-> numpy conversions for the node (the cv_bridge / sensor_msgs_py part).

cv_bridge from PyPI is broken with numpy 2 and sensor_msgs_py has no wheel, so
images are decoded with rosbags.image (many encodings, incl. Bayer) and clouds
are packed from numpy structured arrays (the layout sensor_msgs_py uses).
The readers (images, camera info, stamps) live in :mod:`mono_depth_ros.msgconv`,
shared with the tools that read bags, and are re-exported here; this module adds
the writers that need rclpy's message classes. Every decoder validates sizes first
and raises :class:`InputError` naming the problem; the node logs it and keeps running.
"""
from __future__ import annotations

import numpy as np
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField

from mono_depth_ros.msgconv import (InputError, camera_info_to_K, compressed_to_rgb, image_to_rgb,  # noqa: F401
                                    stamp_to_ns)

__all__ = [
    "InputError", "stamp_to_ns", "image_to_rgb", "compressed_to_rgb", "camera_info_to_K",
    "depth_to_msg", "rgb_to_msg", "points_to_cloud", "scaled_camera_info",
]


def scaled_camera_info(K: np.ndarray, width: int, height: int, header) -> CameraInfo:
    """CameraInfo for the depth image: size (width,height), intrinsics K, no distortion."""
    out = CameraInfo()
    out.header = header
    out.width, out.height = int(width), int(height)
    out.distortion_model = "plumb_bob"
    out.d = [0.0] * 5
    out.k = [float(x) for x in K.ravel()]
    out.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    P = np.zeros((3, 4))
    P[:, :3] = K
    out.p = [float(x) for x in P.ravel()]
    return out


def depth_to_msg(depth: np.ndarray, header) -> Image:
    """(H,W) float32 metres -> 32FC1 Image (REP 118)."""
    d = np.ascontiguousarray(depth, dtype=np.float32)
    msg = Image()
    msg.header = header
    msg.height, msg.width = d.shape
    msg.encoding = "32FC1"
    msg.is_bigendian = 0
    msg.step = d.shape[1] * 4
    msg.data = d.tobytes()
    return msg


def rgb_to_msg(rgb: np.ndarray, header) -> Image:
    """(H,W,3) uint8 -> rgb8 Image."""
    a = np.ascontiguousarray(rgb, dtype=np.uint8)
    msg = Image()
    msg.header = header
    msg.height, msg.width = a.shape[:2]
    msg.encoding = "rgb8"
    msg.step = a.shape[1] * 3
    msg.data = a.tobytes()
    return msg


_CLOUD_DTYPE = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("rgb", "<u4")])
_CLOUD_FIELDS = [
    PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
    PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
    PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    # Packed 0x00RRGGBB read as FLOAT32, the PCL / RViz convention.
    PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
]


def points_to_cloud(points: np.ndarray, colors: np.ndarray | None, header) -> PointCloud2:
    """Pack points into PointCloud2 (x, y, z float32 + packed rgb), vectorised.

    Args:
        points: (H,W,3) organised (NaN = invalid) or (N,3) float32.
        colors: matching (...,3) uint8 RGB, or None (white).
    """
    organised = points.ndim == 3
    h, w = (points.shape[0], points.shape[1]) if organised else (1, points.shape[0])
    flat = points.reshape(-1, 3)
    arr = np.empty(flat.shape[0], dtype=_CLOUD_DTYPE)
    arr["x"], arr["y"], arr["z"] = flat[:, 0], flat[:, 1], flat[:, 2]
    if colors is None:
        arr["rgb"] = 0x00FFFFFF
    else:
        c = colors.reshape(-1, 3).astype(np.uint32)
        arr["rgb"] = (c[:, 0] << 16) | (c[:, 1] << 8) | c[:, 2]
    msg = PointCloud2()
    msg.header = header
    msg.height, msg.width = h, w
    msg.fields = _CLOUD_FIELDS
    msg.is_bigendian = False
    msg.point_step = _CLOUD_DTYPE.itemsize
    msg.row_step = _CLOUD_DTYPE.itemsize * w
    msg.is_dense = bool(np.isfinite(flat).all())
    msg.data = arr.tobytes()
    return msg


def cloud_to_xyz(msg: PointCloud2) -> np.ndarray:
    """PointCloud2 written by :func:`points_to_cloud` -> (height*width, 3) float32."""
    arr = np.frombuffer(bytes(msg.data), dtype=_CLOUD_DTYPE)
    return np.stack([arr["x"], arr["y"], arr["z"]], axis=1)


def message_class(msgtype: str):
    """The rclpy message class of a ROS type name, e.g. ``"nav_msgs/msg/Odometry"`` (bags and tables name
    types this way). ImportError when its package is not installed."""
    import importlib
    pkg, kind, name = msgtype.split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
