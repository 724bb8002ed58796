"""Evaluate a depth network on drives with ground-truth depth."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..canonical import CanonicalCamera, run_canonical
from ..conventions import scale_intrinsics
from ..metrics import DEFAULT_MAX_DEPTH, MetricAccumulator
from ..models import DepthNet, infer_depth
from .data import BagFrames

__all__ = ["predict_depth", "evaluate_frames"]


@torch.no_grad()
def predict_depth(model: DepthNet, images: np.ndarray, input_size: tuple[int, int] | None = None,
                  K: np.ndarray | None = None, canonical: CanonicalCamera | None = None) -> np.ndarray:
    """Depth of (B,H,W,3) uint8 images -> (B,H,W) float32 metres at the images' resolution.

    The network runs at ``input_size`` (H, W) (default: the images' size);
    predictions are resized back bilinearly. With ``canonical`` (the weights' training camera)
    and ``K`` ((3,3) intrinsics of the images), depth is converted to the real camera
    (:func:`mono_depth_ros.canonical.run_canonical`, as the node does).
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    if canonical is None:
        return infer_depth(model, x, input_size)[:, 0].numpy().astype(np.float32)
    if K is None:
        raise ValueError("predict_depth: a canonical camera needs the images' intrinsics K")
    H, W = images.shape[1:3]
    h, w = tuple(input_size) if input_size is not None else (H, W)
    K_net = scale_intrinsics(K, w / W, h / H)
    depth = run_canonical(lambda t: infer_depth(model, t), F.interpolate(x, size=(h, w), mode="area")
                          if (h, w) != (H, W) else x, K_net, canonical)
    if (h, w) != (H, W):
        depth = F.interpolate(depth, size=(H, W), mode="bilinear", align_corners=False)
    return depth[:, 0].numpy().astype(np.float32)


def evaluate_frames(model: DepthNet, drives: list[BagFrames], input_size: tuple[int, int] | None = None,
                    stride: int = 1, max_frames: int | None = None, max_depth: float = DEFAULT_MAX_DEPTH,
                    batch_size: int = 8, canonical: CanonicalCamera | None = None) -> MetricAccumulator:
    """Accumulate metrics over every ``stride``-th frame (at most ``max_frames`` per drive).

    ``canonical``: the weights' training camera; each drive's own K converts the depth.
    """
    acc = MetricAccumulator(max_depth=max_depth)
    for drive in drives:
        if drive.depths is None:
            raise ValueError(f"{drive.source}: no ground-truth depth to evaluate against")
        idx = np.arange(0, len(drive), max(1, int(stride)))
        if max_frames is not None:
            idx = idx[:max_frames]
        for start in range(0, len(idx), batch_size):
            chunk = idx[start:start + batch_size]
            pred = predict_depth(model, drive.images[chunk], input_size, drive.K, canonical)
            for p, k in zip(pred, chunk):
                acc.add(drive.depths[k].astype(np.float32), p)
    return acc
