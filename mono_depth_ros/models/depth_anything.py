"""Depth Anything V2 (Small / Base; relative or metric) behind the DepthNet contract.

The module tree reproduces the official repository (DepthAnything/Depth-Anything-V2,
``depth_anything_v2/dpt.py``, ``dinov2.py``, ``dinov2_layers/``, ``util/blocks.py``; the metric
variant from ``metric_depth/depth_anything_v2/dpt.py``) so that ``state_dict()`` has EXACTLY the
keys of the released ``depth_anything_v2_vits.pth`` / ``_vitb.pth`` /
``depth_anything_v2_metric_{hypersim,vkitti}_vit{s,b}.pth`` files: ``pretrained.*`` (DINOv2 ViT
with patch 14, layer scale, ``mask_token``) and ``depth_head.*`` (DPT: ``projects``,
``resize_layers``, ``scratch.layer{1..4}_rn``, ``scratch.refinenet{1..4}``,
``scratch.output_conv{1,2}``). Nothing is imported from those repositories; no xformers.

transformers' layout (``DepthAnythingForDepthEstimation``: ``backbone.*``, ``neck.*``, ``head.*``)
is converted key by key to this one with :func:`hf_to_official`; transformers interpolates the
position embeddings to an exact size while DINOv2 uses a scale factor with a 0.1 offset, so a
converted model runs with ``pos_interpolation="transformers"`` and reproduces transformers'
forward.

Outputs (``native``): relative models give an affine-invariant disparity (ReLU);
metric models give metres, ``sigmoid * head_max_depth`` (20 for Hypersim, 80 for Virtual
KITTI). ``predict_disps`` re-expresses either as the sigmoid the package's
:func:`~mono_depth_ros.models.base.disp_to_depth` inverts, so every loss works unchanged.
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from .base import DepthNet

__all__ = ["DepthAnythingV2", "VARIANTS", "hf_to_official", "official_variant", "hf_config"]

#: variant -> (official encoder name, embed dim, heads, DPT features, DPT out_channels), dpt.py's
#: ``model_configs``.
VARIANTS = {
    "small": ("vits", 384, 6, 64, (48, 96, 192, 384)),
    "base": ("vitb", 768, 12, 128, (96, 192, 384, 768)),
}
#: Blocks whose outputs feed the DPT head (``intermediate_layer_idx`` for vits / vitb).
LAYER_IDX = (2, 5, 8, 11)
PATCH = 14
#: DINOv2's position-embedding grid: img_size 518 / patch 14.
POS_GRID = 37
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


# --- DINOv2 (dinov2.py, dinov2_layers/) -------------------------------------------------------
class PatchEmbed(nn.Module):
    """(B,3,H,W) -> (B,N,D) tokens; attributes ``proj`` (conv 14x14/14) and ``norm`` (identity)."""

    def __init__(self, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, PATCH, PATCH)
        self.norm = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).flatten(2).transpose(1, 2))


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection and ``proj``."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.num_heads = heads
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # softmax(q k^T / sqrt(d)) v
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init_values: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(init_values * torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with layer scale (dinov2_layers/block.py)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, dim * 4)
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """DINOv2 ViT/14 as Depth Anything V2 builds it (img_size 518, init_values 1, no registers)."""

    def __init__(self, dim: int, heads: int, depth: int = 12, pos_interpolation: str = "official"):
        super().__init__()
        if pos_interpolation not in ("official", "transformers"):
            raise ValueError(f"pos_interpolation must be 'official' or 'transformers', got {pos_interpolation!r}")
        self.pos_interpolation = pos_interpolation
        self.embed_dim = dim
        self.patch_embed = PatchEmbed(dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, POS_GRID * POS_GRID + 1, dim))
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Identity()
        self.mask_token = nn.Parameter(torch.zeros(1, dim))  # unused at inference; kept for key compatibility
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def interpolate_pos_encoding(self, n_tokens: int, h: int, w: int) -> torch.Tensor:
        """(1,1+N,D) position embeddings for an (h, w) input, N = (h/14)(w/14)."""
        N = self.pos_embed.shape[1] - 1
        if n_tokens - 1 == N and h == w:
            return self.pos_embed
        pos = self.pos_embed.float()
        dim = pos.shape[-1]
        grid = pos[:, 1:].reshape(1, POS_GRID, POS_GRID, dim).permute(0, 3, 1, 2)
        if self.pos_interpolation == "official":
            # dinov2.py: scale factors from (h/14 + 0.1) / sqrt(N) (interpolate_offset 0.1), bicubic
            sy, sx = (h // PATCH + 0.1) / math.sqrt(N), (w // PATCH + 0.1) / math.sqrt(N)
            grid = F.interpolate(grid, scale_factor=(sy, sx), mode="bicubic", antialias=False)
        else:  # transformers' Dinov2Embeddings: the exact output size
            grid = F.interpolate(grid, size=(h // PATCH, w // PATCH), mode="bicubic", align_corners=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((pos[:, :1], grid), dim=1).to(self.pos_embed.dtype)

    def get_intermediate_layers(self, x: torch.Tensor, idx=LAYER_IDX) -> list[torch.Tensor]:
        """(B,3,H,W) normalised -> normed patch tokens (B,N,D) after each block in ``idx``."""
        h, w = int(x.shape[-2]), int(x.shape[-1])  # python ints: an exported graph has a fixed input size
        t = self.patch_embed(x)
        t = torch.cat((self.cls_token.expand(t.shape[0], -1, -1), t), dim=1)
        t = t + self.interpolate_pos_encoding(t.shape[1], h, w)
        out = []
        for i, blk in enumerate(self.blocks):
            t = blk(t)
            if i in idx:
                out.append(self.norm(t)[:, 1:])
        return out


# --- DPT head (dpt.py, util/blocks.py) ----------------------------------------------------------
class ResidualConvUnit(nn.Module):
    def __init__(self, features: int, activation: nn.Module):
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, 1, 1, bias=True)
        self.conv2 = nn.Conv2d(features, features, 3, 1, 1, bias=True)
        self.activation = activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.activation(x))
        out = self.conv2(self.activation(out))
        return out + x


class FeatureFusionBlock(nn.Module):
    def __init__(self, features: int):
        super().__init__()
        act = nn.ReLU(False)
        self.out_conv = nn.Conv2d(features, features, 1, 1, 0, bias=True)
        self.resConfUnit1 = ResidualConvUnit(features, act)
        self.resConfUnit2 = ResidualConvUnit(features, act)

    def forward(self, *xs: torch.Tensor, size=None) -> torch.Tensor:
        out = xs[0]
        if len(xs) == 2:
            out = out + self.resConfUnit1(xs[1])
        out = self.resConfUnit2(out)
        if size is None:
            out = F.interpolate(out, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(out)


class DPTHead(nn.Module):
    """DPT head without class-token readout (``use_clstoken=False``, ``use_bn=False``)."""

    def __init__(self, in_channels: int, features: int, out_channels: tuple[int, ...], metric: bool):
        super().__init__()
        self.projects = nn.ModuleList(nn.Conv2d(in_channels, c, 1) for c in out_channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(out_channels[0], out_channels[0], 4, 4, 0),
            nn.ConvTranspose2d(out_channels[1], out_channels[1], 2, 2, 0),
            nn.Identity(),
            nn.Conv2d(out_channels[3], out_channels[3], 3, 2, 1)])
        self.scratch = nn.Module()
        for i, c in enumerate(out_channels):
            setattr(self.scratch, f"layer{i + 1}_rn", nn.Conv2d(c, features, 3, 1, 1, bias=False))
        for i in range(1, 5):
            setattr(self.scratch, f"refinenet{i}", FeatureFusionBlock(features))
        self.scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, 1, 1)
        last = [nn.Sigmoid()] if metric else [nn.ReLU(True), nn.Identity()]
        self.scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, 32, 3, 1, 1), nn.ReLU(True), nn.Conv2d(32, 1, 1, 1, 0), *last)

    def forward(self, feats: list[torch.Tensor], patch_h: int, patch_w: int) -> torch.Tensor:
        """4 x (B,N,D) tokens -> (B,1,14 patch_h,14 patch_w)."""
        out = []
        for i, x in enumerate(feats):
            x = x.permute(0, 2, 1).reshape(x.shape[0], x.shape[-1], patch_h, patch_w)
            out.append(self.resize_layers[i](self.projects[i](x)))
        s = self.scratch
        l1, l2, l3, l4 = s.layer1_rn(out[0]), s.layer2_rn(out[1]), s.layer3_rn(out[2]), s.layer4_rn(out[3])
        p4 = s.refinenet4(l4, size=l3.shape[2:])
        p3 = s.refinenet3(p4, l3, size=l2.shape[2:])
        p2 = s.refinenet2(p3, l2, size=l1.shape[2:])
        p1 = s.refinenet1(p2, l1)
        y = s.output_conv1(p1)
        y = F.interpolate(y, (int(patch_h * PATCH), int(patch_w * PATCH)), mode="bilinear", align_corners=True)
        return s.output_conv2(y)


class DepthAnythingV2(DepthNet):
    """Depth Anything V2 (official parameter layout) as a :class:`DepthNet`.

    Args:
        variant: ``small`` (ViT-S, 24.8 M parameters) or ``base`` (ViT-B, 97.5 M).
        metric: the metric_depth head (sigmoid x ``head_max_depth``), else the relative head.
        head_max_depth: metric_depth's ``max_depth`` (Hypersim 20, Virtual KITTI 80).
        pos_interpolation: ``official`` (DINOv2) or ``transformers`` (weights converted from
            transformers; reproduces its forward).
    """

    size_multiple = PATCH
    num_scales = 1

    def __init__(self, min_depth: float = 0.1, max_depth: float = 100.0, variant: str = "small",
                 metric: bool = False, head_max_depth: float = 20.0, pos_interpolation: str = "official"):
        super().__init__(min_depth, max_depth)
        if variant not in VARIANTS:
            raise ValueError(f"Depth Anything V2 variant must be one of {list(VARIANTS)}, got {variant!r}")
        if metric and not head_max_depth > 0:
            raise ValueError(f"head_max_depth must be > 0, got {head_max_depth}")
        _, dim, heads, features, out_ch = VARIANTS[variant]
        self.variant, self.metric, self.head_max_depth = variant, bool(metric), float(head_max_depth)
        self.arch = f"depth_anything_v2{'_metric' if metric else ''}_{variant}"
        self.output_kind = "metric" if metric else "relative_affine_disparity"
        self.pretrained = DinoVisionTransformer(dim, heads, pos_interpolation=pos_interpolation)
        self.depth_head = DPTHead(dim, features, out_ch, metric)
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def backend_options(self) -> dict:
        return {"head_max_depth": self.head_max_depth, "pos_interpolation": self.pretrained.pos_interpolation}

    def head_parameters(self) -> list[nn.Parameter]:
        """The DPT head's parameters (what online adaptation trains on a CPU)."""
        return list(self.depth_head.parameters())

    def freeze_backbone(self, frozen: bool = True) -> "DepthAnythingV2":
        """``requires_grad = not frozen`` on the ViT: only the DPT head is fine-tuned.

        Optimisers built over ``parameters()`` skip parameters without gradients.
        """
        for p in self.pretrained.parameters():
            p.requires_grad_(not frozen)
        return self

    def forward_official(self, x: torch.Tensor) -> torch.Tensor:
        """The official ``DepthAnythingV2.forward``: (B,3,H,W) ImageNet-normalised -> (B,H,W)."""
        ph, pw = x.shape[-2] // PATCH, x.shape[-1] // PATCH
        feats = self.pretrained.get_intermediate_layers(x)
        out = self.depth_head(feats, ph, pw)
        out = out * self.head_max_depth if self.metric else F.relu(out)
        return out.squeeze(1)

    def native(self, image: torch.Tensor) -> torch.Tensor:
        """(B,3,H,W) in [0,1] -> (B,1,H,W): metres (metric) or relative disparity (relative)."""
        return self.forward_official((image - self.mean) / self.std).unsqueeze(1)

    def _disps(self, image: torch.Tensor) -> list[torch.Tensor]:
        """(B,3,H,W) in [0,1] -> [(B,1,H,W)] sigmoid-like map s with disp_to_depth(s) = the output.

        Metric: depth clamped to [min_depth, max_depth]. Relative: the disparity read as 1/metres,
        clamped to [1/max_depth, 1/min_depth] (its scale and shift are unknown).
        """
        y = self.native(image)
        lo, hi = 1.0 / self.max_depth, 1.0 / self.min_depth
        disp = 1.0 / y.clamp(self.min_depth, self.max_depth) if self.metric else y.clamp(lo, hi)
        return [(disp - lo) / (hi - lo)]


def official_variant(state: dict) -> str:
    """``small`` / ``base`` from an official state dict's ``pretrained.pos_embed`` width."""
    w = state.get("pretrained.pos_embed")
    dims = {v[1]: k for k, v in VARIANTS.items()}
    if not isinstance(w, torch.Tensor) or w.shape[-1] not in dims:
        got = None if not isinstance(w, torch.Tensor) else tuple(w.shape)
        raise ValueError(f"not a Depth Anything V2 Small/Base state dict: pretrained.pos_embed is {got} "
                         f"(embed dim must be one of {sorted(dims)}; Large/Giant are not supported)")
    return dims[int(w.shape[-1])]


_HF_FUSION = {0: 4, 1: 3, 2: 2, 3: 1}  # transformers' fusion_stage.layers.i <-> official refinenet{j}
_HF_RULES = [
    (r"backbone\.embeddings\.cls_token", "pretrained.cls_token"),
    (r"backbone\.embeddings\.mask_token", "pretrained.mask_token"),
    (r"backbone\.embeddings\.position_embeddings", "pretrained.pos_embed"),
    (r"backbone\.embeddings\.patch_embeddings\.projection\.(\w+)", r"pretrained.patch_embed.proj.\1"),
    (r"backbone\.encoder\.layer\.(\d+)\.norm(\d)\.(\w+)", r"pretrained.blocks.\1.norm\2.\3"),
    (r"backbone\.encoder\.layer\.(\d+)\.attention\.output\.dense\.(\w+)", r"pretrained.blocks.\1.attn.proj.\2"),
    (r"backbone\.encoder\.layer\.(\d+)\.attention\.o_proj\.(\w+)", r"pretrained.blocks.\1.attn.proj.\2"),
    (r"backbone\.encoder\.layer\.(\d+)\.layer_scale(\d)\.lambda1", r"pretrained.blocks.\1.ls\2.gamma"),
    (r"backbone\.encoder\.layer\.(\d+)\.mlp\.(fc\d)\.(\w+)", r"pretrained.blocks.\1.mlp.\2.\3"),
    (r"backbone\.layernorm\.(\w+)", r"pretrained.norm.\1"),
    (r"neck\.reassemble_stage\.layers\.(\d)\.projection\.(\w+)", r"depth_head.projects.\1.\2"),
    (r"neck\.reassemble_stage\.layers\.(\d)\.resize\.(\w+)", r"depth_head.resize_layers.\1.\2"),
    (r"head\.conv1\.(\w+)", r"depth_head.scratch.output_conv1.\1"),
    (r"head\.conv2\.(\w+)", r"depth_head.scratch.output_conv2.0.\1"),
    (r"head\.conv3\.(\w+)", r"depth_head.scratch.output_conv2.2.\1"),
]


def hf_to_official(state: dict, source: str = "state dict") -> dict:
    """transformers ``DepthAnythingForDepthEstimation`` keys -> the official layout's keys.

    Accepts the hub's names (``attention.attention.query`` ..., ``attention.output.dense``, as
    transformers 4 writes them) and transformers 5's in-memory ones (``attention.q_proj`` ...,
    ``attention.o_proj``). The separate ``query``/``key``/``value`` projections are concatenated into ``qkv``.

    Raises:
        ValueError: a key that belongs to neither layout (named, with the file).
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for k, v in state.items():
        m = re.fullmatch(r"backbone\.encoder\.layer\.(\d+)\.attention\.(?:attention\.)?(query|key|value|q_proj|k_proj"
                         r"|v_proj)\.(\w+)", k)
        if m:
            part = {"q_proj": "query", "k_proj": "key", "v_proj": "value"}.get(m.group(2), m.group(2))
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[part] = v
            continue
        m = re.fullmatch(r"neck\.convs\.(\d)\.weight", k)
        if m:
            out[f"depth_head.scratch.layer{int(m.group(1)) + 1}_rn.weight"] = v
            continue
        m = re.fullmatch(r"neck\.fusion_stage\.layers\.(\d)\.(\w+)\.(.*)", k)
        if m:
            j, part, rest = _HF_FUSION[int(m.group(1))], m.group(2), m.group(3)
            part = {"projection": "out_conv", "residual_layer1": "resConfUnit1",
                    "residual_layer2": "resConfUnit2"}.get(part, part)
            rest = rest.replace("convolution1", "conv1").replace("convolution2", "conv2")
            out[f"depth_head.scratch.refinenet{j}.{part}.{rest}"] = v
            continue
        for pat, rep in _HF_RULES:
            if re.fullmatch(pat, k):
                out[re.sub(pat, rep, k)] = v
                break
        else:
            raise ValueError(f"{source}: key {k!r} is not part of transformers' DepthAnythingForDepthEstimation "
                             f"(Small/Base, no class-token readout)")
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise ValueError(f"{source}: layer {i} attention {kind} lacks one of query/key/value")
        out[f"pretrained.blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    if "pretrained.mask_token" in out and out["pretrained.mask_token"].dim() == 3:
        out["pretrained.mask_token"] = out["pretrained.mask_token"].reshape(1, -1)
    return out


def hf_config(variant: str = "small", metric: bool = False, head_max_depth: float = 20.0):
    """transformers' ``DepthAnythingConfig`` of Depth-Anything-V2-{Small,Base}-hf (or the metric ones)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    _, dim, heads, features, out_ch = VARIANTS[variant]
    backbone = Dinov2Config(hidden_size=dim, num_hidden_layers=12, num_attention_heads=heads, patch_size=PATCH,
                            image_size=518, out_indices=[3, 6, 9, 12], reshape_hidden_states=False,
                            out_features=["stage3", "stage6", "stage9", "stage12"])
    return DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=dim,
                               neck_hidden_sizes=list(out_ch), fusion_hidden_size=features,
                               head_hidden_size=32, reassemble_factors=[4, 2, 1, 0.5],
                               depth_estimation_type="metric" if metric else "relative",
                               max_depth=_int_if_whole(head_max_depth) if metric else 1)


def _int_if_whole(v: float):
    """transformers 5 types ``max_depth`` as int; Depth Anything's metric ranges (20, 80) are whole."""
    return int(v) if float(v).is_integer() else float(v)
