"""Depth image -> 3-D points, vectorised and allocation-light (no rclpy).

The ROS layer packs the result into sensor_msgs/PointCloud2
(:mod:`mono_depth_ros.ros.conversions`). Points are in the camera optical frame
(REP 103) unless a ``T_target_camera`` is given.
"""
from __future__ import annotations

import numpy as np

from mono_depth_ros.conventions import pixel_rays

__all__ = ["RayGrid", "depth_to_points", "voxel_downsample", "colorize_depth"]


class RayGrid:
    """:func:`mono_depth_ros.conventions.pixel_rays` for a strided pixel grid, cached per (H, W, K, stride).

    ``rays`` has shape (H', W', 3) with H' = ceil(H/stride); multiplying by
    depth gives optical-frame points.
    """

    def __init__(self):
        self._key = None
        self.rays: np.ndarray | None = None

    def get(self, height: int, width: int, K: np.ndarray, stride: int) -> np.ndarray:
        key = (height, width, stride, tuple(np.asarray(K, np.float64).ravel().round(9)))
        if key != self._key:
            self.rays = pixel_rays(K, height, width, stride)
            self._key = key
        return self.rays


def depth_to_points(depth: np.ndarray, K: np.ndarray, stride: int = 1, T_target_camera: np.ndarray | None = None,
                    rays: RayGrid | None = None) -> np.ndarray:
    """Back-project a depth image.

    Args:
        depth: (H,W) float32 metres; NaN/inf/<=0 are invalid.
        K: (3,3) pixel intrinsics of ``depth``.
        stride: keep every ``stride``-th row and column.
        T_target_camera: optional (4,4) transform applied to the points.
        rays: optional :class:`RayGrid` cache (reused across frames).
    Returns:
        (H',W',3) float32 points, NaN where the depth is invalid (organised cloud).
    """
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H,W), got {depth.shape}")
    grid = (rays or RayGrid()).get(depth.shape[0], depth.shape[1], K, stride)
    d = depth[::stride, ::stride].astype(np.float32, copy=False)
    d = np.where(np.isfinite(d) & (d > 0), d, np.nan).astype(np.float32)
    pts = grid * d[..., None]
    if T_target_camera is not None:
        T = np.asarray(T_target_camera, dtype=np.float32)
        pts = pts @ T[:3, :3].T + T[:3, 3]
    return pts


def voxel_downsample(points: np.ndarray, colors: np.ndarray | None, voxel: float):
    """Average points (and colours) per voxel of a grid aligned with the frame's axes.

    Written with numpy (one sort + bincounts) rather than open3d's ``voxel_down_sample``: for a
    per-frame cloud of 123k points open3d took 90-280 ms here, most of it converting to and from
    its float64 vectors; this takes ~13 ms (``mono-depth bench``, BENCHMARKS.md).

    Args:
        points: (N,3) float32, NaNs allowed (dropped).
        colors: (N,3) uint8 or None.
        voxel: edge length (> 0) in the points' unit.
    Returns:
        ((M,3) float32, (M,3) uint8 or None), one row per occupied voxel (sorted by voxel).
    """
    if voxel <= 0:
        raise ValueError(f"voxel size must be > 0, got {voxel}")
    ok = np.isfinite(points).all(axis=1)
    pts = points[ok].astype(np.float64, copy=False)
    if pts.shape[0] == 0:
        return np.zeros((0, 3), np.float32), (np.zeros((0, 3), np.uint8) if colors is not None else None)
    cell = np.floor(pts / voxel).astype(np.int64)
    cell -= cell.min(axis=0)
    if int(cell.max()) < (1 << 21):  # pack the three indices into one int64 key: a 1-D sort is fastest
        key = (cell[:, 0] << 42) | (cell[:, 1] << 21) | cell[:, 2]
        _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
    else:
        _, inverse, counts = np.unique(cell, axis=0, return_inverse=True, return_counts=True)
    inverse = inverse.ravel()
    m = counts.size
    out_pts = np.empty((m, 3), np.float32)
    for j in range(3):
        out_pts[:, j] = np.bincount(inverse, weights=pts[:, j], minlength=m) / counts
    out_col = None
    if colors is not None:
        col = colors[ok]
        out_col = np.empty((m, 3), np.uint8)
        for j in range(3):
            out_col[:, j] = np.bincount(inverse, weights=col[:, j], minlength=m) / counts + 0.5
    return out_pts, out_col


#: Display range of colourised depth [m]: a road scene's depths spread over it (the network's own
#: range, e.g. 0.1-100 m, would squeeze everything into the dark end of the colour map).
DISPLAY_RANGE = (2.0, 80.0)


def colorize_depth(depth: np.ndarray, min_depth: float = DISPLAY_RANGE[0],
                   max_depth: float = DISPLAY_RANGE[1]) -> np.ndarray:
    """(H,W) metres -> (H,W,3) uint8 RGB, near = bright, far = dark; invalid = black.

    Colours inverse depth (what the eye reads best) with matplotlib's magma map.
    """
    from matplotlib import colormaps

    lut = _LUT.get("magma")
    if lut is None:
        lut = _LUT["magma"] = (colormaps["magma"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    valid = np.isfinite(depth) & (depth > 0)
    d = np.clip(np.where(valid, depth, max_depth), min_depth, max_depth)
    inv = (1.0 / d - 1.0 / max_depth) / (1.0 / min_depth - 1.0 / max_depth)
    idx = np.clip(inv * 255.0, 0, 255).astype(np.uint8)
    rgb = lut[idx]
    rgb[~valid] = 0
    return rgb


_LUT: dict[str, np.ndarray] = {}
