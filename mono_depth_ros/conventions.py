"""The one module that owns frames, units, pixel and pose conventions.

Everything else in the package imports these names instead of restating them.

Frames
------
* Camera optical frame (REP 103): x right, y down, z forward. Depth is the
  z coordinate in this frame, in metres.
* Body/world frames (REP 105): ``map`` -> ``odom`` -> ``base_link``; base_link
  is x forward, y left, z up.

Transforms
----------
A rigid transform is a 4x4 homogeneous matrix named ``T_target_source``: it
maps a point expressed in ``source`` into ``target``::

    p_target = T_target_source @ p_source

This is tf2's argument order: ``lookup_transform(target, source, t)`` returns
``T_target_source``. Composition chains names: ``T_a_c = T_a_b @ T_b_c``.
For two camera poses in a world frame, the relative pose that moves points of
camera frame at time s into camera frame at time t is
``T_cam_t_cam_s = inv(T_world_cam_t) @ T_world_cam_s``.

Units
-----
Metres, seconds, radians. Stamps inside the core are integer nanoseconds
(``int``) or float seconds where noted; never mixed in one function.

Pixels
------
Pixel (u, v) = (column, row); the centre of the top-left pixel is (0, 0)
(OpenCV / ROS CameraInfo convention). K is in pixels. Resizing an image by
factors (sx, sy) maps u' = (u + 0.5) * sx - 0.5, hence
``fx' = fx*sx, cx' = (cx + 0.5)*sx - 0.5`` (see :func:`scale_intrinsics`).
Grid sampling uses ``align_corners=ALIGN_CORNERS`` with normalised coordinates
from :func:`pixels_to_grid`, consistent with that convention.
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "MAP_FRAME", "ODOM_FRAME", "BASE_FRAME", "CAMERA_LINK_FRAME",
    "CAMERA_OPTICAL_FRAME", "RIGHT_CAMERA_OPTICAL_FRAME", "ALIGN_CORNERS",
    "T_BASE_OPTICAL_ROTATION", "Topics", "scale_intrinsics", "scale_intrinsics_torch", "pixels_to_grid",
    "NS_PER_S", "to_ns", "to_sec",
]

# REP 105 frames.
MAP_FRAME = "map"
ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
# REP 103: the camera's body frame (x forward, z up) and its optical frame.
CAMERA_LINK_FRAME = "camera_link"
CAMERA_OPTICAL_FRAME = "camera_optical_frame"
RIGHT_CAMERA_OPTICAL_FRAME = "camera_right_optical_frame"

#: Rotation taking optical-frame vectors to the camera body frame
#: (x fwd, y left, z up): x_body = z_opt, y_body = -x_opt, z_body = -y_opt.
T_BASE_OPTICAL_ROTATION = np.array(
    [[0.0, 0.0, 1.0],
     [-1.0, 0.0, 0.0],
     [0.0, -1.0, 0.0]])

#: The one grid_sample alignment choice in the package (pixel centres at
#: integer coordinates; -1/+1 are the centres of the border pixels).
ALIGN_CORNERS = True

NS_PER_S = 1_000_000_000


def to_ns(sec: float) -> int:
    """Float seconds -> integer nanoseconds (rounded)."""
    return int(round(sec * NS_PER_S))


def to_sec(ns: int) -> float:
    """Integer nanoseconds -> float seconds."""
    return ns / NS_PER_S


class Topics:
    """Default topic names (relative, so namespaces and remapping apply)."""

    IMAGE = "image"
    IMAGE_COMPRESSED = "image/compressed"
    CAMERA_INFO = "camera_info"
    DEPTH = "depth"
    DEPTH_INFO = "depth/camera_info"
    DEPTH_COLORIZED = "depth/colorized"
    POINTS = "points"
    ODOM = "odom"
    IMU = "imu"
    GPS = "gps/fix"
    POSE = "pose"            # a localiser's geometry_msgs/PoseWithCovarianceStamped (AMCL, robot_localization)
    DIAGNOSTICS = "/diagnostics"

    # Topics of the synthetic drives written as bags (absolute names).
    BAG_IMAGE = "/camera/image_raw"
    BAG_CAMERA_INFO = "/camera/camera_info"
    BAG_RIGHT_IMAGE = "/camera_right/image_raw"
    BAG_RIGHT_CAMERA_INFO = "/camera_right/camera_info"
    BAG_DEPTH_GT = "/camera/depth_gt"
    BAG_POSE_GT = "/ground_truth/camera_pose"
    BAG_ODOM = "/odom"
    BAG_IMU = "/imu/data"
    BAG_GPS = "/gps/fix"
    BAG_TF = "/tf"
    BAG_TF_STATIC = "/tf_static"
    BAG_POSE = "/pose"


def scale_intrinsics(K: np.ndarray, sx: float, sy: float) -> np.ndarray:
    """Intrinsics of an image resized by (sx, sy) = (W'/W, H'/H).

    Args:
        K: (3,3) pixel intrinsics.
    Returns:
        (3,3) intrinsics of the resized image (pixel-centre convention above).

    >>> scale_intrinsics(np.array([[100., 0, 49.5], [0, 100., 9.5], [0, 0, 1]]), 0.5, 0.5)[0]
    array([50. ,  0. , 24.5])
    """
    K = np.asarray(K, dtype=np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"K must be (3,3), got {K.shape}")
    out = K.copy()
    out[0, 0] *= sx
    out[0, 1] *= sx
    out[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    out[1, 1] *= sy
    out[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return out


def scale_intrinsics_torch(K, sx: float, sy: float):
    """:func:`scale_intrinsics` for a torch (B,3,3) batch (same pixel-centre rule)."""
    out = K.clone()
    out[:, 0, 0] = K[:, 0, 0] * sx
    out[:, 0, 1] = K[:, 0, 1] * sx
    out[:, 0, 2] = (K[:, 0, 2] + 0.5) * sx - 0.5
    out[:, 1, 1] = K[:, 1, 1] * sy
    out[:, 1, 2] = (K[:, 1, 2] + 0.5) * sy - 0.5
    return out


def pixels_to_grid(u, v, width: int, height: int):
    """Pixel coordinates -> grid_sample coordinates in [-1, 1].

    Works on numpy arrays or torch tensors of any matching shape. Uses the
    package-wide ``ALIGN_CORNERS = True`` convention.
    """
    gx = u / max(width - 1, 1) * 2.0 - 1.0
    gy = v / max(height - 1, 1) * 2.0 - 1.0
    return gx, gy
