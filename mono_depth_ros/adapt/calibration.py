"""Focal length from turns: the intrinsics fitted on a buffer of wide, turning frame pairs.

Why a calibration of its own (issue 16 item 3; docs/learning.md, "Session 8: calibration on turning pairs").
Learned with the training loss, one batch per step, the focal length stalls (+20% -> +13.9% over a 2-minute
drive, SYNTHETIC): forward motion's flow ``(u - cx) tz / (Z - tz)`` does not depend on f, and only a
rotation shows it (yaw: ``f * omega``, independent of depth). Between neighbouring frames the synthetic
drive turns 0.3 degrees (~2 px of flow; a 20% focal error moves it 0.4 px), the principal point's error
enters with a sign that follows the turn's direction, and Adam's steps follow the latest batches.

Here the problem is posed where the focal length shows: pairs about half a second apart (1.5-1.7 degrees
of yaw on that drive), the largest turns of each direction kept in a balanced buffer, the depth of each
target from the current network (detached), and fx, fy, cx, cy fitted together by Adam on that fixed
set at half resolution (monodepth2's per-pixel minimum of the warped and the unwarped source's
SSIM+L1, so nothing is gained by masking pixels away). fy is a nuisance parameter here: with a camera
pitched against its motion the focus of expansion ties fy to cy, and a free fy absorbs that; the
focal scale served is fx's. Prototype (ground-truth poses, a network adapted on the drive): from
fx +20% / -15% with the principal point 0.5% of the width off, fx ends within 0.8% and the principal
point within 0.1% of the width. A principal point 3-5% of the width off is outside this fit's reach
(the warp's basin): the training loss brings it within 1% first (``intrinsics_focal_warmup``). After the
first accepted fit the engine leaves the principal point to the fits as well: the training loss's gradient,
with the network free to bend the road's depth, walks cy 1% of the width off even from the true value
(SYNTHETIC, docs/learning.md), and the network's metric scale follows cy.

The network's depth is not the truth, and a fit that holds it pays for its errors with the focal length: the
turns' sideways flow ``f tx / Z`` (a network adapted with the true K pulled f +2.9%). So the depth of each pair
is freed on a coarse grid during the fit (``depth_grid``) and thrown away after: with the poses known a depth
error moves a pixel along its epipolar line and a focal error across it (two-view self-calibration). With it
the 2-minute drive ends at f +0.16% (docs/learning.md, "Session 9"; ground-truth poses). Each fit starts at 1/8
and 1/4 of the size (``coarse``): a principal point far off is outside the warp's basin at the fit's own size.

Not a library's job: kornia has no self-calibration from known motion, and this is ~100 lines on the
project's own warp and photometric error (the training loss's maths), which must stay identical.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from mono_depth_ros.conventions import scale_intrinsics
from mono_depth_ros.geometry import PinholeCamera, warp
from mono_depth_ros.losses import photometric_error

from .intrinsics import corrected_K

__all__ = ["CalibrationPair", "CalibrationResult", "IntrinsicsCalibrator", "yaw_of"]


def yaw_of(T_source_target: np.ndarray) -> float:
    """Signed rotation (rad) about the optical frame's y axis (down: the vehicle's yaw) of a (4,4) pose."""
    from scipy.spatial.transform import Rotation
    return float(Rotation.from_matrix(np.asarray(T_source_target, dtype=np.float64)[:3, :3]).as_rotvec()[1])


@dataclass(frozen=True)
class CalibrationPair:
    """target, source: (3,h,w) uint8 at training size; T_source_target (4,4) float32; K (3,3) float32 (reported
    K of the target's size); yaw in rad."""
    stamp_ns: int
    target: torch.Tensor
    source: torch.Tensor
    T_source_target: torch.Tensor
    K: torch.Tensor
    yaw: float


@dataclass
class CalibrationResult:
    accepted: bool
    loss_before: float
    loss_after: float
    log_f: tuple[float, float]          # fitted (log fx, log fy) ratios to the reported K
    c: tuple[float, float]              # fitted principal point offsets (image sizes)
    pairs: int
    seconds: float
    log_depth_scale: float = 0.0        # median log correction of the network's depth (``depth_grid``; 0 without)


class IntrinsicsCalibrator:
    """Balanced buffer of turning pairs + the fit (module docstring).

    Args:
        per_direction: pairs kept per turn direction (the largest |yaw| seen).
        min_yaw_deg: pairs turning less are not kept.
        min_per_direction: a fit needs this many pairs of each direction (their principal-point
            couplings cancel); 0: pairs of one direction are enough (at least 2).
        downsample: the fit's image size divisor (the warp and the loss at 1/downsample).
        iterations, lr, min_lr: Adam on the four parameters, cosine from ``lr`` to ``min_lr``.
        max_change_log_f, max_change_c: the largest change one fit makes to log f and to the principal
            point (image sizes); the correction's own overall bounds apply after.
        far_m: > 0: only pixels farther than this (by the network's depth) count: their flow is the rotation's,
            whatever the depth's error (0: every pixel).
        shared_focal: the fit's fy follows fx (else fy is a free nuisance).
        depth_grid: > 0: each pair's depth gets a free log-depth correction on a grid of cells this many pixels
            (at the fit's size) wide, bilinear between cells, fitted with the intrinsics (lr ``depth_grid_lr``)
            and thrown away (a nuisance). With the poses known, a depth error moves a pixel only along its
            epipolar line, a focal error moves it across (two-view self-calibration): with the depth free, the
            network's depth errors stay out of f. Measured (SYNTHETIC, docs/learning.md): a network adapted on
            the drive with the true K pulls the fit to f +2.9% with its depth held, +0.3% with the grid; the
            unadapted network -17% and -0.6%. 0: the network's depth as it is.
        coarse: downsample factors fitted first, coarse to fine (e.g. (8, 4)), each from the last; the fit's
            own level (``downsample``) comes last and judges the result.
    """

    def __init__(self, per_direction: int = 8, min_yaw_deg: float = 0.5, min_per_direction: int = 2,
                 downsample: int = 2, iterations: int = 80, lr: float = 0.01, min_lr: float = 5e-4,
                 max_change_log_f: float = 0.1, max_change_c: float = 0.02, far_m: float = 0.0,
                 shared_focal: bool = False, depth_grid: int = 8, depth_grid_lr: float = 0.05,
                 coarse: tuple[int, ...] = ()):
        if per_direction < max(min_per_direction, 1) or min_per_direction < 0 or downsample < 1 or iterations < 1:
            raise ValueError("per_direction >= 1, per_direction >= min_per_direction >= 0, downsample >= 1, "
                             "iterations >= 1 required")
        self.per_direction, self.min_per_direction = int(per_direction), int(min_per_direction)
        self.min_yaw = math.radians(min_yaw_deg)
        self.downsample, self.iterations = int(downsample), int(iterations)
        self.lr, self.min_lr = float(lr), float(min_lr)
        self.max_change_log_f, self.max_change_c = float(max_change_log_f), float(max_change_c)
        self.far_m = float(far_m)
        self.shared_focal = bool(shared_focal)
        self.depth_grid, self.depth_grid_lr = int(depth_grid), float(depth_grid_lr)
        self.coarse = tuple(int(v) for v in coarse)
        self.pairs: dict[int, list[CalibrationPair]] = {1: [], -1: []}   # by the sign of the yaw
        self.offered = 0
        self.fits = 0
        self.accepted = 0
        self.last: CalibrationResult | None = None

    # ---------------------------------------------------------------- the buffer
    def offer(self, stamp_ns: int, target: torch.Tensor, source: torch.Tensor, T_source_target: torch.Tensor,
              K: torch.Tensor) -> bool:
        """Keep the pair if it turns enough and more than the least-turning kept pair of its direction.
        True when kept."""
        self.offered += 1
        if not bool(torch.isfinite(T_source_target).all()):
            return False
        yaw = yaw_of(T_source_target.double().numpy())
        if abs(yaw) < self.min_yaw:
            return False
        side = self.pairs[1 if yaw > 0 else -1]
        pair = CalibrationPair(int(stamp_ns), target, source, T_source_target.float(), K.float(), yaw)
        if len(side) < self.per_direction:
            side.append(pair)
            return True
        weakest = min(range(len(side)), key=lambda i: abs(side[i].yaw))
        if abs(yaw) <= abs(side[weakest].yaw):
            return False
        side[weakest] = pair
        return True

    def ready(self) -> bool:
        n = [len(s) for s in self.pairs.values()]
        return min(n) >= self.min_per_direction and sum(n) >= max(2, self.min_per_direction)

    def counts(self) -> tuple[int, int]:
        """Pairs kept per turn direction: (positive, negative) rotation about the optical y axis."""
        return len(self.pairs[1]), len(self.pairs[-1])

    # ---------------------------------------------------------------- the fit
    def _loss(self, p: torch.Tensor, K0: torch.Tensor, size: tuple[int, int], depth, tgt, src, T, identity,
              grid: torch.Tensor | None = None):
        """Mean over pairs of the per-pixel min(warped-source error, unwarped-source error).

        p: (4,) log fx, log fy, cx offset (units of W), cy offset (units of H); K0 (B,3,3) reported K at ``size``;
        depth (B,1,h,w), tgt / src (B,3,h,w), identity (B,1,h,w) at the fit's size; grid (B,1,gh,gw) log-depth
        correction (``depth_grid``) or None."""
        H, W = size
        h, w = depth.shape[-2:]
        focal = torch.exp(p[[0, 0]] if self.shared_focal else p[:2])
        K = scale_intrinsics(corrected_K(K0, focal, p[2:], W, H), w / W, h / H)
        if grid is not None:
            depth = depth * torch.exp(F.interpolate(grid, (h, w), mode="bilinear", align_corners=False))
        warped, _ = warp(src, depth, T, PinholeCamera(K, h, w), valid=False)
        err = torch.minimum(photometric_error(warped, tgt), identity)
        if self.far_m <= 0:
            return err.mean()
        w_ = (depth > self.far_m).to(err.dtype)
        return (err * w_).sum() / w_.sum().clamp_min(1.0)

    def _level(self, ds: int, K0, size, depth, tgt_full, src_full, T) -> tuple:
        """The loss's arguments at 1/ds of the training size: images area-pooled, depth nearest."""
        tgt, src = (F.avg_pool2d(x, ds) if ds > 1 else x for x in (tgt_full, src_full))
        depth = F.interpolate(depth, tgt.shape[-2:], mode="nearest") if ds > 1 else depth
        return K0, size, depth, tgt, src, T, photometric_error(src, tgt)

    def _optimize(self, start: torch.Tensor, args: tuple) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Adam on the four numbers (and the depth's grid) from ``start``: (4,) fitted, (B,1,gh,gw) grid or None."""
        p = start.clone().requires_grad_(True)
        groups = [{"params": [p], "lr": self.lr}]
        grid = None
        if self.depth_grid > 0:
            h, w = args[2].shape[-2:]
            grid = torch.zeros(args[2].shape[0], 1, max(1, round(h / self.depth_grid)),
                               max(1, round(w / self.depth_grid)), requires_grad=True)
            groups.append({"params": [grid], "lr": self.depth_grid_lr})
        opt = torch.optim.Adam(groups)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.iterations, eta_min=self.min_lr)
        for _ in range(self.iterations):
            opt.zero_grad(set_to_none=True)
            loss = self._loss(p, *args, grid=grid)
            if not torch.isfinite(loss):
                break
            loss.backward()
            opt.step()
            sched.step()
        return p.detach(), None if grid is None else grid.detach()

    def fit(self, depth_fn, log_f: tuple[float, float], c: tuple[float, float]) -> CalibrationResult | None:
        """Fit the intrinsics on the buffered pairs, starting from the current correction.

        Args:
            depth_fn: (B,3,h,w) float images in [0,1] -> (B,1,h,w) metric depth (no gradients needed).
            log_f: current (log fx, log fy) ratios to the reported K; c: current principal point offsets
                (cx in units of W, cy in units of H).
        Returns:
            the fit (``accepted``: its loss is lower than at the start; the values are bounded by
            ``max_change_*``), or None when the buffer is not ready.
        """
        if not self.ready():
            return None
        t0 = time.perf_counter()
        pairs = self.pairs[1] + self.pairs[-1]
        size = tuple(pairs[0].target.shape[-2:])
        pairs = [q for q in pairs if tuple(q.target.shape[-2:]) == size]   # a resized stream: the current size only
        tgt_full = torch.stack([q.target for q in pairs]).float().div_(255.0)
        src_full = torch.stack([q.source for q in pairs]).float().div_(255.0)
        with torch.no_grad():
            depth = depth_fn(tgt_full)
        T = torch.stack([q.T_source_target for q in pairs])
        K0 = torch.stack([q.K for q in pairs])
        start = torch.tensor([log_f[0], log_f[1], c[0], c[1]], dtype=torch.float32)
        p = start.clone()
        # Coarse to fine: the warp's basin is a few pixels at each level, so a principal point or a focal
        # length far off is brought in at 1/8 and 1/4 before the fit's own level (``coarse``).
        # A level below 8 rows, or not coarser than the fit's own, is skipped.
        levels = [d for d in self.coarse if d > self.downsample and size[0] // d >= 8]
        for ds in (*levels, self.downsample):
            args = self._level(ds, K0, size, depth, tgt_full, src_full, T)
            p, grid = self._optimize(p, args)
        with torch.no_grad():
            d = p - start
            d[:2] = d[:2].clamp(-self.max_change_log_f, self.max_change_log_f)
            d[2:] = d[2:].clamp(-self.max_change_c, self.max_change_c)
            end = start + d
            if grid is not None and not bool(torch.isfinite(grid).all()):
                grid = None
            # The new K against the old on the same depth (with the depth's fitted correction on both sides).
            before = float(self._loss(start, *args, grid=grid))
            after = float(self._loss(end, *args, grid=grid))
            # The median correction of the network's depth (informative only: cells the pairs do not
            # constrain stay at 0).
            log_scale = 0.0 if grid is None else float(grid.median())
        ok = bool(torch.isfinite(end).all()) and math.isfinite(after) and after < before
        self.fits += 1
        self.accepted += int(ok)
        self.last = CalibrationResult(ok, before, after, (float(end[0]), float(end[1])),
                                      (float(end[2]), float(end[3])), len(pairs), time.perf_counter() - t0,
                                      log_scale)
        return self.last
