"""The adaptation engine's optional learned parts, in offline training: moving objects and intrinsics.

``mono-depth train --object-motion`` / ``--intrinsics`` use the engine's own pieces, not copies:
:class:`~mono_depth_ros.adapt.motion.ObjectMotion` (Li et al. 2020's translation field, its schedule),
:class:`~mono_depth_ros.adapt.intrinsics.IntrinsicsCorrection` (the bounded correction of K) and the loss
terms of :mod:`mono_depth_ros.adapt.terms` (reprojection with ``motion``, smoothness, the field's
regularisers). With both options off the trainer keeps its :class:`~mono_depth_ros.losses.SelfSupervisedLoss`
(the terms here equal it with the field and the correction at zero: the fast loss with ``upsampled``
scales and no tie-breaking noise).

Who touches what: one trainer thread (the training loop, validation and saving run in turn on it).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..adapt.engine import AdaptConfig
from ..adapt.intrinsics import IntrinsicsCorrection
from ..adapt.motion import ObjectMotion
from ..adapt.terms import ObjectMotionTerm, ReprojectionTerm, SmoothnessTerm, StepInputs, TermContext
from ..losses import FastSelfSupervisedLoss

__all__ = ["TrainExtras", "flip_K"]

_K_NAMES = {"fx": (0, 0), "fy": (1, 1), "cx": (0, 2), "cy": (1, 2)}


def flip_K(K: torch.Tensor, flip: torch.Tensor, width: int) -> torch.Tensor:
    """K of horizontally mirrored images for the rows in ``flip`` (differentiable; its own inverse).

    A mirrored image has ``u' = W - 1 - u``, with points mirrored ``x' = -x`` (the sampler conjugates the poses
    likewise): ``cx' = W - 1 - cx`` (and the skew changes sign).

    Args:
        K: (B,3,3); flip: (B,) bool; width: image width W.
    Returns:
        (B,3,3).
    """
    M = K.new_tensor([[-1.0, 0.0, width - 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    D = K.new_tensor([-1.0, 1.0, 1.0])
    return torch.where(flip.to(K.device).view(-1, 1, 1), M @ K * D, K)


class TrainExtras:
    """Object motion and learned intrinsics of one training run.

    Args:
        model: the depth network (its ``min_depth`` / ``max_depth``).
        object_motion: learn the field; ``after_steps``: its schedule (it enters the warp at training step
            ``after_steps``, counted over resumed runs too).
        intrinsics: one of :data:`~mono_depth_ros.adapt.intrinsics.INTRINSICS_MODES`.
        smoothness_weight: the edge-aware smoothness weight (as the trainer's loss).
        step: returns the current training step (0-based: the step being taken).
        device: the network's device.
        focal_warmup: training steps before the focal length learns (the principal point learns from the
            start; the engine's ``intrinsics_focal_warmup``).
    The engine's defaults (:class:`~mono_depth_ros.adapt.AdaptConfig`) give the regulariser weights, the motion
    net's learning rate and gradient limit, and the intrinsics' per-step bounds.
    """

    def __init__(self, model: torch.nn.Module, object_motion: bool, after_steps: int, intrinsics: str,
                 smoothness_weight: float, step: Callable[[], int], device=None, focal_warmup: int = 0):
        d = AdaptConfig
        self._step, self.focal_warmup = step, int(focal_warmup)
        self.motion = (ObjectMotion(model.min_depth, model.max_depth, after_steps, step, device)
                       if object_motion else None)
        self.intrinsics = None
        if intrinsics != "off":
            self.intrinsics = IntrinsicsCorrection(d.intrinsics_max_step_log_f, d.intrinsics_max_step_c,
                                                   fixed_aspect=d.intrinsics_fixed_aspect).to(device)
        loss_fn = FastSelfSupervisedLoss(model.min_depth, model.max_depth, smoothness_weight=0.0,
                                         scale_mode="upsampled", noise=0.0)
        self.terms = [ReprojectionTerm(loss_fn, motion=self.motion), SmoothnessTerm(smoothness_weight)]
        if self.motion is not None:
            self.terms.append(ObjectMotionTerm(self.motion, d.object_motion_smoothness, d.object_motion_sparsity))

    @property
    def enabled(self) -> bool:
        return self.motion is not None or self.intrinsics is not None

    # ------------------------------------------------------------------ optimiser
    def param_groups(self, intrinsics_lr: float) -> list[dict]:
        """Adam groups after the depth network's: the intrinsics (their own learning rate, not decayed),
        the motion net (the engine's ``object_motion_lr``); tagged like the engine's."""
        groups = []
        if self.intrinsics is not None:
            groups.append({"params": list(self.intrinsics.parameters()), "lr": float(intrinsics_lr),
                           "intrinsics": True})
        if self.motion is not None:
            groups.append({"params": list(self.motion.parameters()), "lr": AdaptConfig.object_motion_lr,
                           "object_motion": True})
        return groups

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """The motion net's own gradient-norm limit before every optimiser step (Li et al.: clip)."""
        if self.motion is None:
            return
        params, clip = list(self.motion.parameters()), AdaptConfig.object_motion_grad_clip

        def clip_motion(*_) -> None:
            torch.nn.utils.clip_grad_norm_(params, clip)
        optimizer.register_step_pre_hook(clip_motion)

    def trained(self, model: torch.nn.Module) -> torch.nn.Module:
        """What the guarded step checks for finite gradients and clips (the engine's choice)."""
        return model if self.motion is None else torch.nn.ModuleList([model, self.motion.net])

    def begin_step(self) -> None:
        if self.intrinsics is not None:
            self.intrinsics.focal_frozen = self._step() < self.focal_warmup
            self.intrinsics.begin_step()

    def end_step(self) -> None:
        if self.intrinsics is not None:
            self.intrinsics.bound_step()   # bounded change per step (and overall)

    # ------------------------------------------------------------------ loss
    def K(self, K: torch.Tensor, flip: torch.Tensor | None, width: int, height: int) -> torch.Tensor:
        """The K a batch trains (and validates) with: the sampler's (B,3,3) K, corrected by the learned
        intrinsics in the unmirrored image (then mirrored back for the rows in ``flip``, (B,) bool or None)."""
        if self.intrinsics is None:
            return K
        if flip is None or not bool(flip.any()):
            return self.intrinsics.correct(K, width, height)
        return flip_K(self.intrinsics.correct(flip_K(K, flip, width), width, height), flip, width)

    def loss(self, net, target: torch.Tensor, sources: list, T: list, K: torch.Tensor,
             flip: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The weighted terms of one batch.

        Args:
            net: ``net(x)`` = the depth network's disparities (a DepthNet's ``predict_disps``).
            target: (B,3,H,W); sources: S (B,3,H,W); T: S (B,4,4) target camera -> source; K: (B,3,3) the
            sampler's; flip: (B,) bool rows mirrored by the sampler.
        Returns:
            (scalar total, detached parts by term name).
        """
        H, W = target.shape[-2:]
        inputs = StepInputs(target, list(sources), list(T), self.K(K, flip, W, H))
        ctx = TermContext(inputs, net, list(net(target)))
        total, parts = target.new_zeros(()), {}
        for term in self.terms:
            v = term(ctx)
            parts[term.name] = v.detach()
            total = total + term.weight * v
        return total, parts

    # ------------------------------------------------------------------ state
    def state(self) -> dict:
        """Checkpoint meta: the motion net's tensors and the correction (tensors: ``weights_only`` loads)."""
        out: dict = {}
        if self.motion is not None:
            out["object_motion"] = {k: v.detach().cpu().clone() for k, v in self.motion.net.state_dict().items()}
        if self.intrinsics is not None:
            log_f, c = self.intrinsics.snapshot()
            out["intrinsics"] = {"log_f": log_f.cpu(), "c": c.cpu()}
        return out

    def load_state(self, state: dict, source: str) -> list[str]:
        """Restore :meth:`state` (``--resume``); returns what was restored. A run that adds an option on resume
        starts that part afresh; one that drops it ignores the saved part."""
        done = []
        if self.motion is not None and state.get("object_motion") is not None:
            self.motion.net.load_state_dict(state["object_motion"])
            done.append("object motion network")
        if self.intrinsics is not None and state.get("intrinsics") is not None:
            s = state["intrinsics"]
            if tuple(s["log_f"].shape) != tuple(self.intrinsics.log_f.shape):
                raise ValueError(f"{source}: learned intrinsics of another shape ({tuple(s['log_f'].shape)})")
            self.intrinsics.restore((s["log_f"], s["c"]))
            done.append("learned intrinsics")
        return done

    def learned_K(self, K: np.ndarray, width: int, height: int) -> np.ndarray:
        """(3,3) ``K`` (of ``width`` x ``height`` images) corrected with the learned intrinsics (float64)."""
        if self.intrinsics is None:
            return np.array(K, dtype=np.float64)
        return self.intrinsics.correct_np(np.array(K, dtype=np.float64), width, height)

    def report(self, K_seen: np.ndarray, width: int, height: int) -> dict | None:
        """What the report and the checkpoint meta say about the intrinsics: the K the training started from
        (``seen``) and the learned one at the training size, the correction and the focal change in %."""
        if self.intrinsics is None:
            return None
        learned = self.learned_K(K_seen, width, height)
        log_f, c = self.intrinsics.snapshot()
        return {"image_size": [int(width), int(height)],
                "seen": {k: float(K_seen[i, j]) for k, (i, j) in _K_NAMES.items()},
                "learned": {k: float(learned[i, j]) for k, (i, j) in _K_NAMES.items()},
                "focal_change_pct": [float(100 * (np.exp(v) - 1)) for v in np.broadcast_to(log_f.numpy(), (2,))],
                "principal_point_offset": [float(v) for v in c.numpy()]}
