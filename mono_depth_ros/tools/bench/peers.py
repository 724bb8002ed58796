"""Peer networks for the benchmark: what a user would otherwise pick (speed only, random weights).

* :class:`FastDepthNet`: FastDepth (Wofk et al., ICRA 2019): MobileNet-v1 encoder and the NNConv5
  decoder (5x5 depthwise + 1x1 pointwise, nearest-neighbour upsampling, additive skips). Written
  here because no package on PyPI ships it as a plain ``nn.Module`` (the authors' code is a
  repository, not a package, and torchvision is not available).
* :class:`DepthAnythingV2Small`: ``transformers``' ``DepthAnythingForDepthEstimation`` built from
  Depth Anything V2 Small's configuration (DINOv2 ViT-S/14 + DPT head, 24.8 M parameters) with
  random weights; nothing is downloaded.

Both follow the :class:`~mono_depth_ros.models.base.DepthNet` contract so the same benchmark code
(and the same self-supervised loss, for the adaptation step) drives every network. Their single
output is treated as a sigmoid disparity, which is all a timing needs.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mono_depth_ros.models.base import DepthNet

__all__ = ["FastDepthNet", "DepthAnythingV2Small", "depth_anything_v2_small_config"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _depthwise_separable(cin: int, cout: int, stride: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(_conv_bn(cin, cin, k, stride, groups=cin), _conv_bn(cin, cout, 1))


class FastDepthNet(DepthNet):
    """FastDepth: MobileNet-v1 (width 1.0) encoder, NNConv5 decoder with additive skips.

    Output: one full-resolution map, ``predict_disps(x)`` is ``[(B,1,H,W)]``.
    """

    arch = "fastdepth"
    num_scales = 1

    # MobileNet-v1 body after the stem: (out channels, stride)
    _BODY = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]

    def __init__(self, min_depth: float = 0.1, max_depth: float = 100.0):
        super().__init__(min_depth, max_depth)
        layers = [_conv_bn(3, 32, 3, 2)]
        cin = 32
        for cout, stride in self._BODY:
            layers.append(_depthwise_separable(cin, cout, stride))
            cin = cout
        self.encoder = nn.ModuleList(layers)
        # NNConv5: 1024 -> 512 -> 256 -> 128 -> 64 -> 32, each followed by x2 nearest upsampling
        chans = [1024, 512, 256, 128, 64, 32]
        self.decoder = nn.ModuleList(_depthwise_separable(a, b, 1, k=5) for a, b in zip(chans[:-1], chans[1:]))
        self.head = nn.Conv2d(32, 1, 1)
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _disps(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,H,W) in [0,1] -> [(B,1,H,W)] sigmoid map."""
        x = (image - self.mean) / self.std
        skips = {}
        for i, layer in enumerate(self.encoder):
            x = layer(x)
            if i in (1, 3, 5):  # 1/2 (64 ch), 1/4 (128 ch), 1/8 (256 ch): FastDepth's additive skips
                skips[i] = x
        for j, layer in enumerate(self.decoder):
            x = F.interpolate(layer(x), scale_factor=2, mode="nearest")
            if j == 1:
                x = x + skips[5]
            elif j == 2:
                x = x + skips[3]
            elif j == 3:
                x = x + skips[1]
        return [torch.sigmoid(self.head(x))]


def depth_anything_v2_small_config():
    """transformers' ``DepthAnythingConfig`` of Depth-Anything-V2-Small-hf (ViT-S/14 backbone, DPT head)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    backbone = Dinov2Config(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14,
                            image_size=518, out_indices=[3, 6, 9, 12], reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=backbone, neck_hidden_sizes=[48, 96, 192, 384],
                               fusion_hidden_size=64, head_hidden_size=32, reassemble_factors=[4, 2, 1, 0.5],
                               depth_estimation_type="relative")


class DepthAnythingV2Small(DepthNet):
    """Depth Anything V2 Small (random weights) behind the DepthNet contract.

    The ViT needs sides that are multiples of 14: the image is padded (replicate) up to them, e.g.
    640x192 -> 644x196, and the output cropped back. Output: ``[(B,1,H,W)]``.
    """

    arch = "depth_anything_v2_small"
    num_scales = 1

    def __init__(self, min_depth: float = 0.1, max_depth: float = 100.0):
        super().__init__(min_depth, max_depth)
        from transformers import DepthAnythingForDepthEstimation

        self.net = DepthAnythingForDepthEstimation(depth_anything_v2_small_config())
        self.register_buffer("mean", torch.tensor(_IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def _disps(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,H,W) in [0,1] -> [(B,1,H,W)] sigmoid map."""
        H, W = image.shape[-2:]
        ph, pw = (-H) % 14, (-W) % 14
        x = (image - self.mean) / self.std
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        out = self.net(pixel_values=x).predicted_depth  # (B,H',W') relative disparity, ReLU output
        out = out[:, None, :H, :W] if out.dim() == 3 else out[:, :, :H, :W]
        return [torch.sigmoid(out)]
