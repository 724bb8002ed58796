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

from mono_depth_ros.geometry import PinholeCamera, Pose, warp
from mono_depth_ros.losses import multiscale_smoothness, photometric_error_fast, smoothness_loss
from mono_depth_ros.models.base import disp_to_depth

__all__ = ["StepInputs", "TermContext", "LossTerm", "ReprojectionTerm", "SmoothnessTerm", "AnchorTerm",
           "RegularisationTerm", "StereoTerm", "ObjectMotionTerm", "group_smoothness", "sqrt_sparsity",
           "SMOOTHNESS_WEIGHT"]

#: monodepth2's smoothness weight (divided by 2^s at scale s inside the term).
SMOOTHNESS_WEIGHT = 1e-3


@dataclass
class StepInputs:
    """One training batch.

    target: (B,3,h,w) in [0,1] (a crop in the fast step); sources: list of S (B,3,H,W) whole
    frames; T: list of S (B,4,4) target-camera points -> source camera (metres); K: (B,3,3) of the
    target (crop); K_source: (B,3,3) of the sources, or None when the target is the whole frame.

    Stereo (None without): ``right`` (R,3,h,w) the right images of the rows ``right_rows`` (R,) that
    have a pair, cropped like their targets; ``T_right_left`` (R,4,4); ``frame`` (R,3,H,W) the
    whole left frames of those rows (what the right view is reconstructed from).
    """

    target: torch.Tensor
    sources: list
    T: list
    K: torch.Tensor
    K_source: torch.Tensor | None = None
    right: torch.Tensor | None = None
    right_rows: torch.Tensor | None = None
    T_right_left: torch.Tensor | None = None
    frame: torch.Tensor | None = None


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

    def extra_inputs(self, inputs: StepInputs | None = None) -> torch.Tensor | None:
        """(N,3,h,w) images to run in the training forward pass (for the batch ``inputs``), or None."""
        return None

    def __call__(self, ctx: TermContext) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError


class ReprojectionTerm(LossTerm):
    """Per-pixel minimum reprojection (SSIM+L1) over the sources with auto-masking, at every scale,
    with metric known poses (monodepth2): ``loss_fn`` is a :class:`~mono_depth_ros.losses.SelfSupervisedLoss`
    or :class:`~mono_depth_ros.losses.FastSelfSupervisedLoss` built with ``smoothness_weight=0``.

    ``motion`` (an :class:`~.motion.ObjectMotion`, the fast loss only): once its schedule is on, every
    target pixel also moves by its object-motion field in the warp (Li et al. 2020)."""

    name = "photometric"
    judged = True

    def __init__(self, loss_fn, weight: float = 1.0, motion=None):
        super().__init__(weight)
        self.loss_fn = loss_fn
        self.motion = motion

    def __call__(self, ctx: TermContext) -> torch.Tensor:
        i = ctx.inputs
        if self.motion is not None and self.motion.active():
            return self.loss_fn(i.target, i.sources, i.T, i.K, ctx.disps, K_source=i.K_source,
                                object_motion=self.motion.fields(ctx))[0]
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

    def extra_inputs(self, inputs: StepInputs | None = None) -> torch.Tensor | None:
        if not self.batched:
            return None
        return self.images[self.pick()].float() / 255.0

    def __call__(self, ctx: TermContext) -> torch.Tensor:
        model = ctx.model
        if self.batched:
            disp = ctx.extra[self.name]
        else:
            idx = self.pick()
            disp = model.predict_disps(self.images[idx].float() / 255.0)[0]
        return (torch.log(model.disp_to_depth(disp)) - self.logdepth[self._idx]).abs().mean()


class RegularisationTerm(LossTerm):
    """L2 pull of the parameters toward the starting weights (parameter space)."""

    name = "regularisation"

    def __init__(self, model: torch.nn.Module, weight: float):
        super().__init__(weight)
        self.start = [p.detach().clone() for p in model.parameters()]

    def __call__(self, ctx: TermContext) -> torch.Tensor:
        return sum(((p - a) ** 2).sum() for p, a in zip(ctx.model.parameters(), self.start))


class StereoTerm(LossTerm):
    """monodepth's left-right loss (Godard et al. 2017) on a rectified stereo pair, at scale 0.

    monodepth's network predicts both disparities from the left image (two output channels). Ours
    output one disparity channel of the image they see, so the right disparity comes from running
    the *same* network on the right image (riding in the training forward pass,
    ``extra_inputs``). Per pair, with ``d_l``, ``d_r`` the network's sigmoid disparities (both
    linear in inverse depth, which a rectified pair shares at corresponding points):

    * appearance matching of the right view: the right image reconstructed from the whole left
      frame with the right depth and ``T_left_right`` (SSIM+L1, 3x3 box window, mean over the
      pixels that land inside the left frame). The left view's appearance is the
      :class:`ReprojectionTerm`, where the right image is a source next to the temporal ones;
    * ``lr_weight`` x the L1 left-right consistency ``|d_l - d_r(warped into the left view)|``
      (the right disparity sampled where the left depth puts each left pixel in the right view,
      mean over the pixels that land inside it);
    * edge-aware smoothness of ``d_r`` (weight 1e-3, as the left disparity's).

    The known baseline in ``T_right_left`` fixes the metric scale without any ego-motion. Not
    ``judged``: the guard's paired test runs the target images alone (the left view's appearance
    with the right source is judged through the reprojection term).

    Args:
        min_depth, max_depth: the network's ``disp_to_depth`` range.
        lr_weight: weight of the LR consistency inside the term (monodepth: 1.0).
        weight: weight of the whole term.
    """

    name = "stereo"

    def __init__(self, min_depth: float, max_depth: float, lr_weight: float = 1.0, weight: float = 1.0):
        super().__init__(weight)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.lr_weight = float(lr_weight)
        self.last_parts: dict[str, float] = {}

    def extra_inputs(self, inputs: StepInputs | None = None) -> torch.Tensor | None:
        return None if inputs is None or inputs.right is None else inputs.right

    def __call__(self, ctx: TermContext) -> torch.Tensor:
        i = ctx.inputs
        if i.right is None or self.name not in ctx.extra:
            return i.target.new_zeros(())
        rows = i.right_rows
        disp_l = ctx.disps[0][rows]
        disp_r = ctx.extra[self.name]
        K = i.K[rows]
        K_frame = (i.K if i.K_source is None else i.K_source)[rows]
        return self.pair_loss(disp_l, disp_r, i.target[rows], i.right, i.frame, i.T_right_left, K, K_frame)

    def pair_loss(self, disp_l: torch.Tensor, disp_r: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
                  frame: torch.Tensor, T_right_left: torch.Tensor, K: torch.Tensor,
                  K_frame: torch.Tensor | None = None) -> torch.Tensor:
        """The term's value for R pairs.

        Args:
            disp_l, disp_r: (R,1,h,w) sigmoid disparities of the left and the right view (crops at
                the same columns, or whole frames).
            left, right: (R,3,h,w) images in [0,1] (the same crop windows).
            frame: (R,3,H,W) whole left frames in [0,1] (= ``left`` when not cropped).
            T_right_left: (R,4,4) left-camera points -> right camera (metres).
            K: (R,3,3) of the crops (both views: a rectified pair shares K).
            K_frame: (R,3,3) of the whole frames; None = ``K``.
        Returns:
            scalar.
        """
        h, w = left.shape[-2:]
        cam = PinholeCamera(K, h, w)
        cam_frame = cam if K_frame is None else PinholeCamera(K_frame, frame.shape[-2], frame.shape[-1])
        depth_l = disp_to_depth(disp_l, self.min_depth, self.max_depth)
        depth_r = disp_to_depth(disp_r, self.min_depth, self.max_depth)
        T_left_right = Pose(T_right_left).inverse().mat
        rec_r, inside_r = warp(frame, depth_r, T_left_right, cam, cam_frame)
        err = photometric_error_fast(rec_r, right)
        appearance = (err * inside_r).sum() / inside_r.sum().clamp_min(1.0)
        d_r_in_l, inside_l = warp(disp_r, depth_l, T_right_left, cam, cam)
        lr = ((disp_l - d_r_in_l).abs() * inside_l).sum() / inside_l.sum().clamp_min(1.0)
        smooth = SMOOTHNESS_WEIGHT * smoothness_loss(disp_r, right)
        self.last_parts = {"appearance_right": float(appearance.detach()), "lr_consistency": float(lr.detach())}
        return appearance + self.lr_weight * lr + smooth


def group_smoothness(field: torch.Tensor) -> torch.Tensor:
    """Li et al.'s group smoothness: mean over pixels of sqrt(|dx|^2 + |dy|^2), the differences of all
    three channels together (an L2 over the group, L1 over pixels: piecewise constant fields, one
    translation per object, are cheap).

    Args:
        field: (N,3,h,w).
    Returns:
        scalar.
    """
    dx = field[..., :-1, 1:] - field[..., :-1, :-1]
    dy = field[..., 1:, :-1] - field[..., :-1, :-1]
    return torch.sqrt(1e-12 + dx.pow(2).sum(1) + dy.pow(2).sum(1)).mean()


def sqrt_sparsity(field: torch.Tensor) -> torch.Tensor:
    """Li et al.'s L1/2 sparsity: per image and channel, mean of 2 m sqrt(1 + |t| / m) with m the
    (detached) mean |t|. Like L1 where |t| << m, flattening to a square root where |t| >> m: small
    motions everywhere are expensive, large motions on a few pixels (the movers) cheap.

    Args:
        field: (N,3,h,w).
    Returns:
        scalar (2 m at a zero field: its gradient, not its value, keeps the field at zero).
    """
    a = field.abs()
    m = a.mean((2, 3), keepdim=True).detach().clamp_min(1e-12)
    return (2 * m * torch.sqrt(1 + a / m)).mean()


class ObjectMotionTerm(LossTerm):
    """The object-motion regularisers of Li et al. 2020 on the fields of :class:`~.motion.ObjectMotion`:
    ``smoothness_weight`` x :func:`group_smoothness` + ``sparsity_weight`` x :func:`sqrt_sparsity`, of
    each field divided by the length of the camera's translation to that source (Li et al. normalise
    by the camera motion likewise: the weights do not depend on the speed).

    The fields enter the warp through :class:`ReprojectionTerm` (its ``motion``); zero while the
    schedule is off. Not ``judged``: the paired test compares depth networks on the same fields.
    """

    name = "object_motion"

    def __init__(self, motion, smoothness_weight: float, sparsity_weight: float, weight: float = 1.0):
        super().__init__(weight)
        self.motion = motion
        self.smoothness_weight, self.sparsity_weight = float(smoothness_weight), float(sparsity_weight)
        self.last_parts: dict[str, float] = {}

    def __call__(self, ctx: TermContext) -> torch.Tensor:
        if not self.motion.active():
            return ctx.inputs.target.new_zeros(())
        total = ctx.inputs.target.new_zeros(())
        fields = self.motion.fields(ctx)
        for field, T in zip(fields, ctx.inputs.T):
            scale = T[:, :3, 3].norm(dim=1).clamp_min(0.05).view(-1, 1, 1, 1)
            f = field / scale
            total = total + self.smoothness_weight * group_smoothness(f) + self.sparsity_weight * sqrt_sparsity(f)
        with torch.no_grad():
            self.last_parts = {"object_motion_mean_m": float(sum(f.norm(dim=1).mean() for f in fields) / len(fields))}
        return total / len(fields)
