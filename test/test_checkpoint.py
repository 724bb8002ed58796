"""Checkpoints: round trip, atomic write, clear errors for missing/truncated/foreign/wrong files."""
import os
import pickle

import pytest
import torch

from mono_depth_ros.checkpoint import (FORMAT_VERSION, CheckpointError, import_monodepth2, load_checkpoint,
                                       read_checkpoint, save_checkpoint, shipped_checkpoint_path)
from mono_depth_ros.models import build_model

torch.set_num_threads(1)


@pytest.fixture
def net():
    torch.manual_seed(0)
    return build_model("default", min_depth=0.2, max_depth=80.0)


def test_round_trip_with_optimizer(tmp_path, net):
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    net.predict_disps(torch.rand(2, 3, 64, 64))[0].mean().backward()
    opt.step()
    p = save_checkpoint(tmp_path / "a.pt", net, (192, 640), opt, steps=7, frames_seen=56, meta={"note": "x"})
    assert sorted(os.listdir(tmp_path)) == ["a.pt"]  # no temp files left behind
    model, info = load_checkpoint(p)
    assert info["format_version"] == FORMAT_VERSION and info["arch"] == "default"
    assert info["input_size"] == (192, 640) and info["min_depth"] == 0.2 and info["max_depth"] == 80.0
    assert info["training"]["steps"] == 7 and info["training"]["frames_seen"] == 56
    assert "optimizer" in info["training"] and info["meta"] == {"note": "x"}
    assert not model.training
    for k, v in net.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k


def test_half_export_loads_as_float(tmp_path, net):
    p = save_checkpoint(tmp_path / "h.pt", net, (96, 320), half=True)
    model, info = load_checkpoint(p)
    assert "optimizer" not in info["training"]
    w = model.state_dict()["heads.0.conv.weight"]
    assert w.dtype == torch.float32
    assert torch.allclose(w, net.state_dict()["heads.0.conv.weight"], atol=1e-3)


def test_overwrite_is_atomic_replace(tmp_path, net):
    p = tmp_path / "c.pt"
    save_checkpoint(p, net, (192, 640), steps=1)
    save_checkpoint(p, net, (192, 640), steps=2)
    assert read_checkpoint(p)["training"]["steps"] == 2


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt: no such file"):
        load_checkpoint(tmp_path / "nope.pt")


def test_truncated_file(tmp_path, net):
    p = save_checkpoint(tmp_path / "t.pt", net, (192, 640))
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"t\.pt: cannot be read"):
        load_checkpoint(p)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_files(tmp_path):
    txt = tmp_path / "notes.pt"
    txt.write_text("hello, not a checkpoint")
    with pytest.raises(CheckpointError, match=r"notes\.pt"):
        load_checkpoint(txt)
    # A pickle carrying code is refused by weights_only loading.
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump(os.getcwd, f)
    with pytest.raises(CheckpointError, match=r"evil\.pt: cannot be read"):
        load_checkpoint(evil)
    # A valid torch file that is not ours.
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt: not a mono_depth_ros checkpoint"):
        load_checkpoint(other)
    bare = tmp_path / "encoder.pth"
    torch.save({"encoder.conv1.weight": torch.zeros(1)}, bare)
    with pytest.raises(CheckpointError, match="import_monodepth2"):
        load_checkpoint(bare)


def test_wrong_arch_weights_and_version(tmp_path):
    m2 = build_model("monodepth2_resnet18")
    p = save_checkpoint(tmp_path / "m2.pt", m2, (192, 640))
    ck = torch.load(p, weights_only=True)
    ck["arch"] = "default"
    torch.save(ck, tmp_path / "lie.pt")
    with pytest.raises(CheckpointError, match=r"lie\.pt.*do not fit architecture 'default'"):
        load_checkpoint(tmp_path / "lie.pt")
    ck["arch"] = "resnet1000"
    torch.save(ck, tmp_path / "unknown.pt")
    with pytest.raises(CheckpointError, match="unknown model"):
        load_checkpoint(tmp_path / "unknown.pt")
    ck["format_version"] = FORMAT_VERSION + 1
    torch.save(ck, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="unsupported format_version"):
        load_checkpoint(tmp_path / "future.pt")


def test_import_monodepth2_files(tmp_path):
    m2 = build_model("monodepth2_resnet18")
    enc = dict(m2.encoder_state_dict())
    enc.update(height=192, width=640, use_stereo=True)
    torch.save(enc, tmp_path / "encoder.pth")
    torch.save(dict(m2.decoder_state_dict()), tmp_path / "depth.pth")
    model, info = import_monodepth2(tmp_path / "encoder.pth", tmp_path / "depth.pth")
    assert model.arch == "monodepth2_resnet18" and info["input_size"] == (192, 640)
    assert info["meta"]["use_stereo"] is True
    with pytest.raises(CheckpointError, match="no such file"):
        import_monodepth2(tmp_path / "missing.pth", tmp_path / "depth.pth")
    with pytest.raises(CheckpointError, match="do not fit"):
        import_monodepth2(tmp_path / "depth.pth", tmp_path / "depth.pth")


def test_shipped_weights_load():
    p = shipped_checkpoint_path()
    if not p.is_file():
        pytest.skip(f"{p} not built yet")
    model, info = load_checkpoint(p)
    assert info["arch"] == "default" and p.stat().st_size < 5_000_000
    H, W = info["input_size"]
    with torch.no_grad():
        d = model.predict_depth(torch.rand(1, 3, H, W))
    assert d.shape == (1, 1, H, W) and torch.isfinite(d).all()
