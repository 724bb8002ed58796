"""Common contract of every depth network in the package.

A :class:`DepthNet` maps an RGB image to depth::

    net.eval();  depth = net(image)   # image (B,3,H,W) in [0,1] -> depth (B,1,H,W) metres
    net.train(); disps = net(image)   # list of sigmoid disparities, scales 0..3,
                                      # disps[s] is (B,1,H/2^s,W/2^s) (single-output
                                      # networks such as Depth Anything V2 give scale 0 only)
    net.disp_to_depth(sigmoid)        # the one place sigmoid -> depth

H and W must be multiples of the class attribute ``size_multiple`` (32 for the
U-Nets: five stride-2 stages; 14 for Depth Anything V2: its ViT patch). Input
normalisation happens inside the model. ``output_kind`` says what the eval-mode
output means (see :data:`OUTPUT_KINDS`), so callers can decide whether a scale
(or scale and shift) has to be estimated.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DepthNet", "disp_to_depth", "check_image", "infer_depth", "OUTPUT_KINDS"]

NUM_SCALES = 4

#: What a network's eval-mode output is:
#:   ``metric``: depth in metres (the shipped net, stereo-trained monodepth2, metric DA-V2);
#:   ``relative_scale``: depth up to one unknown global scale (monocular monodepth2);
#:   ``relative_affine_disparity``: the network predicts a disparity known up to scale AND shift
#:   (relative DA-V2); its "depth" is 1/disparity clamped to the depth range, not metres.
OUTPUT_KINDS = ("metric", "relative_scale", "relative_affine_disparity")


def disp_to_depth(disp: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """monodepth2's conversion of the network's sigmoid output to depth.

    The sigmoid ``disp`` in [0,1] is mapped linearly to a disparity in
    [1/max_depth, 1/min_depth]; depth is its inverse, so it lies in
    [min_depth, max_depth].

    Args:
        disp: (B,1,H,W) sigmoid output in [0,1].
    Returns:
        (B,1,H,W) depth in metres.
    """
    min_disp = 1.0 / max_depth
    max_disp = 1.0 / min_depth
    scaled = min_disp + (max_disp - min_disp) * disp
    return 1.0 / scaled


def check_image(image: torch.Tensor, multiple: int = 32) -> None:
    """Raise ValueError unless ``image`` is (B,3,H,W) float with H, W multiples of ``multiple``."""
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"image must be a torch.Tensor, got {type(image).__name__}")
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B,3,H,W) RGB, got shape {tuple(image.shape)}")
    h, w = int(image.shape[2]), int(image.shape[3])
    if h % multiple or w % multiple or h == 0 or w == 0:
        raise ValueError(
            f"image height and width must be positive multiples of {multiple}, got H={h}, W={w} "
            f"(resize or crop the input, e.g. to {640 // multiple * multiple}x{192 // multiple * multiple}, "
            f"and scale K accordingly)")
    if not image.is_floating_point():
        raise ValueError(f"image must be floating point in [0,1], got dtype {image.dtype}")


class DepthNet(nn.Module):
    """Base class: subclasses implement :meth:`forward_disps`.

    Attributes:
        arch: registry name of the architecture.
        size_multiple: input height and width must be multiples of it.
        output_kind: one of :data:`OUTPUT_KINDS`, what the eval-mode output means.
        min_depth, max_depth: depth range in metres of :meth:`disp_to_depth`.
    """

    arch: str = ""
    size_multiple: int = 32
    output_kind: str = "metric"

    def __init__(self, min_depth: float = 0.1, max_depth: float = 100.0):
        super().__init__()
        if not (0.0 < min_depth < max_depth):
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self._bn_frozen = False

    # -- contract -----------------------------------------------------------
    def forward_disps(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,H,W) in [0,1] -> list of 4 sigmoid maps, disps[s] is (B,1,H/2^s,W/2^s)."""
        raise NotImplementedError

    def forward(self, image: torch.Tensor):
        """Train mode: list of 4 sigmoid disparities; eval mode: (B,1,H,W) depth in metres."""
        check_image(image, self.size_multiple)
        if self.training:
            return self.forward_disps(image)
        return self.disp_to_depth(self.forward_disps(image)[0])

    def disp_to_depth(self, disp: torch.Tensor) -> torch.Tensor:
        """(B,1,H,W) sigmoid -> (B,1,H,W) depth in [min_depth, max_depth] metres."""
        return disp_to_depth(disp, self.min_depth, self.max_depth)

    def backend_options(self) -> dict:
        """Constructor options beyond the depth range (plain types) that rebuild this network with
        ``build_model(arch, min_depth, max_depth, **options)``; saved in checkpoints."""
        return {}

    # -- batch norm handling for online fine-tuning with tiny batches --------
    def freeze_batchnorm(self, frozen: bool = True) -> "DepthNet":
        """Keep BatchNorm layers in eval mode (running stats) even in ``train()``.

        Online fine-tuning uses batches of one or two frames, whose statistics
        must not overwrite the running ones.
        """
        self._bn_frozen = bool(frozen)
        self.train(self.training)
        return self

    def train(self, mode: bool = True) -> "DepthNet":
        super().train(mode)
        if self._bn_frozen:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self


def infer_depth(model: DepthNet, image: torch.Tensor, input_size: tuple[int, int] | None = None) -> torch.Tensor:
    """Depth at the image's own resolution, running the network at ``input_size``.

    The image is resized (area) to ``input_size`` = (H', W') -- e.g. a
    checkpoint's training ``input_size`` -- and the depth is resized back
    bilinearly. Depth is per pixel, so no intrinsics change is needed for the
    output; the network sees the scene as a camera with K scaled by
    (W'/W, H'/H) (conventions.scale_intrinsics). Runs in eval mode and
    restores the previous mode.

    Args:
        image: (B,3,H,W) in [0,1], any H, W.
    Returns:
        (B,1,H,W) depth in metres.
    """
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"image must be (B,3,H,W) RGB, got shape {tuple(image.shape)}")
    H, W = int(image.shape[2]), int(image.shape[3])
    x = image
    if input_size is not None and tuple(input_size) != (H, W):
        x = F.interpolate(image, size=tuple(input_size), mode="area")
    was_training = model.training
    model.eval()
    try:
        depth = model(x)
    finally:
        model.train(was_training)
    if depth.shape[-2:] != (H, W):
        depth = F.interpolate(depth, size=(H, W), mode="bilinear", align_corners=False)
    return depth
