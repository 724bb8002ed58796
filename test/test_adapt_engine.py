"""The adaptation engine on a short rendered drive (synthetic, exact poses): learning, guard, replay, persistence."""
import copy
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from mono_depth_ros.adapt import AdaptationEngine, AdaptConfig, CheckpointStore, ReplayBuffer
from mono_depth_ros.adapt.persistence import LATEST, PREVIOUS
from mono_depth_ros.checkpoint import CheckpointError, save_checkpoint
from mono_depth_ros.conventions import T_BASE_OPTICAL_ROTATION
from mono_depth_ros.egomotion import EgoMotionConfig, EgoMotionProvider, FrameSelector, GatingConfig
from mono_depth_ros.egomotion.samples import TransformSample
from mono_depth_ros.models import build_model

from .rosutil import ROOT

torch.set_num_threads(1)
T_BASE_CAM = np.eye(4)
T_BASE_CAM[:3, :3] = T_BASE_OPTICAL_ROTATION


def abs_rel(model, frames) -> float:
    """Mean metric AbsRel of ``model`` over ``frames`` (GT depth, no median scaling)."""
    from mono_depth_ros.metrics import compute_depth_metrics
    model = model.eval()
    vals = []
    with torch.no_grad():
        for f in frames[::3]:
            x = torch.from_numpy(f.image).permute(2, 0, 1)[None].float() / 255
            m = compute_depth_metrics(f.depth, model.predict_depth(x)[0, 0].numpy())
            vals.append(m["abs_rel"] if m else np.inf)
    return float(np.mean(vals))


def pretrain_on_depth(frames, steps: int = 80):
    """A network that knows ``frames``' depth: a short supervised (SILog) pretraining on their GT (eval mode)."""
    from mono_depth_ros.learning.step import supervised_step
    from mono_depth_ros.losses import SupervisedSILogLoss
    torch.manual_seed(0)
    net = build_model("default").train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = SupervisedSILogLoss(net.min_depth, net.max_depth)
    imgs = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1) for f in frames]).float() / 255
    gts = torch.stack([torch.from_numpy(f.depth)[None] for f in frames])
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, len(frames), (4,), generator=g)
        supervised_step(net, opt, loss_fn, imgs[idx], gts[idx])
    return net.eval()


@pytest.fixture(scope="module")
def pretrained(drive):
    """A sane starting network: a short supervised (SILog) pretraining on the drive's GT depth."""
    return pretrain_on_depth(drive)


@pytest.fixture(scope="module")
def drive():
    from mono_depth_ros.tools.synth import render_drive
    return list(render_drive("A", seed=5, duration_s=3.0, width=192, height=64))


def small(**kw):
    return AdaptConfig(train_height=64, train_width=192, **kw)


def replay_loss(engine, state) -> float:
    """Mean loss of ``state`` over every triplet in the replay buffer (no grad)."""
    m = engine.model
    current = {k: v.clone() for k, v in m.state_dict().items()}
    m.load_state_dict(state)
    losses = []
    with torch.no_grad():
        for t in engine.replay.items:
            tg = t.target[None].float() / 255
            loss, _ = engine.loss_fn(tg, [s[None].float() / 255 for s in t.sources],
                                     [x[None] for x in t.T_source_target], t.K[None], m.predict_disps(tg))
            losses.append(float(loss))
    m.load_state_dict(current)
    return float(np.mean(losses))


def make_engine(cfg, on_weights=None, model=None, anchors=None):
    provider = EgoMotionProvider(EgoMotionConfig(priority=("tf",)), T_base_camera=T_BASE_CAM)
    selector = FrameSelector(provider, GatingConfig(min_translation_m=0.2))
    torch.manual_seed(0)
    engine = AdaptationEngine(model or build_model("default"), selector, cfg, on_weights, anchors)
    return engine, provider


def feed(engine, provider, frames, steps=1, corrupt=None):
    """Exact motion as odom->base_link TF (T_odom_base = T_map_cam @ inv(T_base_cam)), then the frame."""
    from scipy.spatial.transform import Rotation
    reports = []
    for i, f in enumerate(frames):
        T = f.T_map_camera @ np.linalg.inv(T_BASE_CAM)
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        provider.add_transform(TransformSample(f.stamp_ns, "odom", "base_link", T[:3, 3], q))
        img = f.image if corrupt is None else corrupt(i, f.image)
        engine.add_frame(f.stamp_ns, img, f.K)
        for _ in range(steps):
            r = engine.step()
            if r is None:
                break
            reports.append(r)
    return reports


class TestEngine:
    def test_learns_with_known_poses(self, drive, pretrained):
        engine, provider = make_engine(small(lr=1e-3, replay_per_step=1), model=pretrained)
        reports = feed(engine, provider, drive, steps=4)
        assert engine.counters.steps >= 60, [r.status for r in reports]
        assert sum(r.target_ns is not None for r in reports) >= 20  # fresh triplets, the rest replay-only
        before, after = replay_loss(engine, engine.initial), replay_loss(engine, engine.model.state_dict())
        assert after < 0.95 * before, (before, after, engine.stats())
        assert engine.triplets.counters.no_motion < len(drive)

    def test_too_high_lr_rolls_back_and_never_serves_garbage(self, drive, pretrained):
        served = []
        engine, provider = make_engine(small(lr=0.05, replay_per_step=1, warmup_steps=2, swap_every=1,
                                             good_every=1), on_weights=served.append, model=pretrained)
        feed(engine, provider, drive, steps=2)
        assert engine.counters.rollbacks > 0, engine.stats()
        # Every state handed to the serving network is about as accurate as the starting one.
        start = abs_rel(pretrained, drive)
        net = copy.deepcopy(pretrained)
        worst = 0.0
        for sd in served:
            net.load_state_dict(sd)
            worst = max(worst, abs_rel(net, drive))
        # Meanwhile the training copy itself went bad (that is what the guard is for).
        assert abs_rel(engine.model, drive) > 1.5 * start or engine.counters.rollbacks >= 3
        # Unguarded, served states reach 5-36x the starting AbsRel; guarded they stay near it.
        assert worst < 1.6 * start, (start, worst, engine.stats())

    def test_nonfinite_images_skip_and_never_reach_weights(self, drive):
        engine, provider = make_engine(small(replay_per_step=0))
        before = [p.clone() for p in engine.model.parameters()]

        def nan_every(i, img):  # uint8 images cannot hold NaN: corrupt the K instead via a hook below
            return img

        orig = engine.add_frame
        engine.add_frame = lambda s, img, K: orig(s, img, np.full((3, 3), np.nan))
        reports = feed(engine, provider, drive[:15], steps=1, corrupt=nan_every)
        assert reports and all(r.status != "ok" for r in reports)
        assert engine.counters.skipped + engine.counters.rollbacks > 0
        for p, b in zip(engine.model.parameters(), before):
            assert torch.isfinite(p).all() and torch.equal(p, b)


def test_replay_buffer_is_a_uniform_reservoir():
    buf = ReplayBuffer(50, seed=1)

    class T:
        def __init__(self, s):
            self.stamp_ns = s
    for i in range(1000):
        buf.add(T(i))
    stamps = np.array([t.stamp_ns for t in buf.items])
    assert len(buf) == 50 and buf.seen == 1000
    assert 300 < stamps.mean() < 700  # uniform over the whole stream, not just the newest
    assert len(buf.sample(3, exclude_stamp=stamps[0])) == 3


@pytest.mark.faults
class TestCheckpointStore:
    def test_rotation_and_fallback_to_previous(self, tmp_path, caplog):
        store = CheckpointStore(tmp_path)
        m = build_model("default")
        store.save(m, m.state_dict(), (96, 320), steps=1, frames_seen=1)
        store.save(m, m.state_dict(), (96, 320), steps=2, frames_seen=2)
        assert (tmp_path / LATEST).exists() and (tmp_path / PREVIOUS).exists()
        (tmp_path / LATEST).write_bytes((tmp_path / LATEST).read_bytes()[:1000])  # truncate the newest
        model, meta, path = store.load_latest()
        assert path.name == PREVIOUS and meta["training"]["steps"] == 1
        assert str(tmp_path / LATEST) in caplog.text

    @pytest.mark.parametrize("name", ["../escape", "/abs/path", ".hidden", "a/b", "x" * 200, ""])
    def test_names_are_validated(self, tmp_path, name):
        with pytest.raises(CheckpointError, match="invalid checkpoint name"):
            CheckpointStore(tmp_path).path_for(name)

    def test_symlink_escape_refused(self, tmp_path):
        outside = tmp_path / "outside.pt"
        outside.write_bytes(b"user data")
        d = tmp_path / "ckpts"
        d.mkdir()
        (d / "evil.pt").symlink_to(outside)
        with pytest.raises(CheckpointError, match="symlink"):
            CheckpointStore(d).path_for("evil")
        assert outside.read_bytes() == b"user data"

    def test_read_only_directory_gives_clear_error(self, tmp_path):
        if os.geteuid() == 0:
            pytest.skip("root ignores directory permissions")
        d = tmp_path / "ro"
        d.mkdir()
        d.chmod(0o500)
        m = build_model("default")
        with pytest.raises(CheckpointError, match="not writable"):
            CheckpointStore(d).save(m, m.state_dict(), (96, 320), 0, 0)

    @pytest.mark.slow
    def test_sigkill_during_saves_never_leaves_a_loadable_half_file(self, tmp_path):
        """A process saving in a loop is SIGKILLed at random moments; what loads is always complete."""
        code = ("import sys; from mono_depth_ros.adapt import CheckpointStore; from mono_depth_ros.models import "
                "build_model; m=build_model('monodepth2_resnet18'); s=CheckpointStore(sys.argv[1]); i=0\n"
                "while True:\n    i+=1; s.save(m, m.state_dict(), (192,640), i, i); print(i, flush=True)\n")
        rng = np.random.default_rng(0)
        for trial in range(3):
            p = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE,
                                 text=True)
            assert p.stdout.readline().strip()  # at least one complete save
            time.sleep(float(rng.uniform(0.05, 0.6)))
            p.send_signal(signal.SIGKILL)
            p.wait()
            got = CheckpointStore(tmp_path).load_latest()
            assert got is not None, f"trial {trial}: nothing loadable"
            assert got[1]["training"]["steps"] >= 1
        assert CheckpointStore(tmp_path).cleanup_temp() >= 0


def test_anchor_images_keep_the_starting_depth_there(drive, pretrained):
    """With source-domain anchors, adaptation moves the depth on those images less than without."""
    from mono_depth_ros.tools.synth import render_drive
    anchors = np.stack([f.image for f in render_drive("A", seed=8, duration_s=1.0, width=192, height=64)])
    x = torch.from_numpy(anchors).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        start = torch.log(pretrained.eval().predict_depth(x))

    def drift(weight):
        engine, provider = make_engine(small(lr=2e-3, replay_per_step=1, anchor_weight=weight), model=pretrained,
                                       anchors=anchors if weight > 0 else None)
        feed(engine, provider, drive, steps=2)
        with torch.no_grad():
            return float((torch.log(engine.model.eval().predict_depth(x)) - start).abs().mean())

    free, anchored = drift(0.0), drift(3.0)
    assert anchored < 0.7 * free, (free, anchored)
