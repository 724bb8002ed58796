"""The adaptation loss as a list of weighted terms.

Each term is one small object with a ``name``, a ``weight``, ``judged`` (whether the guard and the
paired verification compare it: the self-supervised terms are, the terms that pull toward the
starting network are not) and ``__call__(ctx) -> scalar``. A term may add images to the training
forward pass (``extra_inputs``): the anchor term does, so its images ride in the same pass
(BatchNorm is frozen, so batching changes no output). A new loss (stereo, object motion) is one
more term in :func:`build_terms`.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field

import torch

from mono_depth_ros.losses import multiscale_smoothness

__all__ = ["StepInputs", "TermContext", "LossTerm", "ReprojectionTerm", "SmoothnessTerm", "AnchorTerm",
           "RegularisationTerm", "SMOOTHNESS_WEIGHT"]

#: monodepth2's smoothness weight (divided by 2^s at scale s inside the term).
SMOOTHNESS_WEIGHT = 1e-3


@dataclass
class StepInputs:
    """One training batch.

    target: (B,3,h,w) in [0,1] (a crop in the fast step); sources: list of S (B,3,H,W) whole
    frames; T: list of S (B,4,4) target-camera points -> source camera (metres); K: (B,3,3) of the
    target (crop); K_source: (B,3,3) of the sources, or None when the target is the whole frame.
    """

    target: torch.Tensor
    sources: list
    T: list
    K: torch.Tensor
    K_source: torch.Tensor | None = None


@dataclass
class TermContext:
    """What a term sees: the batch, the network, its disparities of the batch (list of
    (B,1,h_s,w_s)) and, per term that asked for extra images, their scale-0 disparities."""

    inputs: StepInputs
    model: torch.nn.Module
    disps: list
    extra: dict = field(default_factory=dict)


class LossTerm:
    """Base of the terms: ``weight * term(ctx)`` is added to the loss."""

    name = "term"
    judged = False

    def __init__(self, weight: float):
        self.weight = float(weight)

    def extra_inputs(self) -> torch.Tensor | None:
        """(N,3,h,w) images to run in the training forward pass, or None."""
        return None

    def __call__(self, ctx: TermContext) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class ReprojectionTerm(LossTerm):
    """Per-pixel minimum reprojection (SSIM+L1) over the sources with auto-masking, at every scale,
    with metric known poses (monodepth2): ``loss_fn`` is a :class:`~mono_depth_ros.losses.SelfSupervisedLoss`
    or :class:`~mono_depth_ros.losses.FastSelfSupervisedLoss` built with ``smoothness_weight=0``."""

    name = "photometric"
    judged = True

    def __init__(self, loss_fn, weight: float = 1.0):
        super().__init__(weight)
        self.loss_fn = loss_fn

    def __call__(self, ctx: TermContext) -> torch.Tensor:
        i = ctx.inputs
        if i.K_source is None:  # whole frames (the reference loss takes no K_source)
            return self.loss_fn(i.target, i.sources, i.T, i.K, ctx.disps)[0]
        return self.loss_fn(i.target, i.sources, i.T, i.K, ctx.disps, K_source=i.K_source)[0]


class SmoothnessTerm(LossTerm):
    """Edge-aware smoothness of mean-normalised disparity at every scale (monodepth2)."""

    name = "smoothness"
    judged = True

    def __init__(self, weight: float = SMOOTHNESS_WEIGHT, num_scales: int | None = None):
        super().__init__(weight)
        self.num_scales = num_scales

    def __call__(self, ctx: TermContext) -> torch.Tensor:
        disps = ctx.disps[: self.num_scales] if self.num_scales else ctx.disps
        return multiscale_smoothness(disps, ctx.inputs.target)


class AnchorTerm(LossTerm):
    """Keep the *starting* network's log depth on source-domain anchor images (distillation in
    function space: CoMoDA replays past experience for the same reason).

    Args:
        images: (M,3,h,w) uint8 anchor images (crops when the step trains on crops).
        logdepth: (M,1,h,w) the starting network's log depth of them.
        per_step: anchors per step, drawn with ``rng``.
        batched: run them in the training forward pass (the fast step) or a pass of their own.
    """

    name = "anchor"

    def __init__(self, images: torch.Tensor, logdepth: torch.Tensor, weight: float, per_step: int,
                 rng: random.Random, batched: bool):
        super().__init__(weight)
        self.images, self.logdepth = images, logdepth
        self.per_step, self.rng, self.batched = per_step, rng, batched
        self._idx: list[int] | None = None

    def pick(self) -> list[int]:
        self._idx = self.rng.sample(range(len(self.images)), min(self.per_step, len(self.images)))
        return self._idx

    def extra_inputs(self) -> torch.Tensor | None:
        if not self.batched:
            return None
        return self.images[self.pick()].float() / 255.0

    def __call__(self, ctx: TermContext) -> torch.Tensor:
        model = ctx.model
        if self.batched:
            disp = ctx.extra[self.name]
        else:
            idx = self.pick()
            disp = model(self.images[idx].float() / 255.0)[0]
        return (torch.log(model.disp_to_depth(disp)) - self.logdepth[self._idx]).abs().mean()


class RegularisationTerm(LossTerm):
    """L2 pull of the parameters toward the starting weights (parameter space)."""

    name = "regularisation"

    def __init__(self, model: torch.nn.Module, weight: float):
        super().__init__(weight)
        self.start = [p.detach().clone() for p in model.parameters()]

    def __call__(self, ctx: TermContext) -> torch.Tensor:
        return sum(((p - a) ** 2).sum() for p, a in zip(ctx.model.parameters(), self.start))
