"""Ground-truth scoring of published depth, frame by frame (ROS-free part of :mod:`.score_node`).

Predictions and ground-truth images arrive on two topics in any order; :class:`StampScorer` pairs
them by stamp, scores each pair with :func:`mono_depth_ros.metrics.compute_depth_metrics` (metric:
no median scaling) and keeps the running (prequential) mean. The node publishes a frame's depth
before any adaptation step learned from that frame, so these are prequential figures.
"""
from __future__ import annotations

from collections import OrderedDict

import numpy as np

from mono_depth_ros.metrics import compute_depth_metrics

__all__ = ["PUBLISHED_KEYS", "MEAN_KEYS", "StampScorer"]

#: Per-frame metrics published on ``depth/metrics`` (the node's keys before the scorer was split off).
PUBLISHED_KEYS = ("abs_rel", "sq_rel", "rmse", "a1", "scale_ratio")
#: Metrics kept as running means.
MEAN_KEYS = ("abs_rel", "a1", "scale_ratio")


class StampScorer:
    """Pairs (H,W) predictions with ground truth by stamp; scores each pair once.

    Not thread-safe: one thread (the scorer node's executor) calls every method.

    Args:
        max_pending: unmatched items kept per side (oldest dropped first).
    """

    def __init__(self, max_pending: int = 30):
        self.max_pending = int(max_pending)
        self._preds: OrderedDict[int, np.ndarray] = OrderedDict()
        self._gts: OrderedDict[int, np.ndarray] = OrderedDict()
        self.frames = 0
        self.unscorable = 0
        self.mean = {k: 0.0 for k in MEAN_KEYS}

    def add_prediction(self, stamp_ns: int, depth: np.ndarray) -> dict[str, float] | None:
        """(H,W) float32 predicted metres at ``stamp_ns``. Returns the frame's metrics once paired."""
        gt = self._gts.pop(stamp_ns, None)
        if gt is not None:
            return self._score(gt, depth)
        self._keep(self._preds, stamp_ns, depth)
        return None

    def add_ground_truth(self, stamp_ns: int, depth: np.ndarray) -> dict[str, float] | None:
        """(H',W') float32 true metres (+inf/NaN invalid) at ``stamp_ns``. Returns metrics once paired."""
        pred = self._preds.pop(stamp_ns, None)
        if pred is not None:
            return self._score(depth, pred)
        self._keep(self._gts, stamp_ns, depth)
        return None

    def _keep(self, store: OrderedDict, stamp_ns: int, item: np.ndarray) -> None:
        store[stamp_ns] = item
        while len(store) > self.max_pending:
            store.popitem(last=False)

    def _score(self, gt: np.ndarray, pred: np.ndarray) -> dict[str, float] | None:
        """Ground truth resized (nearest) to the prediction's size, as the node did."""
        if gt.shape != pred.shape:
            import cv2
            gt = cv2.resize(gt, (pred.shape[1], pred.shape[0]), interpolation=cv2.INTER_NEAREST)
        m = compute_depth_metrics(gt, pred)
        if m is None:
            self.unscorable += 1
            return None
        self.frames += 1
        for k in MEAN_KEYS:
            self.mean[k] += (m[k] - self.mean[k]) / self.frames
        return m
