"""End to end on a tiny synthetic drive: warping with true depth/pose, bag dataset, train/resume/evaluate CLIs."""
import json

import numpy as np
import pytest
import torch

from mono_depth_ros.checkpoint import read_checkpoint
from mono_depth_ros.cli import main as cli_main
from mono_depth_ros.conventions import Topics
from mono_depth_ros.geometry import PinholeCamera, relative_pose, warp
from mono_depth_ros.learning.data import SelfSupervisedSampler, SupervisedSampler, load_bag
from mono_depth_ros.losses import photometric_error

torch.set_num_threads(1)
W, H = 128, 64


@pytest.fixture(scope="module")
def frames():
    synth = pytest.importorskip("mono_depth_ros.tools.synth")
    return list(synth.render_drive("A", seed=3, duration_s=0.2, width=W, height=H, rate_hz=10, camera_noise=False))


@pytest.fixture(scope="module")
def bag(tmp_path_factory):
    synth = pytest.importorskip("mono_depth_ros.tools.synth")
    out = tmp_path_factory.mktemp("bags") / "tiny_A"
    synth.generate_bag(out, preset="A", seed=5, duration_s=0.8, width=W, height=H, rate_hz=10,
                       sensors="camera,depth_gt,pose_gt", progress=False, contact_sheet=False)
    return out


def _t(img):
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float() / 255.0


@pytest.mark.slow
def test_warp_synthetic_frames_with_true_depth_and_pose(frames):
    """Each neighbour warped into the middle frame with GT depth + GT pose matches it far better than unwarped."""
    tgt = frames[1]
    depth = np.where(np.isfinite(tgt.depth), tgt.depth, 1e4).astype(np.float32)  # sky: at infinity
    cam = PinholeCamera(torch.from_numpy(tgt.K).float()[None], H, W)
    static = ~torch.from_numpy(tgt.dynamic_mask)[None, None]
    for src in (frames[0], frames[2]):
        T_source_target = relative_pose(torch.from_numpy(src.T_map_camera)[None],
                                        torch.from_numpy(tgt.T_map_camera)[None]).float()
        warped, valid = warp(_t(src.image), torch.from_numpy(depth)[None, None], T_source_target, cam)
        m = valid.bool() & static
        m[..., :2, :] = False  # image border rows/cols: bilinear border effects
        m[..., -2:, :] = False
        m[..., :2] = False
        m[..., -2:] = False
        err_warp = float(photometric_error(warped, _t(tgt.image))[m].mean())
        err_none = float(photometric_error(_t(src.image), _t(tgt.image))[m].mean())
        median_l1 = float((warped - _t(tgt.image)).abs().mean(1, keepdim=True)[m].median())
        assert m.float().mean() > 0.7
        # SSIM residuals remain at edges and disocclusions; the typical pixel matches to < 1%.
        assert err_warp < 0.5 * err_none and median_l1 < 0.01, (err_warp, err_none, median_l1)
        # The opposite pose direction (T_target_source) does not reproduce the target.
        wrong, _ = warp(_t(src.image), torch.from_numpy(depth)[None, None], torch.linalg.inv(T_source_target), cam)
        assert float(photometric_error(wrong, _t(tgt.image))[m].mean()) > 2 * err_warp


@pytest.mark.slow
def test_bag_dataset(bag, tmp_path):
    d = load_bag(bag, need_depth=True, need_pose=True, cache_dir=tmp_path)
    assert d.images.shape[1:] == (H, W, 3) and d.depths.shape[1:] == (H, W) and len(d) >= 8
    assert np.isinf(d.depths.astype(np.float32)).any()  # sky kept as +inf
    assert np.allclose(d.T_map_camera[:, 3], [0, 0, 0, 1])
    cached = load_bag(bag, need_depth=True, need_pose=True, cache_dir=tmp_path)
    assert np.array_equal(cached.images, d.images) and np.array_equal(cached.K, d.K)
    half = load_bag(bag, size=(32, 64))
    assert half.images.shape[1:3] == (32, 64) and np.isclose(half.K[0, 0], d.K[0, 0] / 2)
    x, gt = SupervisedSampler([d], 2).sample()
    assert x.shape == (2, 3, H, W) and gt.shape == (2, 1, H, W)
    tgt, srcs, poses, K = SelfSupervisedSampler([d], 2).sample()
    assert len(srcs) == 2 and poses[0].shape == (2, 4, 4) and K.shape == (2, 3, 3)
    # T_source_target = inv(T_map_source) @ T_map_target moves target points into the source camera.
    expect = np.linalg.inv(d.T_map_camera[0]) @ d.T_map_camera[1]
    got = relative_pose(torch.from_numpy(d.T_map_camera[0])[None], torch.from_numpy(d.T_map_camera[1])[None])
    assert np.allclose(got[0].numpy(), expect)


@pytest.mark.slow
def test_train_resume_evaluate_cli(bag, tmp_path, capsys):
    ck = tmp_path / "run.pt"
    common = ["--bag", str(bag), "--out", str(ck), "--size", f"{W}x{H}", "--batch-size", "2",
              "--threads", "1", "--quiet", "--val-frames", "2"]
    assert cli_main(["train", *common, "--steps", "2", "--val-bag", str(bag), "--val-every", "2"]) == 0
    c = read_checkpoint(ck)
    assert c["training"]["steps"] == 2 and "optimizer" in c["training"]
    assert c["meta"]["history"][0]["step"] == 2
    assert cli_main(["train", *common, "--steps", "3", "--mode", "self-supervised", "--poses", "ground-truth",
                     "--resume", str(ck),
                     "--export", str(tmp_path / "w.pt"), "--export-half"]) == 0
    assert read_checkpoint(ck)["training"]["steps"] == 3
    assert "optimizer" not in read_checkpoint(tmp_path / "w.pt")["training"]
    capsys.readouterr()
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "w.pt"), "--bag", str(bag), "--json",
                     "--max-frames", "2", "--threads", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["metrics"]) == {"raw", "median_scaled"} and out["metrics"]["raw"]["images"] == 2
    assert cli_main(["evaluate", "--checkpoint", str(tmp_path / "missing.pt"), "--bag", str(bag)]) == 1
    assert "no such file" in capsys.readouterr().err


def test_train_help(capsys):
    with pytest.raises(SystemExit) as e:
        cli_main(["train", "--help"])
    assert e.value.code == 0 and "--mode" in capsys.readouterr().out


def test_stereo_sampler_adds_known_right_pose():
    from mono_depth_ros.learning.data import BagFrames
    rng = np.random.default_rng(0)
    n = 4
    poses = np.repeat(np.eye(4)[None], n, 0)
    poses[:, 2, 3] = np.arange(n)  # driving forward 1 m per frame
    K = np.array([[50.0, 0, 31.5], [0, 50.0, 15.5], [0, 0, 1]])
    d = BagFrames(rng.integers(0, 255, (n, 32, 64, 3), dtype=np.uint8), None, poses, K,
                  np.arange(n), "mem", rng.integers(0, 255, (n, 32, 64, 3), dtype=np.uint8), 0.5)
    tgt, srcs, T, Kb = SelfSupervisedSampler([d], 3, stereo=True, augment=False).sample()
    assert len(srcs) == 3
    assert torch.allclose(T[2][0], torch.tensor([[1.0, 0, 0, -0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))
    assert torch.allclose(T[0][0, 2, 3], torch.tensor(1.0))   # previous frame is 1 m behind: target point z + 1
    with pytest.raises(ValueError, match="no right camera"):
        SelfSupervisedSampler([BagFrames(d.images, None, poses, K, d.stamps, "mem")], 2, stereo=True)


@pytest.mark.slow
def test_self_supervised_loss_prefers_true_metric_depth(frames):
    """With metric poses, the loss is lowest at the true depth: half or double depth scores worse."""
    from mono_depth_ros.losses import SelfSupervisedLoss
    tgt = frames[1]
    depth = torch.from_numpy(np.where(np.isfinite(tgt.depth), tgt.depth, 100.0).astype(np.float32))[None, None]
    K = torch.from_numpy(tgt.K).float()[None]
    srcs = [_t(frames[0].image), _t(frames[2].image)]
    poses = [relative_pose(torch.from_numpy(f.T_map_camera)[None], torch.from_numpy(tgt.T_map_camera)[None]).float()
             for f in (frames[0], frames[2])]
    loss_fn = SelfSupervisedLoss(0.1, 100.0, automask=False)

    def loss_at(scale):
        d = (depth * scale).clamp(0.1, 100.0)
        sigmoid = (1.0 / d - 1.0 / 100.0) / (1.0 / 0.1 - 1.0 / 100.0)   # inverse of disp_to_depth
        return float(loss_fn(_t(tgt.image), srcs, poses, K, [sigmoid])[1]["photometric"])

    true, half, double = loss_at(1.0), loss_at(0.5), loss_at(2.0)
    assert true < 0.8 * half and true < 0.8 * double, (true, half, double)
