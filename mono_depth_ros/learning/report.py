"""Pictures and 3-D outputs of an evaluation (no rclpy): depth strip PNG, fused cloud PLY."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..pointcloud import DISPLAY_RANGE, RayGrid, colorize_depth, depth_to_points, voxel_downsample

__all__ = ["depth_strip", "fused_cloud", "display_range"]


def display_range(depths: np.ndarray, percentiles: tuple[float, float] = (2.0, 98.0)) -> tuple[float, float]:
    """Colour range [m] that spreads ``depths`` (any shape, metres; NaN/inf/<=0 ignored) over the colour map.

    The 2nd..98th percentile: an indoor scene (0.5-4 m) gets the whole map instead of one colour,
    a road scene keeps roughly the fixed ``DISPLAY_RANGE``. Falls back to ``DISPLAY_RANGE`` for
    fewer than 16 valid values.
    """
    v = np.asarray(depths, dtype=np.float64)
    v = v[np.isfinite(v) & (v > 0)]
    if v.size < 16:
        return DISPLAY_RANGE
    lo, hi = np.percentile(v, percentiles)
    lo = max(float(lo), 0.05)
    return lo, max(float(hi), 1.5 * lo)


def depth_strip(images: np.ndarray, preds: np.ndarray, gts: np.ndarray, path: Path, rows: int = 4) -> Path:
    """PNG with one row per frame: image | prediction | ground truth | |pred-gt|/gt (0..0.5, inferno).

    images (N,H,W,3) uint8; preds, gts (N,H,W) metres. Prediction and ground truth share one colour
    scale, :func:`display_range` of the ground truth shown.
    """
    idx = np.linspace(0, len(images) - 1, min(rows, len(images))).astype(int)
    near, far = display_range(gts[idx])
    out = []
    for i in idx:
        gt, pred = gts[i].astype(np.float32), preds[i]
        ok = np.isfinite(gt) & (gt > 0) & (gt < 80)
        err = np.zeros_like(pred)
        err[ok] = np.abs(pred[ok] - gt[ok]) / gt[ok]
        err_rgb = cv2.applyColorMap(np.clip(err / 0.5 * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
        out.append(np.concatenate([images[i], colorize_depth(pred, near, far), colorize_depth(gt, near, far), err_rgb],
                                  axis=1))
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(out, 0), cv2.COLOR_RGB2BGR))
    return path


def fused_cloud(preds: np.ndarray, images: np.ndarray, T_world_camera: np.ndarray, K: np.ndarray, path: Path,
                stride: int = 4, voxel: float = 0.15, max_depth: float = 40.0) -> Path:
    """Back-project every prediction with its camera pose into the world frame, voxel-downsample, write PLY.

    preds (N,H,W) metres; images (N,H,W,3); T_world_camera (N,4,4) optical-frame poses; K (3,3).
    """
    import open3d as o3d
    rays = RayGrid()
    pts, cols = [], []
    for d, img, T in zip(preds, images, T_world_camera):
        d = np.where(d < max_depth, d, np.nan).astype(np.float32)
        p = depth_to_points(d, K, stride, T, rays).reshape(-1, 3)
        pts.append(p)
        cols.append(img[::stride, ::stride].reshape(-1, 3))
    p, c = voxel_downsample(np.concatenate(pts), np.concatenate(cols), voxel)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p.astype(np.float64)))
    pcd.colors = o3d.utility.Vector3dVector(c.astype(np.float64) / 255.0)
    o3d.io.write_point_cloud(str(path), pcd)
    return path
