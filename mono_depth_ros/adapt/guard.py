"""The adaptation guard: is a batch's outcome healthy? Returns a :class:`Verdict`.

A loss spike against its running average, a disparity map that collapses toward a flat one,
explodes, or saturates at the near limit, a candidate that does clearly worse than the served
weights on the same batch, or non-finite steps in a row: each is a verdict the engine answers
with a rollback to the last good weights. The running levels are exponential moving averages of
the healthy steps' values.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

__all__ = ["Verdict", "Health", "Guard"]


class Verdict(str, enum.Enum):
    """Outcome of judging a step (a ``str``: logs and serialises as its value)."""

    OK = "ok"
    SPIKE = "spike"                # loss > spike_factor x its running mean
    COLLAPSE = "collapse"          # disparity std/mean far below its running level (flat map)
    EXPLODED = "exploded"          # ... far above it
    SATURATED = "saturated"        # a large share of pixels newly at the near limit
    REGRESSED = "regressed"        # clearly worse than the served weights on the same batch
    NONFINITE = "nonfinite"        # non-finite loss/gradient several steps in a row


@dataclass
class Health:
    """What the guard judges of one batch: the judged loss (photometric + smoothness), the first
    sample's disparity std/mean, and its share of pixels nearer than twice the minimum depth."""

    loss: float = math.nan
    disp_cv: float = math.nan
    near: float = 0.0


class Guard:
    """Judges healthy vs degenerate steps against running levels.

    Thread: the training thread only (under the engine's training lock).

    Args:
        cfg: an :class:`~mono_depth_ros.adapt.engine.AdaptConfig` (spike_factor, warmup_steps,
            collapse_ratio, min_disp_cv, max_near_fraction, loss_ema, regress_factor).
    """

    def __init__(self, cfg):
        self.cfg = cfg
        self.accepted = 0                  # healthy steps so far (the spike test waits for warmup_steps)
        self.loss_avg: float | None = None
        self.cv_avg: float | None = None
        self.near_avg: float | None = None

    def judge(self, h: Health, spike: bool = True) -> Verdict:
        """The verdict on ``h`` (no state change).

        Flat maps (collapse) and maps newly saturated at the near limit (nothing on a road
        is within 2*min_depth of the camera: a fifth more of the image there than usual) are
        both garbage; both are judged against the network's own running level.
        """
        cfg = self.cfg
        if self.near_avg is not None and h.near > max(cfg.max_near_fraction, self.near_avg + cfg.max_near_fraction):
            return Verdict.SATURATED
        if not math.isfinite(h.disp_cv) or h.disp_cv < cfg.min_disp_cv or (
                self.cv_avg is not None and h.disp_cv < cfg.collapse_ratio * self.cv_avg):
            return Verdict.COLLAPSE
        if self.cv_avg is not None and h.disp_cv > self.cv_avg / cfg.collapse_ratio:
            return Verdict.EXPLODED
        if (spike and self.accepted >= cfg.warmup_steps and self.loss_avg is not None
                and h.loss > cfg.spike_factor * self.loss_avg):
            return Verdict.SPIKE
        return Verdict.OK

    def regressed(self, loss: float, served_loss: float) -> bool:
        """The paired test: a candidate clearly worse than the served weights on the same batch."""
        return loss > self.cfg.regress_factor * served_loss

    def accept(self, h: Health) -> None:
        """Fold a healthy step's values into the running levels."""
        a = self.cfg.loss_ema
        self.accepted += 1
        self.loss_avg = h.loss if self.loss_avg is None else a * self.loss_avg + (1 - a) * h.loss
        self.cv_avg = h.disp_cv if self.cv_avg is None else a * self.cv_avg + (1 - a) * h.disp_cv
        self.near_avg = h.near if self.near_avg is None else a * self.near_avg + (1 - a) * h.near

    def reset(self) -> None:
        """Forget the running levels (weights reset to the start)."""
        self.loss_avg = self.cv_avg = self.near_avg = None
