"""Moving objects (Li et al. 2020, "Unsupervised Monocular Depth Learning in Dynamic Scenes"): a dense
3-D translation field on top of the camera's known motion.

Where it lives: a **small separate network** (:class:`ObjectMotionNet`), not a head on the depth
network. Our depth networks expose only disparities (the contract of :mod:`mono_depth_ros.models`:
``predict_disps``; the released monodepth2, the default net and Depth Anything V2 have different
decoders), and a motion field needs *two* images, which the depth network never sees together. A
separate net taking the target and the source (rigidly warped into the target by the known camera
motion and the current depth) works with every backend, leaves the served depth network's weights
and shapes untouched, and is dropped at serving time (only depth is published).

:class:`ObjectMotion` holds the net and the schedule (off, then on after ``after_steps`` training
steps: Li et al.'s advice to learn depth and camera motion first) and computes the fields of one batch
once (the reprojection term warps with them, the regulariser term of :mod:`.terms` penalises them).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mono_depth_ros.geometry import PinholeCamera, warp
from mono_depth_ros.models.base import disp_to_depth

__all__ = ["ObjectMotionNet", "ObjectMotion", "FIELDS_KEY", "remove_median"]

#: Where the fields of one batch are kept in :attr:`~.terms.TermContext.extra`.
FIELDS_KEY = "object_motion_fields"


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.ELU(inplace=True))


class ObjectMotionNet(nn.Module):
    """A small U-Net: (target, rigidly warped source) -> per-pixel 3-D translation in metres.

    Input (N,6,h,w) in [0,1]; output (N,3,h,w) (:meth:`ObjectMotion.fields` runs it at half the
    training crop's resolution). The last layer starts at zero,
    so the field is zero (no object moves) until the loss asks for motion. ~60k parameters.
    """

    def __init__(self, width: int = 16):
        super().__init__()
        c1, c2, c3 = width, 2 * width, 4 * width
        self.enc1, self.enc2, self.enc3 = _block(6, c1, 2), _block(c1, c2, 2), _block(c2, c3, 2)
        self.mid = _block(c3, c3, 1)
        self.dec2, self.dec1, self.dec0 = _block(c3 + c2, c2, 1), _block(c2 + c1, c1, 1), _block(c1 + 6, c1, 1)
        self.head = nn.Conv2d(c1, 3, 3, 1, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N,6,h,w) -> (N,3,h,w) metres."""
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.mid(self.enc3(e2))

        def up(a, b):
            return torch.cat([F.interpolate(a, b.shape[-2:], mode="bilinear", align_corners=False), b], 1)
        d2 = self.dec2(up(e3, e2))
        d1 = self.dec1(up(d2, e1))
        return self.head(self.dec0(up(d1, x)))


def remove_median(field: torch.Tensor) -> torch.Tensor:
    """The field less its per-image, per-channel median over the pixels: (N,3,h,w) -> (N,3,h,w).

    With the camera's motion *known*, a translation shared by most of the image is never object motion:
    it is the depth's scale error in disguise (a uniform field t on every pixel warps like depth scaled by
    a common factor; a field learned fast cancels part of the camera's translation and the depth drifts
    far, losing the metric scale the known poses give). Movers cover a minority of the pixels, so the
    median is the background's value; removing it leaves the background at zero by construction and the
    movers' motion relative to it."""
    return field - field.flatten(2).median(dim=2).values[..., None, None]


class ObjectMotion:
    """The motion net of one adaptation run, its schedule and the fields of the current batch.

    Args:
        min_depth, max_depth: the depth network's ``disp_to_depth`` range.
        zero_median: remove each field's median (:func:`remove_median`): no field shared by the image.
        after_steps: the fields enter the warp from this training step on (0 = at once).
        steps: returns the engine's count of healthy training steps.
        device: where the net lives (the depth network's device).
    """

    def __init__(self, min_depth: float, max_depth: float, after_steps: int, steps: Callable[[], int],
                 device=None, width: int = 16, zero_median: bool = True):
        self.net = ObjectMotionNet(width).to(device)
        self.zero_median = bool(zero_median)
        self.min_depth, self.max_depth = float(min_depth), float(max_depth)
        self.after_steps = int(after_steps)
        self._steps = steps

    def active(self) -> bool:
        """The schedule: off for the first ``after_steps`` steps, then on."""
        return self._steps() >= self.after_steps

    def fields(self, ctx) -> list[torch.Tensor]:
        """S (B,3,h,w) translation fields of the batch in ``ctx`` (a :class:`~.terms.TermContext`), one per
        source, computed once per context. The net sees the target and each source warped into it by the
        camera motion alone with the current depth (detached: the field does not train the depth net
        through its input)."""
        if FIELDS_KEY in ctx.extra:
            return ctx.extra[FIELDS_KEY]
        i = ctx.inputs
        B, _, h, w = i.target.shape
        cam = PinholeCamera(i.K, h, w)
        cam_s = cam if i.K_source is None else PinholeCamera(i.K_source, i.sources[0].shape[-2],
                                                             i.sources[0].shape[-1])
        with torch.no_grad():
            depth = disp_to_depth(ctx.disps[0].detach(), self.min_depth, self.max_depth)
            if depth.shape[-2:] != (h, w):
                depth = F.interpolate(depth, (h, w), mode="bilinear", align_corners=False)
            rigid = [warp(src, depth, T, cam, cam_s)[0] for src, T in zip(i.sources, i.T)]
        x = torch.cat([torch.cat([i.target, r], 1) for r in rigid])        # (S*B,6,h,w)
        # At half resolution (half the step's cost of the net), the field upsampled bilinearly.
        field = F.interpolate(self.net(F.avg_pool2d(x, 2)), (h, w), mode="bilinear", align_corners=False)
        if self.zero_median:
            field = remove_median(field)
        out = list(field.split(B))
        ctx.extra[FIELDS_KEY] = out
        return out

    def parameters(self):
        return self.net.parameters()
