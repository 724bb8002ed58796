"""Standard monocular depth metrics (Eigen et al.; monodepth2's evaluation).

Per image, on valid pixels (finite GT with ``min_depth < gt <= max_depth``,
80 m cap by KITTI convention), predictions clamped to [min_depth, max_depth]:

* AbsRel = mean(|p - g| / g), SqRel = mean((p - g)^2 / g)
* RMSE = sqrt(mean((p - g)^2)), RMSE log = sqrt(mean((log p - log g)^2))
* delta < 1.25^k = fraction with max(p/g, g/p) < 1.25^k, k = 1, 2, 3

With median scaling, p is first multiplied by median(g)/median(p) (monodepth2).
``scale_ratio`` reports median(g/p) of the unscaled prediction: 1.0 means
metrically correct scale. Image metrics are averaged over images.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["METRIC_NAMES", "compute_depth_metrics", "MetricAccumulator", "valid_mask", "format_markdown",
           "PrequentialScorer"]

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "a1", "a2", "a3")
DEFAULT_MIN_DEPTH = 1e-3
DEFAULT_MAX_DEPTH = 80.0


def valid_mask(gt: np.ndarray, min_depth: float = DEFAULT_MIN_DEPTH,
               max_depth: float = DEFAULT_MAX_DEPTH) -> np.ndarray:
    """(H,W) bool: finite GT in (min_depth, max_depth]."""
    gt = np.asarray(gt)
    with np.errstate(invalid="ignore"):
        return np.isfinite(gt) & (gt > min_depth) & (gt <= max_depth)


def _errors(gt: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    thresh = np.maximum(gt / pred, pred / gt)
    return {
        "abs_rel": float(np.mean(np.abs(gt - pred) / gt)),
        "sq_rel": float(np.mean((gt - pred) ** 2 / gt)),
        "rmse": float(np.sqrt(np.mean((gt - pred) ** 2))),
        "rmse_log": float(np.sqrt(np.mean((np.log(gt) - np.log(pred)) ** 2))),
        "a1": float(np.mean(thresh < 1.25)),
        "a2": float(np.mean(thresh < 1.25 ** 2)),
        "a3": float(np.mean(thresh < 1.25 ** 3)),
    }


def compute_depth_metrics(gt: np.ndarray, pred: np.ndarray, median_scaling: bool = False,
                          min_depth: float = DEFAULT_MIN_DEPTH, max_depth: float = DEFAULT_MAX_DEPTH,
                          mask: np.ndarray | None = None) -> dict[str, float] | None:
    """Metrics of one image.

    Args:
        gt: (H,W) ground-truth depth, metres (+inf/NaN invalid).
        pred: (H,W) predicted depth, metres.
        median_scaling: scale pred by median(gt)/median(pred) first.
        mask: optional extra (H,W) bool mask of pixels to evaluate.
    Returns:
        dict of METRIC_NAMES plus ``scale_ratio`` = median(gt/pred) (before any
        scaling) and ``n_valid``; None when no pixel is valid.
    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    if gt.shape != pred.shape or gt.ndim != 2:
        raise ValueError(f"gt and pred must be equal (H,W) arrays, got {gt.shape} and {pred.shape}")
    valid = valid_mask(gt, min_depth, max_depth) & np.isfinite(pred)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    if not valid.any():
        return None
    g = gt[valid]
    p = np.clip(pred[valid], min_depth, max_depth)
    ratio = float(np.median(g / p))
    if median_scaling:
        p = np.clip(p * (np.median(g) / np.median(p)), min_depth, max_depth)
    out = _errors(g, p)
    out["scale_ratio"] = ratio
    out["n_valid"] = int(valid.sum())
    return out


@dataclass
class MetricAccumulator:
    """Mean of per-image metrics, with and without median scaling."""

    min_depth: float = DEFAULT_MIN_DEPTH
    max_depth: float = DEFAULT_MAX_DEPTH
    _rows: dict = field(default_factory=lambda: {False: [], True: []})

    def add(self, gt: np.ndarray, pred: np.ndarray, mask: np.ndarray | None = None) -> None:
        """Add one (H,W) GT/prediction pair."""
        for med in (False, True):
            m = compute_depth_metrics(gt, pred, med, self.min_depth, self.max_depth, mask)
            if m is not None:
                self._rows[med].append(m)

    @property
    def count(self) -> int:
        return len(self._rows[False])

    def summary(self) -> dict[str, dict[str, float]]:
        """{"raw": {...}, "median_scaled": {...}} means over images (+ ``images``)."""
        out = {}
        for med, key in ((False, "raw"), (True, "median_scaled")):
            rows = self._rows[med]
            if not rows:
                out[key] = {}
                continue
            out[key] = {k: float(np.mean([r[k] for r in rows])) for k in METRIC_NAMES + ("scale_ratio",)}
            if med:
                out[key]["scale_ratio_std"] = float(np.std([r["scale_ratio"] for r in rows]))
            out[key]["images"] = len(rows)
        return out


def format_markdown(summary: dict[str, dict[str, float]]) -> str:
    """Markdown table of a :meth:`MetricAccumulator.summary`."""
    cols = ["AbsRel", "SqRel", "RMSE", "RMSE log", "δ<1.25", "δ<1.25²", "δ<1.25³", "scale ratio"]
    keys = list(METRIC_NAMES) + ["scale_ratio"]
    lines = ["| scaling | " + " | ".join(cols) + " | images |",
             "|---|" + "---:|" * (len(cols) + 1)]
    for name, key in (("none (metric)", "raw"), ("median", "median_scaled")):
        m = summary.get(key) or {}
        if not m:
            continue
        vals = [f"{m[k]:.3f}" for k in keys]
        lines.append(f"| {name} | " + " | ".join(vals) + f" | {m.get('images', 0)} |")
    return "\n".join(lines)


class PrequentialScorer:
    """Depth predictions and ground truth matched by stamp (either may come first), each pair scored
    once with :func:`compute_depth_metrics` (metric: no median scaling), with running means.
    Prequential: a prediction is published (or, offline, computed) *before* any training step has
    seen its frame.

    The one scorer of ``mono-depth adapt`` and of the ground-truth scoring node
    (``mono_depth_ros.tools.score_node``). Not thread-safe: one thread calls every method.

    Args:
        keep: unmatched predictions / ground truths kept per side (oldest dropped first).
    """

    #: Per-frame metrics (the keys published on ``depth/metrics``).
    KEYS = ("abs_rel", "sq_rel", "rmse", "a1", "scale_ratio")

    def __init__(self, keep: int = 30):
        from collections import OrderedDict
        self.keep = int(keep)
        self._preds: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self._gts: "OrderedDict[int, np.ndarray]" = OrderedDict()
        self.frames = 0
        self.unscorable = 0
        self.mean = {k: 0.0 for k in self.KEYS}

    def add_prediction(self, stamp_ns: int, depth: np.ndarray) -> dict | None:
        """(H,W) predicted metres at ``stamp_ns``. The frame's metrics once paired, else None."""
        gt = self._gts.pop(stamp_ns, None)
        if gt is not None:
            return self._score(gt, depth)
        self._hold(self._preds, stamp_ns, depth)
        return None

    def add_ground_truth(self, stamp_ns: int, gt: np.ndarray) -> dict | None:
        """(H',W') true metres (+inf/NaN invalid; resized nearest to the prediction). Metrics once paired."""
        pred = self._preds.pop(stamp_ns, None)
        if pred is not None:
            return self._score(gt, pred)
        self._hold(self._gts, stamp_ns, gt)
        return None

    def _hold(self, store, stamp_ns: int, item: np.ndarray) -> None:
        store[stamp_ns] = item
        while len(store) > self.keep:
            store.popitem(last=False)

    def _score(self, gt: np.ndarray, pred: np.ndarray) -> dict | None:
        if gt.shape != pred.shape:
            from .preprocess import resize_depth
            gt = resize_depth(gt, pred.shape)
        m = compute_depth_metrics(gt, pred)
        if m is None:
            self.unscorable += 1
            return None
        self.frames += 1
        for k in self.KEYS:
            self.mean[k] += (m[k] - self.mean[k]) / self.frames
        return m

    def clear(self) -> None:
        """Time jumped: unmatched predictions and ground truth are forgotten."""
        self._preds.clear()
        self._gts.clear()
