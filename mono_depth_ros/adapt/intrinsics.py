"""Learned camera intrinsics: online self-calibration of fx, fy, cx, cy from the photometric loss.

With known *metric* poses the warp of a source into the target depends on K; a wrong focal length or
principal point misplaces every reprojected pixel (a rotation's flow is ``f x angle``, independent of
depth), so the photometric loss has a gradient with respect to K (Gordon et al. 2019, Li et al. 2020).
:class:`IntrinsicsCorrection` holds a correction of the K the camera reports (camera_info, or a guess
from a horizontal field of view), learned by the adaptation engine next to the weights.

Parametrisation (dimensionless and well-conditioned):

* ``log_f`` (2,), or (1,) with ``fixed_aspect`` (the default): log of the focal lengths' ratio to the
  reported ones, ``fx = fx0 * exp(log_f[0])``; a step of 0.001 is 0.1% of the focal length at any
  resolution. ``fixed_aspect`` keeps the reported fx/fy (square pixels from a field of view guess): on
  a straight road the horizontal focal length is all but unobservable (forward motion's flow
  ``(u - cx) tz / (Z - tz)`` does not depend on f; only yaw and lateral motion do), while bumps and
  pitch make fy observable, and one shared scale learns from both;
* ``focal_from_x`` (with ``fixed_aspect``): the shared scale learns from fx's gradient only, fy follows
  it (its gradient is stopped). With the camera pitched against its motion (synthetic B: 4 degrees,
  ty/tz = -0.07) the focus of expansion ``cy + fy ty/tz`` ties fy to cy, and fy's vertical flow
  (f ty/Z, the ground plane) to the depth scale: at the true K, a cy off by 1 % of the width or a
  depth 10 % too long gives a fy gradient as large as that of a 10 % focal error (SYNTHETIC, ground-truth
  depth and poses; docs/learning.md). fx's gradient comes from yaw (``fx * omega``, depth-independent)
  and keeps its sign with the principal point 5 % off or the depth 20 % off; it is ~0 on straight road;
* ``c`` (2,): principal point offsets normalised by the image size, ``cx = cx0 + c[0] * W``,
  ``cy = cy0 + c[1] * H`` (the same numbers at training and at full resolution, and under crops:
  the crop shifts the corrected K, the offset moves with it).

By default (``AdaptConfig.intrinsics_calibration``) the engine does not let the training gradient move the focal
length: :class:`~.calibration.IntrinsicsCalibrator` fits it on turning frame pairs and writes the result here,
and after its first fit the principal point too (``focal_frozen``, ``point_frozen``).

Guarded: each update moves ``log_f`` by at most ``max_step_log_f`` and ``c`` by at most
``max_step_c`` per step, and the correction stays within ``max_log_f`` / ``max_c`` overall. The engine
snapshots it with the weights (rollback point, served state), so a rollback restores both.
"""
from __future__ import annotations

import math

import numpy as np
import torch

__all__ = ["IntrinsicsCorrection", "INTRINSICS_MODES", "K_from_hfov", "corrected_K"]

#: ``AdaptConfig.intrinsics`` choices: off; refine the camera_info's K; estimate it without camera_info
#: (starting from ``camera_hfov_deg``).
INTRINSICS_MODES = ("off", "refine", "estimate")


def K_from_hfov(width: int, height: int, hfov_deg: float) -> np.ndarray:
    """(3,3) pinhole K of a ``width`` x ``height`` image with horizontal field of view ``hfov_deg``:
    square pixels, principal point at the image centre (pixel-centre convention: (W-1)/2, (H-1)/2).

    >>> K_from_hfov(640, 192, 90.0)[0]
    array([320. ,   0. , 319.5])
    """
    f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
    return np.array([[f, 0.0, (width - 1) / 2.0], [0.0, f, (height - 1) / 2.0], [0.0, 0.0, 1.0]])


def corrected_K(K: torch.Tensor, focal_scale: torch.Tensor, c: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """The correction's formula, differentiable in ``focal_scale`` and ``c`` (the calibrator fits with it too).

    Args:
        K: (B,3,3) reported intrinsics of ``width`` x ``height`` images.
        focal_scale: (2,) multipliers of fx, fy; c: (2,) principal point offsets (cx in units of W, cy of H).
    Returns:
        (B,3,3) ``[[fx0 s_x, 0, cx0 + c_x W], [0, fy0 s_y, cy0 + c_y H], [0, 0, 1]]`` (skew kept).
    """
    K = K.to(focal_scale.dtype)
    one, zero = focal_scale.new_ones(()), focal_scale.new_zeros(())
    mult = torch.stack([torch.stack([focal_scale[0], one, one]), torch.stack([one, focal_scale[1], one]),
                        torch.stack([one, one, one])])                       # (3,3): scales fx, fy only
    shift = torch.stack([torch.stack([zero, zero, c[0] * width]), torch.stack([zero, zero, c[1] * height]),
                         torch.stack([zero, zero, zero])])
    return K * mult + shift


class IntrinsicsCorrection(torch.nn.Module):
    """A learned correction of reported intrinsics (see the module docstring).

    Args:
        max_step_log_f, max_step_c: largest change per update of ``log_f`` and of ``c``.
        max_log_f, max_c: bounds of the correction itself (|log_f| <= max_log_f, |c| <= max_c).
        fixed_aspect: one focal scale for fx and fy (the reported aspect ratio kept).
        focal_from_x: with ``fixed_aspect``, the scale learns from fx's gradient only (fy follows).
        average_decay: > 0: :meth:`served_snapshot` is an exponential average of the bounded steps' values
            with this decay (Adam's steps are about its learning rate whatever the gradient's size, so on a
            weak focal signal the raw value wanders); 0: the raw value.
    """

    def __init__(self, max_step_log_f: float = 0.003, max_step_c: float = 0.001, max_log_f: float = 0.7,
                 max_c: float = 0.25, fixed_aspect: bool = True, focal_from_x: bool = False,
                 average_decay: float = 0.0):
        super().__init__()
        if not 0.0 <= average_decay < 1.0:
            raise ValueError(f"average_decay must be in [0, 1), got {average_decay}")
        self.average_decay = float(average_decay)
        self._average: tuple[torch.Tensor, torch.Tensor] | None = None
        self.log_f = torch.nn.Parameter(torch.zeros(1 if fixed_aspect else 2))
        self.focal_from_x = bool(focal_from_x and fixed_aspect)
        self.c = torch.nn.Parameter(torch.zeros(2))
        self.max_step_log_f, self.max_step_c = float(max_step_log_f), float(max_step_c)
        self.max_log_f, self.max_c = float(max_log_f), float(max_c)
        self._before: tuple[torch.Tensor, torch.Tensor] | None = None
        self.focal_frozen = False    # True: updates leave log_f as it is (the engine's focal warm-up)
        self.point_frozen = False    # True: updates leave c as it is (the calibrator owns it: adapt/calibration.py)

    def correct(self, K: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """Corrected intrinsics (differentiable in the correction).

        Args:
            K: (B,3,3) reported intrinsics of ``width`` x ``height`` images.
        Returns:
            (B,3,3) ``[[fx0 e^a, 0, cx0 + c_x W], [0, fy0 e^b, cy0 + c_y H], [0, 0, 1]]`` (skew kept).
        """
        ef = torch.exp(self.log_f).expand(2)
        if self.focal_from_x:   # fy follows fx's scale without pulling it (module docstring)
            ef = torch.stack([ef[0], ef[1].detach()])
        return corrected_K(K, ef, self.c, width, height)

    def correct_np(self, K: np.ndarray, width: int, height: int) -> np.ndarray:
        """(3,3) numpy K -> (3,3) corrected (float64), no gradients."""
        with torch.no_grad():
            return self.correct(torch.as_tensor(np.asarray(K, dtype=np.float64), dtype=torch.float32)[None],
                                width, height)[0].double().numpy()

    # ---------------------------------------------------------------- the guard's part
    def begin_step(self) -> None:
        """Remember the values before an optimiser step (for :meth:`bound_step`)."""
        self._before = (self.log_f.detach().clone(), self.c.detach().clone())

    @torch.no_grad()
    def bound_step(self) -> None:
        """After the optimiser step: clamp the change to the per-step bounds and the correction to its
        overall bounds; a non-finite value falls back to the value before the step."""
        if self._before is None:
            return
        for p, before, step, bound in ((self.log_f, self._before[0], self.max_step_log_f, self.max_log_f),
                                       (self.c, self._before[1], self.max_step_c, self.max_c)):
            new = torch.where(torch.isfinite(p), p, before)
            new = before + (new - before).clamp(-step, step)
            if (p is self.log_f and self.focal_frozen) or (p is self.c and self.point_frozen):
                new = before
            p.copy_(new.clamp(-bound, bound))
        self._before = None
        if self.average_decay > 0:
            now = self.snapshot()
            self._average = now if self._average is None else tuple(
                a * self.average_decay + v * (1.0 - self.average_decay) for a, v in zip(self._average, now))

    # ---------------------------------------------------------------- snapshots and reports
    def snapshot(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.log_f.detach().clone(), self.c.detach().clone()

    def served_snapshot(self) -> tuple[torch.Tensor, torch.Tensor]:
        """What to serve: the average of the bounded steps' values (``average_decay``), else :meth:`snapshot`."""
        if self._average is None:
            return self.snapshot()
        return self._average[0].clone(), self._average[1].clone()

    @torch.no_grad()
    def restore(self, snap: tuple[torch.Tensor, torch.Tensor]) -> None:
        self.log_f.copy_(snap[0])
        self.c.copy_(snap[1])
        self._average = None      # the average starts again from the restored values

    @staticmethod
    def apply_snapshot(snap, K: np.ndarray, width: int, height: int) -> np.ndarray:
        """(3,3) numpy K corrected with a :meth:`snapshot` (float64)."""
        log_f, c = (np.broadcast_to(t.double().cpu().numpy(), (2,)) for t in snap)
        K = np.array(K, dtype=np.float64)
        K[0, 0] *= math.exp(log_f[0])
        K[1, 1] *= math.exp(log_f[1])
        K[0, 2] += c[0] * width
        K[1, 2] += c[1] * height
        return K
