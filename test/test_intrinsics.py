"""Learned intrinsics (issue 16 item 3) on an exact synthetic drive: known K, known metric poses."""
import dataclasses

import numpy as np
import pytest
import torch

from mono_depth_ros.adapt import AdaptConfig
from mono_depth_ros.adapt.intrinsics import IntrinsicsCorrection, K_from_hfov
from mono_depth_ros.adapt.guard import Verdict
from mono_depth_ros.models import build_model

from .test_adapt_engine import feed, make_engine

torch.set_num_threads(1)
W, H = 192, 64


def wrong_K(K: np.ndarray) -> np.ndarray:
    """The issue's start: fx, fy +20%, cx, cy + 5% of the width."""
    Kw = np.array(K, dtype=np.float64)
    Kw[0, 0] *= 1.2
    Kw[1, 1] *= 1.2
    Kw[0, 2] += 0.05 * W
    Kw[1, 2] += 0.05 * W
    return Kw


@pytest.fixture(scope="module")
def drive_b():
    """6 s of domain B (bumps and pitch make the focal length observable; drive A's straight road does not)."""
    from mono_depth_ros.tools.synth import render_drive
    return list(render_drive("B", seed=201, duration_s=6.0, width=W, height=H))


@pytest.fixture(scope="module")
def depth_net(drive_b):
    """A network that knows the drive's depth (short SILog pretraining on its ground truth)."""
    from mono_depth_ros.learning.step import supervised_step
    from mono_depth_ros.losses import SupervisedSILogLoss
    torch.manual_seed(0)
    net = build_model("default").train()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    loss_fn = SupervisedSILogLoss(net.min_depth, net.max_depth)
    imgs = torch.stack([torch.from_numpy(f.image).permute(2, 0, 1) for f in drive_b]).float() / 255
    gts = torch.stack([torch.from_numpy(f.depth)[None] for f in drive_b])
    g = torch.Generator().manual_seed(0)
    for _ in range(80):
        idx = torch.randint(0, len(drive_b), (4,), generator=g)
        supervised_step(net, opt, loss_fn, imgs[idx], gts[idx])
    return net.eval()


def cfg(**kw):
    base = dict(train_height=H, train_width=W, lr=1e-4, replay_per_step=1, crop_width=0, intrinsics="refine",
                intrinsics_lr=2e-3)
    return AdaptConfig(**{**base, **kw})


class TestCorrection:
    def test_correct_is_the_documented_formula_and_differentiable(self):
        c = IntrinsicsCorrection(fixed_aspect=False)
        with torch.no_grad():
            c.log_f.copy_(torch.tensor([0.1, -0.2]))
            c.c.copy_(torch.tensor([0.01, -0.02]))
        K = torch.tensor([[[100.0, 0.5, 50.0], [0.0, 90.0, 20.0], [0.0, 0.0, 1.0]]])
        out = c.correct(K, 200, 40)[0]
        want = [[100 * np.exp(0.1), 0.5, 52.0], [0.0, 90 * np.exp(-0.2), 19.2], [0, 0, 1]]
        np.testing.assert_allclose(out.detach().numpy(), want, rtol=1e-6)
        np.testing.assert_allclose(c.apply_snapshot(c.snapshot(), K[0].numpy(), 200, 40), want, rtol=1e-6)
        out.sum().backward()
        assert c.log_f.grad is not None and torch.all(c.log_f.grad != 0) and torch.all(c.c.grad != 0)

    def test_steps_and_correction_are_bounded(self):
        c = IntrinsicsCorrection(max_step_log_f=0.005, max_step_c=0.002, max_log_f=0.01, max_c=0.25)
        for _ in range(4):
            c.begin_step()
            with torch.no_grad():
                c.log_f += 1.0                      # an optimiser step far too large
                c.c -= torch.tensor([1.0, float("nan")])
            c.bound_step()
        assert float(c.log_f.detach()) == pytest.approx(0.01)         # 0.005 per step, then the overall bound
        assert c.c.tolist() == pytest.approx([-0.008, 0.0])   # 0.002 per step; NaN -> value before the step

    def test_hfov_guess(self):
        K = K_from_hfov(640, 192, 90.0)
        assert K[0, 0] == pytest.approx(320.0) and K[1, 1] == pytest.approx(320.0)
        assert (K[0, 2], K[1, 2]) == (319.5, 95.5)


class TestLearnedIntrinsics:
    def test_moves_toward_the_truth(self, drive_b, depth_net):
        K_true = drive_b[0].K
        Kw = wrong_K(K_true)
        engine, provider = make_engine(cfg(), model=depth_net)
        before = engine.served_K(Kw, W, H)
        np.testing.assert_allclose(before, Kw)
        steps_seen = []
        orig = engine.intrinsics.bound_step

        def bound_and_check():
            old = engine.intrinsics._before
            orig()
            steps_seen.append((float((engine.intrinsics.log_f - old[0]).abs().max()),
                               float((engine.intrinsics.c - old[1]).abs().max())))
        engine.intrinsics.bound_step = bound_and_check
        feed(engine, provider, [dataclasses.replace(f, K=Kw) for f in drive_b], steps=4)
        assert engine.counters.steps >= 150, engine.stats()
        K = engine.served_K(Kw, W, H)
        f_err = abs(K[0, 0] / K_true[0, 0] - 1)
        cx_err, cy_err = abs(K[0, 2] - K_true[0, 2]) / W, abs(K[1, 2] - K_true[1, 2]) / W
        # Measured (seed 201, 6 s, 233 steps): f +20% -> +12%, cx 5% -> 0.1%, cy 5% -> 1.0% of the width.
        assert f_err < 0.16, K
        assert cx_err < 0.02 and cy_err < 0.02, K
        assert K[0, 0] / K[1, 1] == pytest.approx(Kw[0, 0] / Kw[1, 1])   # fixed aspect
        # Every step within its bounds.
        assert max(s[0] for s in steps_seen) <= 0.005 + 1e-7 and max(s[1] for s in steps_seen) <= 0.002 + 1e-7
        st = engine.stats()
        assert st["adapt_intrinsics_fx_change"] == pytest.approx(K[0, 0] / Kw[0, 0] - 1, abs=1e-6)

    def test_rollback_restores_intrinsics_with_the_weights(self, drive_b, depth_net):
        engine, provider = make_engine(cfg(good_every=1, swap_every=1), model=depth_net)
        Kw = wrong_K(drive_b[0].K)
        feed(engine, provider, [dataclasses.replace(f, K=Kw) for f in drive_b[:25]], steps=2)
        assert engine.counters.steps > 10
        good = engine._intr_good
        weights = engine.serving.last_good
        with torch.no_grad():                       # training drifts on after the rollback point...
            engine.intrinsics.log_f += 0.3
            engine.intrinsics.c += 0.1
        engine._rollback(Verdict.SPIKE)             # ...and a verdict sends both back
        assert torch.equal(engine.intrinsics.log_f.detach(), good[0]) and torch.equal(engine.intrinsics.c.detach(),
                                                                                      good[1])
        assert all(torch.equal(v, weights[k]) for k, v in engine.model.state_dict().items())
        assert float(good[0].abs().max()) > 0       # the rollback point holds learned values, not the start
        engine.reset_to_initial()
        assert float(engine.intrinsics.log_f.abs().max()) == 0 and float(engine.intrinsics.c.abs().max()) == 0
        np.testing.assert_allclose(engine.served_K(Kw, W, H), Kw)

    def test_off_changes_nothing(self, drive_b):
        engine, _ = make_engine(AdaptConfig(train_height=H, train_width=W))
        assert engine.intrinsics is None and engine.intrinsics_state() is None
        assert len(engine.optimizer.param_groups) == 1
        assert "adapt_intrinsics_fx_change" not in engine.stats()
