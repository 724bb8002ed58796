"""monodepth2's ResNet-18 depth U-Net, parameter-compatible with its releases.

The module tree reproduces nianticlabs/monodepth2 ``networks/resnet_encoder.py``
and ``networks/depth_decoder.py`` so that ``state_dict()`` has EXACTLY the keys
and shapes of the released ``encoder.pth`` (``encoder.conv1.weight``,
``encoder.layer1.0.conv1.weight``, ... torchvision ResNet names, including the
unused ``encoder.fc``) and ``depth.pth`` (``decoder.0.conv.conv.weight``, ...
from its ModuleList). The ResNet is written here because torchvision is not a
dependency of this package.
"""
from __future__ import annotations

import os
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .base import DepthNet

__all__ = ["Monodepth2ResNet18", "load_monodepth2", "ENCODER_META_KEYS"]

#: Non-tensor entries monodepth2 stores in encoder.pth besides the weights.
ENCODER_META_KEYS = ("height", "width", "use_stereo")

NUM_CH_ENC = (64, 64, 128, 256, 512)
NUM_CH_DEC = (16, 32, 64, 128, 256)


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same attribute names)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet18(nn.Module):
    """torchvision ``resnet18`` parameter layout (conv1, bn1, layer1..4, fc)."""

    def __init__(self):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(64, 2)
        self.layer2 = self._make_layer(128, 2, stride=2)
        self.layer3 = self._make_layer(256, 2, stride=2)
        self.layer4 = self._make_layer(512, 2, stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, 1000)  # unused; kept for key compatibility
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))
        layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes
        layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,H,W) normalised -> 5 features at strides 2,4,8,16,32."""
        f0 = self.relu(self.bn1(self.conv1(x)))
        f1 = self.layer1(self.maxpool(f0))
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        return [f0, f1, f2, f3, f4]


class Conv3x3(nn.Module):
    """Reflection-padded 3x3 conv (monodepth2 layers.Conv3x3: attributes pad, conv)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(in_ch, out_ch, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class ConvBlock(nn.Module):
    """Conv3x3 + ELU (monodepth2 layers.ConvBlock: attributes conv, nonlin)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv = Conv3x3(in_ch, out_ch)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlin(self.conv(x))


class Monodepth2ResNet18(DepthNet):
    """ResNet-18 encoder + monodepth2 depth decoder (skips, nearest upsampling).

    ``state_dict()`` is the union of monodepth2's ``encoder.pth`` (less its
    height/width/use_stereo entries) and ``depth.pth``.
    """

    arch = "monodepth2_resnet18"

    def __init__(self, min_depth: float = 0.1, max_depth: float = 100.0):
        super().__init__(min_depth, max_depth)
        self.encoder = ResNet18()
        convs: "OrderedDict[tuple, nn.Module]" = OrderedDict()
        for i in range(4, -1, -1):
            ch_in = NUM_CH_ENC[-1] if i == 4 else NUM_CH_DEC[i + 1]
            convs[("upconv", i, 0)] = ConvBlock(ch_in, NUM_CH_DEC[i])
            ch_in = NUM_CH_DEC[i] + (NUM_CH_ENC[i - 1] if i > 0 else 0)
            convs[("upconv", i, 1)] = ConvBlock(ch_in, NUM_CH_DEC[i])
        for s in range(4):
            convs[("dispconv", s)] = Conv3x3(NUM_CH_DEC[s], 1)
        # Same ModuleList order as monodepth2 -> keys decoder.<index>.*
        self.decoder = nn.ModuleList(list(convs.values()))
        self._index = {key: n for n, key in enumerate(convs)}

    def _conv(self, key: tuple) -> nn.Module:
        return self.decoder[self._index[key]]

    def forward_disps(self, image: torch.Tensor) -> list[torch.Tensor]:
        feats = self.encoder.features((image - 0.45) / 0.225)
        x = feats[-1]
        disps: list[torch.Tensor | None] = [None] * 4
        for i in range(4, -1, -1):
            x = self._conv(("upconv", i, 0))(x)
            x = [F.interpolate(x, scale_factor=2, mode="nearest")]
            if i > 0:
                x.append(feats[i - 1])
            x = self._conv(("upconv", i, 1))(torch.cat(x, 1))
            if i < 4:
                disps[i] = torch.sigmoid(self._conv(("dispconv", i))(x))
        return disps  # type: ignore[return-value]

    def encoder_state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        """Keys/values as in monodepth2's encoder.pth (without its meta entries)."""
        return OrderedDict((k, v) for k, v in self.state_dict().items() if k.startswith("encoder."))

    def decoder_state_dict(self) -> "OrderedDict[str, torch.Tensor]":
        """Keys/values as in monodepth2's depth.pth."""
        return OrderedDict((k, v) for k, v in self.state_dict().items() if k.startswith("decoder."))


def load_monodepth2(encoder_path: str | os.PathLike, depth_path: str | os.PathLike,
                    min_depth: float = 0.1, max_depth: float = 100.0
                    ) -> tuple[Monodepth2ResNet18, dict]:
    """Build a :class:`Monodepth2ResNet18` from monodepth2's released files.

    Files are read with ``torch.load(weights_only=True)``. ``encoder.pth`` also
    holds ``height``, ``width`` and ``use_stereo``; they are returned in the
    meta dict (``input_size`` = (height, width)), not loaded as weights.

    Returns:
        (model in eval mode, meta dict).
    Raises:
        ValueError: keys or shapes do not match monodepth2's ResNet-18 layout.
    """
    from .registry import load_weights  # local import: registry imports this module

    enc = torch.load(os.fspath(encoder_path), map_location="cpu", weights_only=True)
    dec = torch.load(os.fspath(depth_path), map_location="cpu", weights_only=True)
    if not isinstance(enc, dict) or not isinstance(dec, dict):
        raise ValueError(f"{encoder_path} / {depth_path}: expected state dicts, got "
                         f"{type(enc).__name__} / {type(dec).__name__}")
    meta = {k: enc[k] for k in ENCODER_META_KEYS if k in enc}
    state = {k: v for k, v in enc.items() if k not in ENCODER_META_KEYS}
    state.update(dec)
    model = Monodepth2ResNet18(min_depth=min_depth, max_depth=max_depth)
    load_weights(model, state, source=f"{encoder_path} + {depth_path}")
    if "height" in meta and "width" in meta:
        meta["input_size"] = (int(meta["height"]), int(meta["width"]))
    model.eval()
    return model, meta
