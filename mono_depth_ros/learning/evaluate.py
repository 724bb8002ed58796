"""Evaluate a depth network on drives with ground-truth depth, through the node's inference path.

Every frame goes through :meth:`mono_depth_ros.inference.DepthPredictor.predict`, the call the
node makes for each image: the same resize (:mod:`mono_depth_ros.preprocess`), backend and
canonical-camera conversion. What is scored is exactly the depth the node publishes, at network
resolution; the ground truth is brought to that grid by nearest neighbour (:func:`mono_depth_ros.preprocess.resize_depth`), as the
node's own prequential scoring does.
"""
from __future__ import annotations

import numpy as np

from ..inference import DepthPredictor, Prediction
from ..metrics import DEFAULT_MAX_DEPTH, MetricAccumulator
from ..preprocess import resize_depth
from .data import BagFrames

__all__ = ["predict_frames", "evaluate_frames"]


def predict_frames(predictor: DepthPredictor, images: np.ndarray, K: np.ndarray) -> list[Prediction]:
    """(N,H,W,3) uint8 frames of one camera with (3,3) K -> N :class:`Prediction` (what the node publishes)."""
    return [predictor.predict(img, K) for img in images]


def evaluate_frames(predictor: DepthPredictor, drives: list[BagFrames], stride: int = 1,
                    max_frames: int | None = None, max_depth: float = DEFAULT_MAX_DEPTH) -> MetricAccumulator:
    """Accumulate metrics over every ``stride``-th frame (at most ``max_frames`` per drive).

    Each drive's own K goes with its frames (network-size K and the canonical camera follow from it).
    """
    acc = MetricAccumulator(max_depth=max_depth)
    for drive in drives:
        if drive.depths is None:
            raise ValueError(f"{drive.source}: no ground-truth depth to evaluate against")
        idx = np.arange(0, len(drive), max(1, int(stride)))
        if max_frames is not None:
            idx = idx[:max_frames]
        for k in idx:
            depth = predictor.predict(drive.images[k], drive.K).depth
            acc.add(resize_depth(drive.depths[k].astype(np.float32), depth.shape), depth)
    return acc
