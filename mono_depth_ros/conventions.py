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
    "T_BASE_OPTICAL_ROTATION", "Topics", "scale_intrinsics", "pixel_rays", "pixels_to_grid", "grid_scale",
    "QUATERNION_NORM_TOLERANCE", "quaternion_is_unit", "transform_matrix", "stereo_baseline_from_P",
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
    RIGHT_IMAGE = "right/image"               # stereo adaptation (adapt_stereo): a rectified right camera
    RIGHT_CAMERA_INFO = "right/camera_info"
    DEPTH = "depth"
    DEPTH_INFO = "depth/camera_info"
    CAMERA_INFO_CALIBRATED = "camera_info_calibrated"   # adapt_intrinsics: the learned K
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
    BAG_DYNAMIC_MASK_GT = "/camera/dynamic_mask_gt"   # mono8, 255 = independently moving (synthetic ground truth)
    BAG_POSE_GT = "/ground_truth/camera_pose"
    BAG_ODOM = "/odom"
    BAG_IMU = "/imu/data"
    BAG_GPS = "/gps/fix"
    BAG_TF = "/tf"
    BAG_TF_STATIC = "/tf_static"
    BAG_POSE = "/pose"


def scale_intrinsics(K, sx: float, sy: float):
    """Intrinsics of an image resized by (sx, sy) = (W'/W, H'/H).

    Args:
        K: (3,3) or (...,3,3) pixel intrinsics, numpy (computed in float64) or torch (its own dtype,
            e.g. a (B,3,3) batch).
    Returns:
        intrinsics of the resized image (pixel-centre convention above), same type and shape.

    >>> scale_intrinsics(np.array([[100., 0, 49.5], [0, 100., 9.5], [0, 0, 1]]), 0.5, 0.5)[0]
    array([50. ,  0. , 24.5])
    """
    if hasattr(K, "clone"):  # torch
        out = K.clone()
    else:
        K = np.asarray(K, dtype=np.float64)
        out = K.copy()
    if K.shape[-2:] != (3, 3):
        raise ValueError(f"K must be (3,3) or (...,3,3), got {tuple(K.shape)}")
    out[..., 0, 0] = K[..., 0, 0] * sx
    out[..., 0, 1] = K[..., 0, 1] * sx
    out[..., 0, 2] = (K[..., 0, 2] + 0.5) * sx - 0.5
    out[..., 1, 1] = K[..., 1, 1] * sy
    out[..., 1, 2] = (K[..., 1, 2] + 0.5) * sy - 0.5
    return out


def pixel_rays(K, height: int, width: int, stride: int = 1):
    """Unit-depth rays ``K^-1 [u, v, 1]`` of the pixel grid (pixel centres at integers, skew honoured).

    The one ray grid of the package: the point cloud (:class:`mono_depth_ros.pointcloud.RayGrid`),
    the warping camera (:meth:`mono_depth_ros.geometry.PinholeCamera.rays`) and the renderer use it.

    Args:
        K: (3,3) numpy, or (...,3,3) torch (any device) pixel intrinsics.
        stride: every ``stride``-th row and column (rows 0, s, 2s, ...).
    Returns:
        (H',W',3) float32 numpy, or (...,H',W',3) torch in K's dtype: optical-frame directions with
        z = 1 (times depth = points), H' = ceil(H/stride). Computed in float64 either way.

    >>> pixel_rays(np.array([[2., 0, 0.5], [0, 2., 0.5], [0, 0, 1]]), 2, 2)[1, 1]
    array([0.25, 0.25, 1.  ], dtype=float32)
    """
    if hasattr(K, "clone"):  # torch
        import torch
        Kd = K.to(torch.float64)[..., None, None, :, :]   # differentiable in K (learned intrinsics)
        v = torch.arange(0, height, stride, dtype=torch.float64, device=K.device)
        u = torch.arange(0, width, stride, dtype=torch.float64, device=K.device)
        v, u = torch.meshgrid(v, u, indexing="ij")
        y = (v - Kd[..., 1, 2]) / Kd[..., 1, 1]
        x = (u - Kd[..., 0, 2] - Kd[..., 0, 1] * y) / Kd[..., 0, 0]
        return torch.stack([x, y, torch.ones_like(x)], dim=-1).to(K.dtype)
    K = np.asarray(K, dtype=np.float64)
    v, u = np.mgrid[0:height:stride, 0:width:stride].astype(np.float64)
    y = (v - K[1, 2]) / K[1, 1]
    x = (u - K[0, 2] - K[0, 1] * y) / K[0, 0]
    return np.stack([x, y, np.ones_like(x)], axis=-1).astype(np.float32)


#: tf2's QUATERNION_NORMALIZATION_TOLERANCE on |norm^2 - 1|: above it a quaternion is not a rotation
#: (a publisher bug, refused); below it it is normalised.
QUATERNION_NORM_TOLERANCE = 0.01


def quaternion_is_unit(q, tol: float = QUATERNION_NORM_TOLERANCE) -> bool:
    """(4,) quaternion: finite and |norm^2 - 1| <= ``tol`` (tf2's rule)."""
    q = np.asarray(q, dtype=np.float64)
    with np.errstate(over="ignore"):             # |q| ~ 1e200: norm^2 = inf, refused
        return bool(np.all(np.isfinite(q)) and abs(float(np.dot(q, q)) - 1.0) <= tol)


def transform_matrix(translation, rotation_xyzw, tol: float | None = QUATERNION_NORM_TOLERANCE) -> np.ndarray:
    """(3,) translation and (4,) x, y, z, w quaternion -> (4,4) homogeneous ``T_parent_child``.

    The quaternion is normalised. ``tol``: refuse quaternions with |norm^2 - 1| above it
    (None: any finite non-zero quaternion). Raises ValueError on bad input.
    """
    from scipy.spatial.transform import Rotation

    t = np.asarray(translation, dtype=np.float64)
    q = np.asarray(rotation_xyzw, dtype=np.float64)
    if t.shape != (3,) or q.shape != (4,) or not (np.all(np.isfinite(t)) and np.all(np.isfinite(q))):
        raise ValueError(f"non-finite or malformed transform: t={t}, q={q}")
    n = np.linalg.norm(q)
    if tol is not None and abs(n * n - 1.0) > tol:
        raise ValueError(f"quaternion of norm {n:.4g} is not a rotation (|norm^2 - 1| > {tol})")
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q / n).as_matrix()
    T[:3, 3] = t
    return T


def stereo_baseline_from_P(P) -> float:
    """Baseline (m) of a right camera from its CameraInfo P (3,4) (REP 104: P[0,3] = -fx * baseline).

    Its transform is :func:`mono_depth_ros.geometry.stereo_T_source_target`."""
    P = np.asarray(P, dtype=np.float64).reshape(3, 4)
    return float(-P[0, 3] / P[0, 0])


def grid_scale(width: int, height: int) -> tuple[float, float]:
    """(sx, sy): grid_sample coordinate = pixel coordinate * s - 1 (``ALIGN_CORNERS = True``)."""
    return 2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)


def pixels_to_grid(u, v, width: int, height: int):
    """Pixel coordinates -> grid_sample coordinates in [-1, 1].

    Works on numpy arrays or torch tensors of any matching shape. Uses the
    package-wide ``ALIGN_CORNERS = True`` convention (:func:`grid_scale`).
    """
    sx, sy = grid_scale(width, height)
    return u * sx - 1.0, v * sy - 1.0
