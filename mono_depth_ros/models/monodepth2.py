"""monodepth2's ResNet-18 / ResNet-50 depth U-Nets, parameter-compatible with its releases.

The module tree reproduces nianticlabs/monodepth2 ``networks/resnet_encoder.py``
and ``networks/depth_decoder.py`` so that ``state_dict()`` has EXACTLY the keys
and shapes of the released ``encoder.pth`` (``encoder.conv1.weight``,
``encoder.layer1.0.conv1.weight``, ... torchvision ResNet names, including the
unused ``encoder.fc``) and ``depth.pth`` (``decoder.0.conv.conv.weight``, ...
from its ModuleList). The ResNet is written here because torchvision is not a
dependency of this package.

A released folder (``mono_640x192/``, ``stereo_640x192/``, ``mono+stereo_1024x320/`` ...)
loads with :func:`mono_depth_ros.models.released.load_monodepth2_folder`. monodepth2 trains stereo with a 0.1 "baseline" in
its own units, so its depth is metric after multiplying by ``STEREO_SCALE_FACTOR`` = 5.4
(KITTI's 0.54 m baseline; evaluate_depth.py). The factor is applied exactly by widening the
depth range 5.4x (``disp_to_depth`` with min 0.54, max 540 equals 5.4 x that with 0.1, 100), so
every loss that uses the model's depth range sees metres. Monocular checkpoints are relative
(unknown scale, ``output_kind = "relative_scale"``).
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from .base import DepthNet

__all__ = ["Monodepth2ResNet18", "Monodepth2ResNet50", "ENCODER_META_KEYS", "STEREO_SCALE_FACTOR", "MONODEPTH2_KITTI_FX"]

#: Non-tensor entries monodepth2 stores in encoder.pth besides the weights.
ENCODER_META_KEYS = ("height", "width", "use_stereo")
#: monodepth2 evaluate_depth.py: stereo-trained depth x 5.4 = metres (KITTI baseline 0.54 m / 0.1).
STEREO_SCALE_FACTOR = 5.4
#: monodepth2's KITTI intrinsics (kitti_dataset.py), normalised: fx = 0.58 W, fy = 1.92 H,
#: principal point at the image centre. Its canonical camera at the network input size.
MONODEPTH2_KITTI_FX = 0.58
MONODEPTH2_KITTI_FY = 1.92

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


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 Bottleneck (stride on the 3x3 conv; same attribute names)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


#: depth -> (block, blocks per stage), torchvision's resnet18 / resnet50.
_RESNETS = {18: (BasicBlock, (2, 2, 2, 2)), 50: (Bottleneck, (3, 4, 6, 3))}


class ResNet(nn.Module):
    """torchvision ``resnet18`` / ``resnet50`` parameter layout (conv1, bn1, layer1..4, fc)."""

    def __init__(self, num_layers: int = 18):
        super().__init__()
        block, blocks = _RESNETS[num_layers]
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, blocks[0])
        self.layer2 = self._make_layer(block, 128, blocks[1], stride=2)
        self.layer3 = self._make_layer(block, 256, blocks[2], stride=2)
        self.layer4 = self._make_layer(block, 512, blocks[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, 1000)  # unused; kept for key compatibility
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        out = planes * block.expansion
        if stride != 1 or self.inplanes != out:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, out, 1, stride, bias=False), nn.BatchNorm2d(out))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = out
        layers += [block(out, planes) for _ in range(1, blocks)]
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

    Args:
        stereo: the weights were trained with stereo pairs (``use_stereo``): metric through
            :data:`STEREO_SCALE_FACTOR`; pass the depth range monodepth2 used (0.1, 100) and it
            is widened by 5.4 here. Without it the output is relative (``relative_scale``).
    """

    arch = "monodepth2_resnet18"
    num_layers = 18

    def __init__(self, min_depth: float = 0.1, max_depth: float = 100.0, stereo: bool = False,
                 metric: bool | None = None):
        if stereo:
            min_depth, max_depth = min_depth * STEREO_SCALE_FACTOR, max_depth * STEREO_SCALE_FACTOR
        super().__init__(min_depth, max_depth)
        # ``metric`` without ``stereo``: rebuilt from a checkpoint whose range already holds the factor
        self.output_kind = "metric" if (stereo if metric is None else metric) else "relative_scale"
        self.encoder = ResNet(self.num_layers)
        num_ch_enc = NUM_CH_ENC[:1] + tuple(c * (4 if self.num_layers > 34 else 1) for c in NUM_CH_ENC[1:])
        convs: "OrderedDict[tuple, nn.Module]" = OrderedDict()
        for i in range(4, -1, -1):
            ch_in = num_ch_enc[-1] if i == 4 else NUM_CH_DEC[i + 1]
            convs[("upconv", i, 0)] = ConvBlock(ch_in, NUM_CH_DEC[i])
            ch_in = NUM_CH_DEC[i] + (num_ch_enc[i - 1] if i > 0 else 0)
            convs[("upconv", i, 1)] = ConvBlock(ch_in, NUM_CH_DEC[i])
        for s in range(4):
            convs[("dispconv", s)] = Conv3x3(NUM_CH_DEC[s], 1)
        # Same ModuleList order as monodepth2 -> keys decoder.<index>.*
        self.decoder = nn.ModuleList(list(convs.values()))
        self._index = {key: n for n, key in enumerate(convs)}

    def backend_options(self) -> dict:
        """``metric`` only: a checkpoint's min/max_depth already include the stereo factor."""
        return {"metric": self.output_kind == "metric"}

    def _conv(self, key: tuple) -> nn.Module:
        return self.decoder[self._index[key]]

    def _disps(self, image: torch.Tensor) -> list[torch.Tensor]:
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


class Monodepth2ResNet50(Monodepth2ResNet18):
    """ResNet-50 encoder (channels 64, 256, 512, 1024, 2048) + monodepth2 depth decoder."""

    arch = "monodepth2_resnet50"
    num_layers = 50
