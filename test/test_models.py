"""Network contract: shapes, modes, depth range, monodepth2 key compatibility."""
import numpy as np
import pytest
import torch

from mono_depth_ros.models import MODEL_NAMES, build_model, load_weights, load_monodepth2
from mono_depth_ros.models.monodepth2 import NUM_CH_DEC, NUM_CH_ENC

torch.set_num_threads(1)


def _monodepth2_reference_keys():
    """(encoder.pth, depth.pth) key -> shape, written out from monodepth2's published layout."""
    enc = {"encoder.conv1.weight": (64, 3, 7, 7)}

    def bn(prefix, c):
        for n in ("weight", "bias", "running_mean", "running_var"):
            enc[f"{prefix}.{n}"] = (c,)
        enc[f"{prefix}.num_batches_tracked"] = ()

    bn("encoder.bn1", 64)
    c_in = 64
    for li, c in enumerate((64, 128, 256, 512), start=1):
        for bi in range(2):
            p = f"encoder.layer{li}.{bi}"
            enc[f"{p}.conv1.weight"] = (c, c_in if bi == 0 else c, 3, 3)
            bn(f"{p}.bn1", c)
            enc[f"{p}.conv2.weight"] = (c, c, 3, 3)
            bn(f"{p}.bn2", c)
            if bi == 0 and li > 1:
                enc[f"{p}.downsample.0.weight"] = (c, c_in, 1, 1)
                bn(f"{p}.downsample.1", c)
        c_in = c
    enc["encoder.fc.weight"] = (1000, 512)
    enc["encoder.fc.bias"] = (1000,)
    dec = {}
    idx = 0
    for i in range(4, -1, -1):
        cin = NUM_CH_ENC[-1] if i == 4 else NUM_CH_DEC[i + 1]
        dec[f"decoder.{idx}.conv.conv.weight"] = (NUM_CH_DEC[i], cin, 3, 3)
        dec[f"decoder.{idx}.conv.conv.bias"] = (NUM_CH_DEC[i],)
        idx += 1
        cin = NUM_CH_DEC[i] + (NUM_CH_ENC[i - 1] if i > 0 else 0)
        dec[f"decoder.{idx}.conv.conv.weight"] = (NUM_CH_DEC[i], cin, 3, 3)
        dec[f"decoder.{idx}.conv.conv.bias"] = (NUM_CH_DEC[i],)
        idx += 1
    for s in range(4):
        dec[f"decoder.{idx}.conv.weight"] = (1, NUM_CH_DEC[s], 3, 3)
        dec[f"decoder.{idx}.conv.bias"] = (1,)
        idx += 1
    return enc, dec


# The multi-scale U-Nets; Depth Anything V2 (one output, patch 14) has its own tests in test_backends.py.
UNETS = [n for n in MODEL_NAMES if not n.startswith("depth_anything")]


@pytest.mark.parametrize("name", UNETS)
class TestContract:
    def test_eval_depth_in_range(self, name):
        net = build_model(name, min_depth=0.5, max_depth=50.0).eval()
        with torch.no_grad():
            d = net.predict_depth(torch.rand(2, 3, 64, 96))
        assert d.shape == (2, 1, 64, 96)
        assert float(d.min()) >= 0.5 - 1e-4 and float(d.max()) <= 50.0 + 1e-3

    def test_train_multiscale(self, name):
        net = build_model(name).train()
        outs = net.predict_disps(torch.rand(2, 3, 64, 96))
        assert isinstance(outs, list) and len(outs) == 4 == net.num_scales
        for s, o in enumerate(outs):
            assert o.shape == (2, 1, 64 // 2 ** s, 96 // 2 ** s)
            assert float(o.min()) >= 0 and float(o.max()) <= 1
        sum(o.mean() for o in outs).backward()

    def test_bad_size(self, name):
        net = build_model(name).eval()
        with pytest.raises(ValueError, match="multiples of 32"):
            net.predict_depth(torch.rand(1, 3, 60, 96))
        with pytest.raises(ValueError, match=r"\(B,3,H,W\)"):
            net.predict_disps(torch.rand(1, 1, 64, 96))


def test_disp_to_depth_endpoints():
    net = build_model("default", min_depth=0.1, max_depth=100.0)
    d = net.disp_to_depth(torch.tensor([0.0, 1.0]).view(1, 1, 1, 2))
    assert torch.allclose(d.flatten(), torch.tensor([100.0, 0.1]), rtol=1e-5)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet1000")


def test_monodepth2_keys_exact(tmp_path):
    enc_ref, dec_ref = _monodepth2_reference_keys()
    net = build_model("monodepth2_resnet18")
    ours = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert ours == {**enc_ref, **dec_ref}
    assert set(net.encoder_state_dict()) == set(enc_ref)
    assert set(net.decoder_state_dict()) == set(dec_ref)
    # Files in monodepth2's release format (encoder.pth carries height/width/use_stereo too).
    torch.manual_seed(1)
    enc = {k: torch.randn(s) if s else torch.tensor(0) for k, s in enc_ref.items()}
    enc.update(height=192, width=640, use_stereo=False)
    dec = {k: torch.randn(s) for k, s in dec_ref.items()}
    torch.save(enc, tmp_path / "encoder.pth")
    torch.save(dec, tmp_path / "depth.pth")
    model, meta = load_monodepth2(tmp_path / "encoder.pth", tmp_path / "depth.pth")
    assert meta["input_size"] == (192, 640) and meta["use_stereo"] is False
    assert torch.equal(model.state_dict()["decoder.13.conv.weight"], dec["decoder.13.conv.weight"])
    assert torch.equal(model.state_dict()["encoder.layer4.1.bn2.running_var"], enc["encoder.layer4.1.bn2.running_var"])
    # ... and never loads silently into the default network.
    state = {k: v for k, v in enc.items() if isinstance(v, torch.Tensor)}
    state.update(dec)
    with pytest.raises(ValueError, match=r"do not fit architecture 'default'.*monodepth2_resnet18"):
        load_weights(build_model("default"), state)


def test_freeze_batchnorm_keeps_running_stats():
    net = build_model("default").freeze_batchnorm(True)
    net.train()
    bn = next(m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    before = bn.running_mean.clone()
    net.predict_disps(torch.rand(1, 3, 64, 64))
    assert not bn.training and torch.equal(before, bn.running_mean)


def test_outputs_do_not_depend_on_the_mode():
    """The contract names its two outputs; train()/eval() changes neither (frozen BatchNorm: same numbers)."""
    net = build_model("default").freeze_batchnorm(True)
    x = torch.rand(1, 3, 64, 96)
    with torch.no_grad():
        d_eval, s_eval = net.eval().predict_depth(x), net.predict_disps(x)
        d_train, s_train = net.train().predict_depth(x), net.predict_disps(x)
    assert d_eval.shape == d_train.shape == (1, 1, 64, 96) and len(s_eval) == len(s_train) == 4
    # (train mode folds the frozen BatchNorm into the convolutions: equal up to rounding)
    assert torch.allclose(d_eval, d_train, rtol=1e-4) and all(torch.allclose(a, b, atol=1e-5)
                                                              for a, b in zip(s_eval, s_train))
    assert torch.equal(net(x)[0], s_train[0])  # forward is predict_disps
    assert torch.allclose(d_eval, net.disp_to_depth(s_eval[0]))


def test_size_multiple_and_num_scales_are_class_attributes():
    from mono_depth_ros.models import MODEL_CHOICES, network_class, size_multiple_of
    assert {n: size_multiple_of(n) for n in MODEL_CHOICES} == {
        n: 14 if n.startswith("depth_anything") else 32 for n in MODEL_CHOICES}
    assert {n: network_class(n).num_scales for n in MODEL_CHOICES} == {
        n: 1 if n.startswith("depth_anything") else 4 for n in MODEL_CHOICES}


def test_no_import_cycle_between_networks_and_registry():
    """models/monodepth2.py defines networks only; the registry and the released-weights loaders import it."""
    import ast
    import mono_depth_ros.models.monodepth2 as m2
    tree = ast.parse(open(m2.__file__).read())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(mod and ("registry" in mod or "released" in mod) for mod in imported), imported
