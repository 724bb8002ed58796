"""Backends (issue 15): every supported weights layout, saved exactly as the original code saves it
with random weights, loads through the package and reproduces the original forward to 1e-4;
canonical camera known answers; ONNX export against eager.

Originals read for the layouts: nianticlabs/monodepth2 (networks/resnet_encoder.py,
networks/depth_decoder.py, trainer.py save_model, layers.disp_to_depth, evaluate_depth.py),
DepthAnything/Depth-Anything-V2 (depth_anything_v2/dpt.py, dinov2.py, dinov2_layers/,
util/blocks.py, metric_depth/depth_anything_v2/dpt.py) and transformers'
DepthAnythingForDepthEstimation. Nothing is downloaded.
"""
from __future__ import annotations

import math
from collections import OrderedDict

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mono_depth_ros.canonical import CanonicalCamera, focal_ratio, run_canonical
from mono_depth_ros.checkpoint import (CheckpointError, load_checkpoint, load_model, save_checkpoint,
                                       shipped_checkpoint_path)
from mono_depth_ros.models import build_model
from mono_depth_ros.models.depth_anything import hf_config, hf_to_official
from mono_depth_ros.models.monodepth2 import ResNet

torch.set_num_threads(1)
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> None:
    """|a - b| <= tol * max(1, |b|) everywhere (1e-4 absolute for values up to 1, relative above)."""
    a, b = a.detach().float(), b.detach().float()
    assert a.shape == b.shape, (a.shape, b.shape)
    err = float(((a - b).abs() / b.abs().clamp(min=1.0)).max())
    assert err <= tol, f"max scaled error {err:.2e} > {tol:g}"


# --------------------------------------------------------------------------- monodepth2
class _Conv3x3(nn.Module):  # monodepth2 layers.Conv3x3 (use_refl=True)
    def __init__(self, cin, cout):
        super().__init__()
        self.pad = nn.ReflectionPad2d(1)
        self.conv = nn.Conv2d(int(cin), int(cout), 3)

    def forward(self, x):
        return self.conv(self.pad(x))


class _ConvBlock(nn.Module):  # monodepth2 layers.ConvBlock
    def __init__(self, cin, cout):
        super().__init__()
        self.conv = _Conv3x3(cin, cout)
        self.nonlin = nn.ELU(inplace=True)

    def forward(self, x):
        return self.nonlin(self.conv(x))


class _RefResnetEncoder(nn.Module):
    """monodepth2 networks/resnet_encoder.py ResnetEncoder (torchvision ResNet under ``encoder``)."""

    def __init__(self, num_layers):
        super().__init__()
        self.num_ch_enc = np.array([64, 64, 128, 256, 512])
        self.encoder = ResNet(num_layers)  # torchvision resnet18/50 parameter layout
        if num_layers > 34:
            self.num_ch_enc[1:] *= 4

    def forward(self, input_image):
        self.features = []
        x = (input_image - 0.45) / 0.225
        x = self.encoder.conv1(x)
        x = self.encoder.bn1(x)
        self.features.append(self.encoder.relu(x))
        self.features.append(self.encoder.layer1(self.encoder.maxpool(self.features[-1])))
        self.features.append(self.encoder.layer2(self.features[-1]))
        self.features.append(self.encoder.layer3(self.features[-1]))
        self.features.append(self.encoder.layer4(self.features[-1]))
        return self.features


class _RefDepthDecoder(nn.Module):
    """monodepth2 networks/depth_decoder.py DepthDecoder, verbatim structure."""

    def __init__(self, num_ch_enc, scales=range(4)):
        super().__init__()
        self.scales = scales
        self.num_ch_enc = num_ch_enc
        self.num_ch_dec = np.array([16, 32, 64, 128, 256])
        self.convs = OrderedDict()
        for i in range(4, -1, -1):
            num_ch_in = self.num_ch_enc[-1] if i == 4 else self.num_ch_dec[i + 1]
            self.convs[("upconv", i, 0)] = _ConvBlock(num_ch_in, self.num_ch_dec[i])
            num_ch_in = self.num_ch_dec[i]
            if i > 0:
                num_ch_in += self.num_ch_enc[i - 1]
            self.convs[("upconv", i, 1)] = _ConvBlock(num_ch_in, self.num_ch_dec[i])
        for s in self.scales:
            self.convs[("dispconv", s)] = _Conv3x3(self.num_ch_dec[s], 1)
        self.decoder = nn.ModuleList(list(self.convs.values()))
        self.sigmoid = nn.Sigmoid()

    def forward(self, input_features):
        outputs = {}
        x = input_features[-1]
        for i in range(4, -1, -1):
            x = self.convs[("upconv", i, 0)](x)
            x = [F.interpolate(x, scale_factor=2, mode="nearest")]
            if i > 0:
                x += [input_features[i - 1]]
            x = torch.cat(x, 1)
            x = self.convs[("upconv", i, 1)](x)
            if i in self.scales:
                outputs[("disp", i)] = self.sigmoid(self.convs[("dispconv", i)](x))
        return outputs


def _save_monodepth2(folder, num_layers: int, use_stereo: bool, height=64, width=96):
    """Random monodepth2 model saved as trainer.save_model does; returns the reference (encoder, decoder)."""
    torch.manual_seed(num_layers + use_stereo)
    enc, dec = _RefResnetEncoder(num_layers), None
    dec = _RefDepthDecoder(enc.num_ch_enc)
    for m in enc.modules():  # non-trivial BatchNorm statistics
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
    folder.mkdir(parents=True, exist_ok=True)
    to_save = enc.state_dict()
    to_save["height"] = height
    to_save["width"] = width
    to_save["use_stereo"] = use_stereo
    torch.save(to_save, folder / "encoder.pth")
    torch.save(dec.state_dict(), folder / "depth.pth")
    return enc.eval(), dec.eval()


def _ref_monodepth2_depth(enc, dec, x, stereo: bool):
    """evaluate_depth.py: disp_to_depth(disp, 0.1, 100) -> 1/scaled_disp, x STEREO_SCALE_FACTOR for stereo."""
    with torch.no_grad():
        disp = dec(enc(x))[("disp", 0)]
    min_disp, max_disp = 1 / 100.0, 1 / 0.1
    depth = 1 / (min_disp + (max_disp - min_disp) * disp)
    return depth * (5.4 if stereo else 1.0)


@pytest.mark.parametrize("num_layers,stereo", [(18, False), (18, True), (50, True)])
def test_monodepth2_folder_matches_reference(tmp_path, num_layers, stereo):
    enc, dec = _save_monodepth2(tmp_path / "mono_640x192", num_layers, stereo)
    model, info = load_model("monodepth2", tmp_path / "mono_640x192")
    assert model.arch == f"monodepth2_resnet{num_layers}"
    assert info["input_size"] == (64, 96)
    assert model.output_kind == ("metric" if stereo else "relative_scale")
    assert (info["canonical_camera"] is not None) == stereo
    x = torch.rand(2, 3, 64, 96)
    with torch.no_grad():
        got = model.predict_depth(x)
    _close(got, _ref_monodepth2_depth(enc, dec, x, stereo))
    # the released keys exactly (encoder.pth less its meta entries, depth.pth)
    keys = set(torch.load(tmp_path / "mono_640x192" / "encoder.pth", weights_only=True)) - {"height", "width",
                                                                                            "use_stereo"}
    keys |= set(torch.load(tmp_path / "mono_640x192" / "depth.pth", weights_only=True))
    assert keys == set(model.state_dict())


def test_monodepth2_stereo_survives_checkpoint_roundtrip(tmp_path):
    _save_monodepth2(tmp_path / "stereo", 18, True)
    model, info = load_model("monodepth2", tmp_path / "stereo")
    p = save_checkpoint(tmp_path / "s.pt", model, info["input_size"], canonical_camera=info["canonical_camera"])
    again, info2 = load_checkpoint(p)
    assert again.output_kind == "metric" and again.min_depth == pytest.approx(0.54)
    assert info2["canonical_camera"] == info["canonical_camera"]
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        _close(again.predict_depth(x), model.predict_depth(x))


def test_monodepth2_bad_folder_names_file(tmp_path):
    (tmp_path / "m").mkdir()
    torch.save({"encoder.conv1.weight": torch.zeros(1)}, tmp_path / "m" / "encoder.pth")
    with pytest.raises(CheckpointError, match="depth.pth"):
        load_model("monodepth2", tmp_path / "m")
    _save_monodepth2(tmp_path / "ok", 18, False)
    dec = torch.load(tmp_path / "ok" / "depth.pth", weights_only=True)
    dec.pop("decoder.0.conv.conv.weight")
    torch.save(dec, tmp_path / "ok" / "depth.pth")
    with pytest.raises(CheckpointError, match=r"ok.*decoder\.0\.conv\.conv\.weight"):
        load_model("monodepth2", tmp_path / "ok")


# --------------------------------------------------------------------------- Depth Anything V2
def _official_keys(variant_dim: int, depth: int = 12) -> set[str]:
    """Every state-dict key of the official DepthAnythingV2 (vits/vitb, use_clstoken=False), as its
    modules name them (dinov2.py, dinov2_layers/, dpt.py, util/blocks.py)."""
    keys = {"pretrained.cls_token", "pretrained.pos_embed", "pretrained.mask_token",
            "pretrained.patch_embed.proj.weight", "pretrained.patch_embed.proj.bias",
            "pretrained.norm.weight", "pretrained.norm.bias"}
    for i in range(depth):
        b = f"pretrained.blocks.{i}."
        keys |= {b + k for k in ("norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
                                 "attn.proj.weight", "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias",
                                 "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma")}
    h = "depth_head."
    for i in range(4):
        keys |= {f"{h}projects.{i}.weight", f"{h}projects.{i}.bias", f"{h}scratch.layer{i + 1}_rn.weight"}
        if i != 2:
            keys |= {f"{h}resize_layers.{i}.weight", f"{h}resize_layers.{i}.bias"}
        r = f"{h}scratch.refinenet{i + 1}."
        keys |= {r + "out_conv.weight", r + "out_conv.bias"}
        for u in (1, 2):
            for c in (1, 2):
                keys |= {f"{r}resConfUnit{u}.conv{c}.weight", f"{r}resConfUnit{u}.conv{c}.bias"}
    keys |= {f"{h}scratch.output_conv1.weight", f"{h}scratch.output_conv1.bias",
             f"{h}scratch.output_conv2.0.weight", f"{h}scratch.output_conv2.0.bias",
             f"{h}scratch.output_conv2.2.weight", f"{h}scratch.output_conv2.2.bias"}
    return keys


def _official_interpolate_pos_encoding(emb):
    """dinov2.py DinoVisionTransformer.interpolate_pos_encoding (interpolate_offset 0.1, bicubic, no
    antialias), in place of transformers' exact-size one: turns transformers' model into the official one."""
    def interp(embeddings, height, width):
        pos_embed = emb.position_embeddings.float()
        N = pos_embed.shape[1] - 1
        if embeddings.shape[1] - 1 == N and height == width:
            return emb.position_embeddings
        class_pos_embed, patch_pos_embed = pos_embed[:, 0], pos_embed[:, 1:]
        dim = embeddings.shape[-1]
        w0, h0 = height // 14 + 0.1, width // 14 + 0.1  # official names: x.shape is (B, nc, w, h)
        sqrt_N = math.sqrt(N)
        patch_pos_embed = F.interpolate(patch_pos_embed.reshape(1, int(sqrt_N), int(sqrt_N), dim).permute(0, 3, 1, 2),
                                        scale_factor=(w0 / sqrt_N, h0 / sqrt_N), mode="bicubic", antialias=False)
        assert int(w0) == patch_pos_embed.shape[-2] and int(h0) == patch_pos_embed.shape[-1]
        patch_pos_embed = patch_pos_embed.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((class_pos_embed.unsqueeze(0), patch_pos_embed), dim=1).to(embeddings.dtype)
    return interp


def _hf_model(variant: str, metric: bool, head_max_depth: float = 20.0, seed: int = 0):
    from transformers import DepthAnythingForDepthEstimation

    torch.manual_seed(seed)
    hf = DepthAnythingForDepthEstimation(hf_config(variant, metric, head_max_depth)).eval()
    with torch.no_grad():  # signal through the DPT convs; outputs away from ReLU's zero / the sigmoid's flat ends
        for m in list(hf.neck.modules()) + list(hf.head.modules()):
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                m.weight.mul_(0.5)
        hf.head.conv3.bias.fill_(2.0 if not metric else 0.0)
        hf.backbone.embeddings.position_embeddings.normal_(0, 0.5)
    return hf


@pytest.mark.parametrize("variant,metric", [("small", False), ("small", True), ("base", False)])
def test_depth_anything_official_pth_matches_reference(tmp_path, variant, metric):
    hf = _hf_model(variant, metric)
    hf.backbone.embeddings.interpolate_pos_encoding = _official_interpolate_pos_encoding(hf.backbone.embeddings)
    state = hf_to_official(hf.state_dict())
    dim = 384 if variant == "small" else 768
    assert set(state) == _official_keys(dim)
    assert state["pretrained.mask_token"].shape == (1, dim) and state["pretrained.pos_embed"].shape == (1, 1370, dim)
    enc = "vits" if variant == "small" else "vitb"
    name = f"depth_anything_v2_metric_hypersim_{enc}.pth" if metric else f"depth_anything_v2_{enc}.pth"
    torch.save(state, tmp_path / name)  # the official release: torch.save(model.state_dict())

    model, info = load_model("default", tmp_path / name)
    assert model.arch == f"depth_anything_v2{'_metric' if metric else ''}_{variant}"
    assert model.size_multiple == 14 and info["input_size"] == (196, 644)
    assert model.output_kind == ("metric" if metric else "relative_affine_disparity")
    if metric:
        assert model.head_max_depth == 20.0
    x = torch.rand(1, 3, 42, 56)
    with torch.no_grad():
        ref = hf(pixel_values=(x - MEAN) / STD).predicted_depth
        got = model.native(x)[:, 0]
    assert float(ref.std()) > 1e-3  # a non-trivial output
    _close(got, ref)
    with torch.no_grad():  # the DepthNet contract: depth = disp_to_depth(predict_disps)
        depth = model.predict_depth(x)[:, 0]
    _close(depth, ref.clamp(0.1, 100.0) if metric else 1.0 / ref.clamp(0.01, 10.0))


@pytest.mark.parametrize("metric,max_depth", [(False, 1), (True, 80)])
def test_depth_anything_transformers_folder_matches_transformers(tmp_path, metric, max_depth):
    hf = _hf_model("small", metric, float(max_depth), seed=3)
    hf.save_pretrained(tmp_path / "Depth-Anything-V2-Small-hf")
    model, info = load_model("default", tmp_path / "Depth-Anything-V2-Small-hf")
    assert model.output_kind == ("metric" if metric else "relative_affine_disparity")
    if metric:
        assert model.head_max_depth == 80.0
    x = torch.rand(2, 3, 56, 70)
    with torch.no_grad():
        ref = hf(pixel_values=(x - MEAN) / STD).predicted_depth
        got = model.native(x)[:, 0]
    _close(got, ref)


def test_depth_anything_transformers_state_dict(tmp_path):
    hf = _hf_model("small", False, seed=4)
    torch.save(hf.state_dict(), tmp_path / "pytorch_model.bin")  # transformers 5 in-memory names (q_proj ...)
    model, _ = load_model("depth_anything_v2_small", tmp_path / "pytorch_model.bin")
    x = torch.rand(1, 3, 42, 42)
    with torch.no_grad():
        _close(model.native(x)[:, 0], hf(pixel_values=(x - MEAN) / STD).predicted_depth)


def test_depth_anything_errors_name_the_file(tmp_path):
    state = hf_to_official(_hf_model("small", False).state_dict())
    state["pretrained.pos_embed"] = torch.zeros(1, 1370, 1024)  # ViT-L width
    torch.save(state, tmp_path / "large.pth")
    with pytest.raises(CheckpointError, match=r"large\.pth.*Large/Giant are not supported"):
        load_model("default", tmp_path / "large.pth")
    state = hf_to_official(_hf_model("small", False).state_dict())
    state.pop("depth_head.scratch.output_conv1.weight")
    torch.save(state, tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match=r"cut\.pth.*output_conv1"):
        load_model("default", tmp_path / "cut.pth")
    with pytest.raises(ValueError, match="multiples of 14"):
        build_model("depth_anything_v2_small").predict_depth(torch.rand(1, 3, 32, 32))


def test_depth_anything_head_only_adaptation_and_checkpoint(tmp_path):
    model = build_model("depth_anything_v2_metric_small", head_max_depth=80.0)
    model.freeze_backbone().train()
    disps = model.predict_disps(torch.rand(1, 3, 28, 42))
    assert len(disps) == 1 and disps[0].shape == (1, 1, 28, 42)
    assert 0 <= float(disps[0].min()) and float(disps[0].max()) <= 1
    disps[0].mean().backward()
    assert all(p.grad is None for p in model.pretrained.parameters())
    unused = "scratch.refinenet4.resConfUnit1."  # the official head never calls it (refinenet4 has one input)
    assert all(p.grad is not None for n, p in model.depth_head.named_parameters() if not n.startswith(unused))
    p = save_checkpoint(tmp_path / "da.pt", model.eval(), (28, 42))
    again, info = load_checkpoint(p)
    assert again.arch == "depth_anything_v2_metric_small" and again.head_max_depth == 80.0
    x = torch.rand(1, 3, 28, 42)
    with torch.no_grad():
        _close(again.predict_depth(x), model.predict_depth(x))


# --------------------------------------------------------------------------- canonical camera
class TestCanonicalCamera:
    cam = CanonicalCamera(fx=100.0, fy=100.0, cx=31.5, cy=15.5, size=(32, 64))

    def test_focal_ratio_known_answer(self):
        K = np.array([[50.0, 0, 31.5], [0, 50.0, 15.5], [0, 0, 1]])
        x = torch.rand(1, 3, 32, 64)
        depth = run_canonical(lambda t: torch.full((1, 1, 32, 64), 10.0), x, K, self.cam)
        assert torch.allclose(depth, torch.full_like(depth, 5.0))  # 10 m x 50 px / 100 px
        assert focal_ratio(K, self.cam, (64, 128)) == pytest.approx(0.25)  # canonical scales with size

    def test_principal_point_alignment_known_answer(self):
        K = np.array([[100.0, 0, 31.5], [0, 100.0, 12.5], [0, 0, 1]])  # horizon 3 rows higher
        x = torch.arange(32.0).view(1, 1, 32, 1).expand(1, 3, 32, 64).contiguous()
        seen = []

        def run(t):
            seen.append(t)
            return 1.0 + t[:, :1]
        depth = run_canonical(run, x, K, self.cam)
        assert float(seen[0][0, 0, 15, 0]) == 12.0  # the real principal row sits on the canonical one
        assert torch.equal(depth[0, 0, :29], 1.0 + x[0, 0, :29])  # and the depth comes back in place

    def test_dict_roundtrip_and_errors(self):
        assert CanonicalCamera.from_dict(self.cam.to_dict()) == self.cam
        with pytest.raises(ValueError, match=r"mine\.pt.*canonical_camera"):
            CanonicalCamera.from_dict({"fx": 1.0}, "mine.pt")

    def test_predictor_applies_it(self):
        from mono_depth_ros.inference import DepthPredictor

        from mono_depth_ros.models import DepthNet

        class Const(DepthNet):
            def predict_depth(self, x):
                return torch.full((x.shape[0], 1, *x.shape[-2:]), 20.0)
        pred = DepthPredictor(Const(), (32, 64), backend="eager", canonical=self.cam)
        K = np.array([[150.0, 0, 63.5], [0, 150.0, 31.5], [0, 0, 1]])  # 128x64 image, fx 75 px at network size
        out = pred.predict(np.zeros((64, 128, 3), np.uint8), K)
        assert np.allclose(out.depth, 15.0)

    def test_shipped_weights_record_domain_a(self):
        from mono_depth_ros.tools.synth.presets import get_preset

        _, info = load_checkpoint(shipped_checkpoint_path())
        cam = info["canonical_camera"]
        assert np.allclose(cam.K_at((192, 640)), get_preset("A").intrinsics(640, 192))


# --------------------------------------------------------------------------- ONNX export
@pytest.mark.parametrize("name,size,dynamic,fp16", [
    ("default", (64, 96), True, False), ("default", (64, 96), False, True),
    ("monodepth2_resnet18", (64, 96), False, False), ("depth_anything_v2_metric_small", (28, 42), True, False)])
def test_onnx_export_matches_eager(tmp_path, name, size, dynamic, fp16):
    from mono_depth_ros.export import TOLERANCE, check_onnx, export_onnx

    torch.manual_seed(0)
    model = build_model(name).eval()
    out = export_onnx(model, tmp_path / "m.onnx", size, dynamic=dynamic, fp16=fp16)
    res = check_onnx(out, model, size, fp16=fp16)
    assert res["ok"] == 1.0, res
    if dynamic and name == "default":
        res2 = check_onnx(out, model, (size[0] + 32, size[1] + 64))
        assert res2["max_rel"] <= TOLERANCE["fp32"], res2
    import onnx
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["arch"] == name and props["precision"] == ("fp16" if fp16 else "fp32")


def test_node_parameters_accept_backends_and_their_size_multiple():
    P = pytest.importorskip("mono_depth_ros.ros.params")
    from mono_depth_ros.models import MODEL_CHOICES

    spec = next(s for s in P.PARAMS if s.name == "model")
    assert set(spec.choices) == set(MODEL_CHOICES) and "monodepth2" in spec.choices
    cfg = P.validate(P.NodeConfig(model="depth_anything_v2_small", input_width=644, input_height=196))
    assert cfg.input_width == 644
    with pytest.raises(P.ConfigError, match="multiple of 32"):
        P.validate(P.NodeConfig(model="default", input_width=644, input_height=196))
    with pytest.raises(P.ConfigError, match="multiple of 14"):
        P.validate(P.NodeConfig(model="depth_anything_v2_metric_base", input_width=640, input_height=196))


def test_predictor_from_config_opens_a_monodepth2_folder(tmp_path):
    from mono_depth_ros.inference import DepthPredictor

    _save_monodepth2(tmp_path / "stereo_640x192", 18, True)
    pred, desc = DepthPredictor.from_config("monodepth2", str(tmp_path / "stereo_640x192"), None, 0.1, 100.0,
                                            backend="eager")
    assert pred.input_size == (64, 96) and pred.output_kind == "metric" and pred.canonical is not None
    out = pred.predict(np.full((64, 96, 3), 128, np.uint8), pred.canonical.K_at((64, 96)))
    assert out.depth.shape == (64, 96) and np.isfinite(out.depth).all()


def test_adaptation_engine_steps_depth_anything_head_only():
    """The node's engine runs on Depth Anything V2 (patch-14 sizes, one output scale, ViT frozen)."""
    from mono_depth_ros.adapt.engine import AdaptConfig
    from mono_depth_ros.tools.synth import render_drive
    from test.test_adapt_engine import feed, make_engine

    frames = list(render_drive("A", seed=5, duration_s=1.5, width=182, height=56))
    model = build_model("depth_anything_v2_metric_small", head_max_depth=80.0).freeze_backbone()
    cfg = AdaptConfig(train_height=56, train_width=182, crop_width=0, crop_height=0, size_multiple=14,
                      anchor_weight=0.0, replay_per_step=0, num_scales=1)
    engine, provider = make_engine(cfg, model=model)
    reports = feed(engine, provider, frames, steps=1)
    assert engine.counters.steps >= 1, [r.status for r in reports]
    before = dict(model.named_parameters())
    after = dict(engine.model.named_parameters())
    assert all(torch.equal(before[n], after[n]) for n in before if n.startswith("pretrained."))
    with pytest.raises(ValueError, match="multiples of 14"):
        AdaptConfig(train_height=64, train_width=192, size_multiple=14)


def test_onnx_serving_swap_rewrites_weights_the_exporter_merged():
    """Freshly initialised networks have equal tensors (LayerNorm ones, zero biases) that the exporter
    merges into one initializer; a swap that changes them must not leave stale weights in the server."""
    pytest.importorskip("onnxruntime")
    from mono_depth_ros.inference import DepthPredictor

    torch.manual_seed(0)
    m = build_model("depth_anything_v2_metric_small").eval()
    pred = DepthPredictor(m, (28, 42), backend="onnxruntime")
    K = np.array([[40.0, 0, 20.5], [0, 40.0, 13.5], [0, 0, 1]])
    img = (np.random.default_rng(0).random((28, 42, 3)) * 255).astype(np.uint8)
    first = pred.predict(img, K)
    assert pred.backend == "onnxruntime"
    state = {k: v + 0.02 * torch.randn_like(v) if v.is_floating_point() else v for k, v in m.state_dict().items()}
    pred.swap_state(state)
    out = pred.predict(img, K)
    with torch.no_grad():
        ref = m.predict_depth(torch.from_numpy(first.rgb).permute(2, 0, 1)[None].float() / 255)[0, 0].numpy()
    assert np.abs(out.depth - ref).max() <= 1e-4 * ref.max()


def test_node_declares_depth_anything_sizes():
    """rclpy enforces a descriptor's integer step: input sizes in 14s must pass it (then validate() checks them)."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from mono_depth_ros.ros import params as P

    ctx = Context()
    rclpy.init(context=ctx)
    try:
        overrides = [Parameter("model", value="depth_anything_v2_small"), Parameter("input_width", value=644),
                     Parameter("input_height", value=196), Parameter("adapt_train_width", value=308),
                     Parameter("adapt_train_height", value=98)]
        node = rclpy.create_node("param_probe", context=ctx, parameter_overrides=overrides,
                                 automatically_declare_parameters_from_overrides=False)
        try:
            cfg = P.declare(node)
        finally:
            node.destroy_node()
        assert (cfg.input_width, cfg.input_height, cfg.adapt_train_width) == (644, 196, 308)
    finally:
        rclpy.shutdown(context=ctx)
