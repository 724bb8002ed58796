"""``default``: a small depth U-Net for real-time CPU inference at 640x192.

Encoder: MobileNetV2-style inverted residual blocks (depthwise 3x3 between
1x1 expansions, BatchNorm + ReLU6), features at strides 2, 4, 8, 16, 32 with
(16, 24, 32, 64, 128) channels. Decoder: monodepth2's layout (upconv, nearest
x2 upsampling, skip concatenation, upconv, sigmoid disparity head per scale)
with depthwise-separable convs and (8, 16, 24, 32, 64) channels.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import DepthNet

__all__ = ["DefaultDepthNet"]

ENC_CH = (16, 24, 32, 64, 128)
DEC_CH = (8, 16, 24, 32, 64)  # DEC_CH[0] unused: scale 0 comes from a sub-pixel head
#: (out channels, stride, expansion, repeats) of encoder stages 1..4 (stage 0 is the stem).
#: The first block of stage 1 expands by only 2: it runs at stride 2, the costliest resolution.
STAGES = ((24, 2, 4, 2), (32, 2, 4, 2), (64, 2, 4, 3), (128, 2, 4, 2))
FIRST_EXPAND = 2


class ConvBN(nn.Sequential):
    """Conv2d (no bias) -> BatchNorm2d [-> ReLU6], children named 0, 1, 2 as in ``nn.Sequential``.

    While training with frozen BatchNorm (online fine-tuning: the module trains, its BatchNorm
    uses running statistics), the BatchNorm is an affine map per channel: it is folded into the
    convolution's weight and bias on every call, so no separate pass over the activations runs
    forward or backward. The parameters stay the same tensors (conv weight, BN weight and bias),
    so gradients, optimiser state and checkpoints are exactly those of the unfolded layers. In eval
    mode the layers run unfolded: exporters and inference runtimes fold BatchNorm themselves (and
    an in-graph fold made ONNX Runtime refuse graphs whose BN tensors the exporter deduplicated).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv, bn = self[0], self[1]
        if bn.training or not self.training:
            return super().forward(x)
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)
        x = F.conv2d(x, conv.weight * scale.view(-1, 1, 1, 1), bn.bias - bn.running_mean * scale,
                     conv.stride, conv.padding, conv.dilation, conv.groups)
        return F.relu6(x) if len(self) > 2 else x


def _conv_bn(c_in: int, c_out: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> ConvBN:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(c_out)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return ConvBN(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> depthwise 3x3 (stride) -> 1x1 project (+ identity)."""

    def __init__(self, c_in: int, c_out: int, stride: int, expand: int):
        super().__init__()
        hidden = c_in * expand
        self.use_res = stride == 1 and c_in == c_out
        self.block = nn.Sequential(
            _conv_bn(c_in, hidden, 1),
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, c_out, 1, act=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class SepConvBlock(nn.Module):
    """Decoder ConvBlock: pointwise 1x1 (c_in -> c_out), depthwise 3x3, ELU.

    Pointwise first so the depthwise conv runs on the narrower output width
    (the decoder always narrows). Zero padding: reflection padding cost more
    than the conv itself at stride 2 on CPU; the disparity heads keep it.
    """

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.pw = nn.Conv2d(c_in, c_out, 1, bias=False)
        self.dw = nn.Conv2d(c_out, c_out, 3, padding=1, groups=c_out)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.dw(self.pw(x)))


class DispHead(nn.Module):
    """Reflection-padded 3x3 conv to ``upscale**2`` channels, pixel shuffle, sigmoid.

    With ``upscale=2`` the full-resolution disparity is predicted sub-pixel from
    half-resolution features: convolutions on few channels at full resolution
    are memory-bound on CPU and cost more than the whole encoder.
    """

    def __init__(self, c_in: int, upscale: int = 1):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(c_in, upscale * upscale, 3)
        self.shuffle = nn.PixelShuffle(upscale) if upscale > 1 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.shuffle(self.conv(self.pad(x))))


class DefaultDepthNet(DepthNet):
    """Light MobileNetV2-style depth U-Net (about 0.4 M parameters)."""

    arch = "default"

    def __init__(self, min_depth: float = 0.1, max_depth: float = 100.0):
        super().__init__(min_depth, max_depth)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)
        self.stem = nn.Sequential(_conv_bn(3, ENC_CH[0], 3, 2), InvertedResidual(ENC_CH[0], ENC_CH[0], 1, 1))
        stages = []
        c_in = ENC_CH[0]
        for c_out, stride, expand, repeats in STAGES:
            first = FIRST_EXPAND if not stages else expand
            blocks = [InvertedResidual(c_in, c_out, stride, first)]
            blocks += [InvertedResidual(c_out, c_out, 1, expand) for _ in range(repeats - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.stages = nn.ModuleList(stages)
        self.upconv0 = nn.ModuleList()
        self.upconv1 = nn.ModuleList()
        # Decoder levels i = 4..1 produce features at stride 2^i; scale 0 is
        # predicted from level 1 by a sub-pixel head (no full-resolution convs).
        for i in range(1, 5):
            ch_in = ENC_CH[-1] if i == 4 else DEC_CH[i + 1]
            self.upconv0.append(SepConvBlock(ch_in, DEC_CH[i]))
            self.upconv1.append(SepConvBlock(DEC_CH[i] + ENC_CH[i - 1], DEC_CH[i]))
        self.heads = nn.ModuleList([DispHead(DEC_CH[1], upscale=2)]
                                   + [DispHead(DEC_CH[s]) for s in range(1, 4)])

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,H,W) in [0,1] -> 5 features at strides 2..32 with ENC_CH channels."""
        x = self.stem((image - self.mean) / self.std)
        feats = [x]
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def _disps(self, image: torch.Tensor) -> list[torch.Tensor]:
        feats = self.encode(image)
        x = feats[-1]
        disps: list[torch.Tensor | None] = [None] * 4
        for i in range(4, 0, -1):
            x = F.interpolate(self.upconv0[i - 1](x), scale_factor=2, mode="nearest")
            x = self.upconv1[i - 1](torch.cat([x, feats[i - 1]], 1))   # stride 2^i
            if i < 4:
                disps[i] = self.heads[i](x)
        disps[0] = self.heads[0](x)
        return disps  # type: ignore[return-value]
