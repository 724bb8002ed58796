"""Losses: SSIM/photometric known answers, auto-masking, smoothness, SILog, NaN guarding."""
import math

import pytest
import torch

from mono_depth_ros.geometry import stereo_T_source_target
from mono_depth_ros.learning.step import StepStats, StepStatus, self_supervised_step, supervised_step
from mono_depth_ros.losses import (SelfSupervisedLoss, SupervisedSILogLoss, photometric_error,
                                   reduce_reprojection, silog_loss, smoothness_loss, ssim_box)
from mono_depth_ros.models import build_model

torch.set_num_threads(1)


def test_ssim_identical_is_zero_and_range():
    x = torch.rand(1, 3, 8, 8)
    assert float(ssim_box(x, x).max()) < 1e-6
    d = ssim_box(x, 1 - x)
    assert float(d.min()) >= 0 and float(d.max()) <= 1


def test_photometric_constant_images_known_answer():
    # Constant images a, b: SSIM term = (1 - (2ab + C1)/(a^2 + b^2 + C1))/2 (sigma terms cancel).
    a, b = 0.2, 0.6
    C1 = 0.01 ** 2
    ssim = (1 - (2 * a * b + C1) / (a * a + b * b + C1)) / 2
    expected = 0.85 * ssim + 0.15 * abs(a - b)
    e = photometric_error(torch.full((1, 3, 5, 5), a), torch.full((1, 3, 5, 5), b))
    assert e.shape == (1, 1, 5, 5)
    assert torch.allclose(e, torch.full_like(e, expected), atol=1e-4)


def test_reduce_min_and_automask():
    reproj = torch.tensor([[[[0.5]], [[0.2]]]])      # (1,2,1,1)
    identity = torch.tensor([[[[0.1]], [[0.9]]]])
    loss, mask = reduce_reprojection(reproj, None)
    assert math.isclose(float(loss), 0.2, rel_tol=1e-6) and float(mask) == 1
    loss, mask = reduce_reprojection(reproj, identity)
    assert abs(float(loss) - 0.1) < 1e-4 and float(mask) == 0  # static pixel masked out


def test_smoothness_zero_for_constant_and_scale_invariant():
    img = torch.rand(1, 3, 8, 8)
    assert float(smoothness_loss(torch.full((1, 1, 8, 8), 0.3), img)) == 0
    d = torch.rand(1, 1, 8, 8)
    assert math.isclose(float(smoothness_loss(d, img)), float(smoothness_loss(3 * d, img)), rel_tol=1e-5)


def test_silog_known_answer_and_masking():
    gt = torch.tensor([[[[1.0, 2.0, float("inf"), float("nan")]]]])
    pred = torch.tensor([[[[2.0, 4.0, 7.0, 7.0]]]])
    # d = log 2 everywhere valid: sqrt(d^2 - 0.85 d^2) = sqrt(0.15) log 2.
    assert math.isclose(float(silog_loss(pred, gt, 0.85)), math.sqrt(0.15) * math.log(2), rel_tol=1e-5)
    assert float(silog_loss(pred, gt, 1.0)) < 1e-4  # fully scale invariant


def _stereo_batch(H=32, W=64, b=0.2):
    K = torch.tensor([[40.0, 0, W / 2 - 0.5], [0, 40.0, H / 2 - 0.5], [0, 0, 1]])[None]
    return torch.rand(1, 3, H, W), [torch.rand(1, 3, H, W)], [stereo_T_source_target(b)], K


def test_self_supervised_loss_parts_and_grad():
    torch.manual_seed(0)
    target, sources, poses, K = _stereo_batch()
    net = build_model("default").train()
    loss_fn = SelfSupervisedLoss(net.min_depth, net.max_depth)
    total, parts = loss_fn(target, sources, poses, K, net.predict_disps(target))
    assert total.dim() == 0 and set(parts) == {"photometric", "smoothness", "automask_fraction"}
    total.backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    with pytest.raises(ValueError, match="one T_source_target per source"):
        loss_fn(target, sources, [], K, net.predict_disps(target))


@pytest.mark.parametrize("where", ["target", "source", "pose", "K"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_inputs_skip_and_count(where, bad):
    torch.manual_seed(0)
    target, sources, poses, K = _stereo_batch()
    {"target": target, "source": sources[0], "pose": poses[0], "K": K}[where].view(-1)[0] = bad
    net = build_model("default").train()
    before = [p.detach().clone() for p in net.parameters()]
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    stats = StepStats()
    r = self_supervised_step(net, opt, SelfSupervisedLoss(), target, sources, poses, K, stats)
    assert r.status == StepStatus.SKIPPED_NONFINITE_INPUT and stats.skipped == 1
    assert all(torch.equal(a, p) for a, p in zip(before, net.parameters()))


def test_nonfinite_loss_and_grad_skipped():
    net = build_model("default").train()
    opt = torch.optim.SGD(net.parameters(), 0.1)
    stats = StepStats()
    img = torch.rand(1, 3, 64, 64)
    gt = torch.full((1, 1, 64, 64), 5.0)
    with torch.no_grad():
        net.heads[0].conv.bias.fill_(float("nan"))  # corrupt weights -> NaN loss
    before = [p.detach().clone() for p in net.parameters()]
    r = supervised_step(net, opt, SupervisedSILogLoss(), img, gt, stats)
    assert r.status == StepStatus.SKIPPED_NONFINITE_LOSS and stats.counts[StepStatus.SKIPPED_NONFINITE_LOSS] == 1
    assert all(torch.equal(a, p) or (torch.isnan(a).any() and torch.isnan(p).any())
               for a, p in zip(before, net.parameters()))


def test_supervised_step_ok_and_gt_inf_is_fine():
    torch.manual_seed(0)
    net = build_model("default").train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    gt = torch.full((2, 1, 32, 32), 5.0)
    gt[:, :, :8] = float("inf")  # sky
    stats = StepStats()
    r = supervised_step(net, opt, SupervisedSILogLoss(), torch.rand(2, 3, 32, 32), gt, stats)
    assert r.ok and math.isfinite(r.loss) and stats.counts[StepStatus.OK] == 1
