"""Common contract of every depth network in the package.

A :class:`DepthNet` maps an RGB image to depth with two named outputs, the same in
train and eval mode (the mode only decides BatchNorm/dropout behaviour)::

    disps = net.predict_disps(image)  # image (B,3,H,W) in [0,1] -> list of net.num_scales sigmoid
                                      # disparities, disps[s] is (B,1,H/2^s,W/2^s) (single-output
                                      # networks such as Depth Anything V2: num_scales = 1)
    depth = net.predict_depth(image)  # (B,1,H,W) metres = disp_to_depth(disps[0])
    net.disp_to_depth(sigmoid)        # the one place sigmoid -> depth
    net(image)                        # = predict_disps (for nn.Module hooks, DDP); no caller
                                      # relies on it: use the named outputs

H and W must be multiples of the class attribute ``size_multiple`` (32 for the
U-Nets: five stride-2 stages; 14 for Depth Anything V2: its ViT patch); every
caller reads it from the class (:func:`round_to_multiple`). Input normalisation
happens inside the model. ``output_kind`` says what :meth:`DepthNet.predict_depth`
means (see :data:`OUTPUT_KINDS`), so callers can decide whether a scale (or scale
and shift) has to be estimated. Subclasses implement :meth:`DepthNet._disps`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DepthNet", "DepthOutput", "disp_to_depth", "check_image", "round_to_multiple", "OUTPUT_KINDS"]

#: What a network's :meth:`DepthNet.predict_depth` is:
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


def round_to_multiple(value: int, multiple: int) -> int:
    """``value`` rounded down to a multiple of ``multiple`` (a network's ``size_multiple``), at least one."""
    return max(multiple, int(value) // multiple * multiple)


def check_image(image: torch.Tensor, multiple: int) -> None:
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
    """Base class: subclasses implement :meth:`_disps`.

    Class attributes (read from the class, never guessed by callers):
        arch: registry name of the architecture.
        size_multiple: input height and width must be multiples of it.
        num_scales: how many disparity maps :meth:`predict_disps` returns.
        output_kind: one of :data:`OUTPUT_KINDS`, what :meth:`predict_depth` means.
    Instance attributes:
        min_depth, max_depth: depth range in metres of :meth:`disp_to_depth`.
    """

    arch: str = ""
    size_multiple: int = 32
    num_scales: int = 4
    output_kind: str = "metric"

    def __init__(self, min_depth: float = 0.1, max_depth: float = 100.0):
        super().__init__()
        if not (0.0 < min_depth < max_depth):
            raise ValueError(f"need 0 < min_depth < max_depth, got {min_depth}, {max_depth}")
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        self._bn_frozen = False

    # -- contract -----------------------------------------------------------
    def _disps(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,H,W) in [0,1], already checked -> list of ``num_scales`` sigmoid maps (B,1,H/2^s,W/2^s)."""
        raise NotImplementedError

    def predict_disps(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,H,W) in [0,1] -> list of ``num_scales`` sigmoid disparities, [s] is (B,1,H/2^s,W/2^s)."""
        check_image(image, self.size_multiple)
        return self._disps(image)

    def predict_depth(self, image: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> (B,1,H,W) depth (metres for ``output_kind`` metric), in any mode."""
        return self.disp_to_depth(self.predict_disps(image)[0])

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """Alias of :meth:`predict_disps` (what nn.Module hooks and DDP call)."""
        return self.predict_disps(image)

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


class DepthOutput(nn.Module):
    """``net.predict_depth`` as a module's ``forward``: what tracing and ONNX export need.

    Shares the network's parameters (no copy); its state-dict keys are the network's with the
    prefix ``net.`` (:data:`DepthOutput.PREFIX`). (B,3,H,W) in [0,1] -> (B,1,H,W).
    """

    PREFIX = "net."

    def __init__(self, net: DepthNet):
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.net.predict_depth(image)
