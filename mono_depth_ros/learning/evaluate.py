"""Evaluate a depth network on drives with ground-truth depth, through the node's inference path.

Every frame goes through :meth:`mono_depth_ros.inference.DepthPredictor.predict`, the call the
node makes for each image: the same resize (:mod:`mono_depth_ros.preprocess`), backend and
canonical-camera conversion. What is scored is exactly the depth the node publishes, at network
resolution; the ground truth is brought to that grid by nearest neighbour (:func:`mono_depth_ros.preprocess.resize_depth`), as the
node's own prequential scoring does.

Where a drive carries the synthetic world's ground-truth mask of moving objects
(:attr:`BagFrames.dynamic_masks`), :func:`evaluate_regions` also scores the dynamic and the static
pixels apart, on the same predictions (docs/learning.md, "Moving objects").
"""
from __future__ import annotations

import numpy as np

from ..inference import DepthPredictor, Prediction
from ..metrics import DEFAULT_MAX_DEPTH, MetricAccumulator
from ..preprocess import resize_depth
from .data import BagFrames

__all__ = ["predict_frames", "evaluate_frames", "evaluate_regions", "REGIONS"]

#: The pixel sets :func:`evaluate_regions` scores: every valid pixel, the static ones, the moving ones.
REGIONS = ("all", "static", "dynamic")


def predict_frames(predictor: DepthPredictor, images: np.ndarray, K: np.ndarray) -> list[Prediction]:
    """(N,H,W,3) uint8 frames of one camera with (3,3) K -> N :class:`Prediction` (what the node publishes)."""
    return [predictor.predict(img, K) for img in images]


def evaluate_frames(predictor: DepthPredictor, drives: list[BagFrames], stride: int = 1,
                    max_frames: int | None = None, max_depth: float = DEFAULT_MAX_DEPTH) -> MetricAccumulator:
    """Accumulate metrics over every ``stride``-th frame (at most ``max_frames`` per drive).

    Each drive's own K goes with its frames (network-size K and the canonical camera follow from it).
    """
    return evaluate_regions(predictor, drives, stride, max_frames, max_depth)["all"]


def evaluate_regions(predictor: DepthPredictor, drives: list[BagFrames], stride: int = 1,
                     max_frames: int | None = None,
                     max_depth: float = DEFAULT_MAX_DEPTH) -> dict[str, MetricAccumulator]:
    """:func:`evaluate_frames` plus the ground-truth dynamic and static pixels apart.

    Returns:
        {"all": ..., "static": ..., "dynamic": ...} accumulators over the same predictions. "static"
        and "dynamic" hold the frames of the drives with :attr:`BagFrames.dynamic_masks` (the mask
        brought to the depth's grid by nearest neighbour); a frame without a moving pixel adds no
        "dynamic" row (per-image means, as every metric here).
    """
    accs = {k: MetricAccumulator(max_depth=max_depth) for k in REGIONS}
    for drive in drives:
        if drive.depths is None:
            raise ValueError(f"{drive.source}: no ground-truth depth to evaluate against")
        idx = np.arange(0, len(drive), max(1, int(stride)))
        if max_frames is not None:
            idx = idx[:max_frames]
        for k in idx:
            depth = predictor.predict(drive.images[k], drive.K).depth
            gt = resize_depth(drive.depths[k].astype(np.float32), depth.shape)
            accs["all"].add(gt, depth)
            if drive.dynamic_masks is not None:
                moving = resize_depth(drive.dynamic_masks[k].astype(np.float32), depth.shape) > 0.5
                accs["static"].add(gt, depth, ~moving)
                accs["dynamic"].add(gt, depth, moving)
    return accs
