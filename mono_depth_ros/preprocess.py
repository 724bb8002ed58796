"""The one preprocessing of camera images for the depth network (node, adaptation, tools).

Every path that feeds a network an image -- the node's :class:`~mono_depth_ros.inference.DepthPredictor`,
``mono-depth evaluate``, training and the adaptation engine -- resizes and converts with these two
functions, so a frame gives the same tensor everywhere::

    small = resize_rgb(rgb, (h, w))       # (H,W,3) uint8 -> (h,w,3) uint8
    gt = resize_depth(depth, (h, w))      # (H,W) metres -> (h,w), nearest
    x = to_tensor(small, device)          # (h,w,3) or (B,h,w,3) uint8 -> (B,3,h,w) float in [0,1]
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

__all__ = ["resize_rgb", "resize_rgb_batch", "resize_depth", "to_tensor"]


def resize_rgb(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H,W,C) uint8 -> (h,w,C) uint8 at ``size`` = (h, w); the input itself when it already has that size.

    Area averaging when shrinking (no aliasing), bilinear when enlarging (OpenCV's area filter
    degenerates to nearest neighbour there). Intrinsics scale with
    :func:`mono_depth_ros.conventions.scale_intrinsics` (w/W, h/H).
    """
    h, w = int(size[0]), int(size[1])
    if rgb.shape[:2] == (h, w):
        return rgb
    interp = cv2.INTER_AREA if h < rgb.shape[0] else cv2.INTER_LINEAR
    return cv2.resize(rgb, (w, h), interpolation=interp)


def resize_rgb_batch(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N,H,W,C) uint8 -> (N,h,w,C) uint8 with :func:`resize_rgb` per image."""
    if images.shape[1:3] == tuple(size):
        return images
    return np.stack([resize_rgb(im, size) for im in images])


def resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H,W) depth (e.g. ground truth) -> (h,w) at ``size`` = (h, w), nearest neighbour: no depth is
    averaged across an edge and +inf sky / NaN stay exact. The input itself when it has that size."""
    h, w = int(size[0]), int(size[1])
    if depth.shape[:2] == (h, w):
        return depth
    return cv2.resize(depth, (w, h), interpolation=cv2.INTER_NEAREST)


def to_tensor(images: np.ndarray | torch.Tensor, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H,W,3) or (B,H,W,3) uint8 -> (B,3,H,W) float32 in [0,1] on ``device``.

    A uint8 torch tensor (B,3,H,W) (frames already stored channel-first) is converted too.
    """
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise ValueError(f"expected (H,W,3) or (B,H,W,3) RGB, got {images.shape}")
        if images.dtype != np.uint8:
            raise ValueError(f"expected uint8 RGB, got {images.dtype}")
        if not images.flags.writeable:  # views of message buffers are read-only; torch wants writable memory
            images = images.copy()
        t = torch.from_numpy(images).to(device).permute(0, 3, 1, 2)
    else:
        if images.dtype != torch.uint8:
            raise ValueError(f"expected a uint8 tensor, got {images.dtype}")
        t = images.to(device)
    return t.float().div_(255.0)
