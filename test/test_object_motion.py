"""Moving objects (Li et al. 2020): the translation field in the warp, its regularisers and its schedule."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mono_depth_ros.adapt import AdaptConfig
from mono_depth_ros.adapt.motion import FIELDS_KEY, ObjectMotion, remove_median
from mono_depth_ros.adapt.terms import (ObjectMotionTerm, ReprojectionTerm, StepInputs, TermContext,
                                        group_smoothness, sqrt_sparsity)
from mono_depth_ros.geometry import PinholeCamera, warp
from mono_depth_ros.losses import FastSelfSupervisedLoss, photometric_error_fast


def depth_to_disp(depth: torch.Tensor, min_depth: float, max_depth: float) -> torch.Tensor:
    """The sigmoid disparity whose ``disp_to_depth`` is ``depth`` (its inverse)."""
    return (1.0 / depth - 1.0 / max_depth) / (1.0 / min_depth - 1.0 / max_depth)

torch.set_num_threads(1)
H, W, DEPTH = 32, 64, 8.0
K = torch.tensor([[[40.0, 0, 32], [0, 40.0, 16], [0, 0, 1]]])
T_CAM = torch.eye(4)[None].clone()
T_CAM[0, 2, 3] = -0.5                 # the camera drove 0.5 m forward: target points come 0.5 m closer
T_OBJ = torch.tensor([0.5, 0.0, 0.0])  # the car drove 0.5 m to the right (2.5 px at 8 m)
CAR = (slice(10, 22), slice(20, 44))


def _texture(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """A smooth colour texture in source pixel coordinates: (...) -> (3, ...) in [0, 1]."""
    out = []
    for k in range(3):
        a = 0.5 + 0.2 * torch.sin(0.45 * u + 1.3 * k) * torch.cos(0.37 * v - 0.7 * k) \
            + 0.15 * torch.sin(0.23 * (u + v) + k)
        out.append(a)
    return torch.stack(out)


def _pair():
    """(target, source, true field, car mask): the source is the texture; the target samples it where each
    target pixel lands in the source (camera motion, plus the car's own motion on the car)."""
    cam = PinholeCamera(K, H, W)
    depth = torch.full((1, 1, H, W), DEPTH)
    field = torch.zeros(1, 3, H, W)
    field[0, :, CAR[0], CAR[1]] = T_OBJ.view(3, 1, 1)
    pts = cam.backproject(depth).reshape(1, 3, -1)
    moved = (T_CAM[0, :3, :3] @ pts + T_CAM[0, :3, 3:]).reshape(1, 3, H, W) + field
    uv, _ = cam.project(moved)
    target = _texture(uv[0, 0], uv[0, 1])[None]
    vv, uu = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32),
                            indexing="ij")
    source = _texture(uu, vv)[None]
    car = torch.zeros(1, 1, H, W, dtype=torch.bool)
    car[0, 0, CAR[0], CAR[1]] = True
    return target, source, depth, field, car


def test_with_the_true_field_the_photometric_error_on_the_mover_drops():
    target, source, depth, field, car = _pair()
    cam = PinholeCamera(K, H, W)
    inner = car.clone()
    inner[..., :, :] = False
    inner[0, 0, 12:20, 24:40] = True                     # away from the car's border (bilinear mixing)
    err_rigid = photometric_error_fast(warp(source, depth, T_CAM, cam)[0], target)
    err_field = photometric_error_fast(warp(source, depth, T_CAM, cam, motion=field)[0], target)
    rigid_car, field_car = float(err_rigid[inner].mean()), float(err_field[inner].mean())
    assert field_car < 0.2 * rigid_car, (rigid_car, field_car)
    # Off the car the field is zero: the same warp, the same error.
    far = torch.ones_like(car)
    far[0, 0, 8:24, 18:46] = False                     # 2 px off the car: outside SSIM's 3x3 window
    assert torch.allclose(err_rigid[far], err_field[far], atol=1e-5)
    # The loss the engine uses (auto-masking, scale 0): lower with the true field.
    loss = FastSelfSupervisedLoss(0.1, 100.0, smoothness_weight=0.0, scale_mode="native", num_scales=1, noise=0)
    disps = [depth_to_disp(depth, 0.1, 100.0)]
    without = float(loss(target, [source], [T_CAM], K, disps)[0])
    with_field = float(loss(target, [source], [T_CAM], K, disps, object_motion=[field])[0])
    assert with_field < 0.85 * without, (without, with_field)


def test_regularisers_known_values():
    z = torch.zeros(1, 3, 8, 8)
    assert float(group_smoothness(z)) == pytest.approx(0.0, abs=1e-5)
    step = z.clone()
    step[..., 4:] = torch.tensor([3.0, 4.0, 0.0]).view(3, 1, 1)     # a 5 m jump along one column
    # One column of 7 jumps of length 5 among 7*7 pixel pairs.
    assert float(group_smoothness(step)) == pytest.approx(5 * 7 / 49, rel=1e-5)
    # L1/2 sparsity: the same total motion costs less on few pixels than spread thin.
    few, spread = z.clone(), torch.full((1, 3, 8, 8), 0.25)
    few[..., :2, :2] = 4.0                                          # the same L1 norm as ``spread``
    assert float(few.abs().mean()) == float(spread.abs().mean())
    # m = 0.25 for both: few = 2m (60/64 + 4/64 sqrt(17)), spread = 2m sqrt(2).
    assert float(sqrt_sparsity(few)) == pytest.approx(0.5 * (60 / 64 + 4 / 64 * 17 ** 0.5), rel=1e-5)
    assert float(sqrt_sparsity(spread)) == pytest.approx(0.5 * 2 ** 0.5, rel=1e-5)
    # Its gradient pulls every nonzero pixel toward zero.
    x = spread.clone().requires_grad_(True)
    sqrt_sparsity(x).backward()
    assert bool((x.grad > 0).all())


def _fit_field(target, source, depth, sparsity: float, steps: int = 300) -> torch.Tensor:
    """Fit a free per-pixel field with the photometric loss + the object-motion regularisers."""
    free = torch.zeros(1, 3, H, W, requires_grad=True)

    class _Free:
        def active(self):
            return True

        def fields(self, ctx):
            return [free]

    loss_fn = FastSelfSupervisedLoss(0.1, 100.0, smoothness_weight=0.0, scale_mode="native", num_scales=1, noise=0)
    photo = ReprojectionTerm(loss_fn, motion=_Free())
    reg = ObjectMotionTerm(_Free(), smoothness_weight=0.05, sparsity_weight=sparsity)
    ctx = TermContext(StepInputs(target, [source], [T_CAM], K), None, [depth_to_disp(depth, 0.1, 100.0)])
    opt = torch.optim.Adam([free], lr=0.02)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)   # Adam's steps shrink to zero at the end
    for _ in range(steps):
        opt.zero_grad()
        (photo(ctx) + reg(ctx)).backward()
        opt.step()
        sched.step()
    return free.detach()


def test_sparsity_keeps_the_field_zero_on_static_pixels_and_lets_the_mover_move():
    target, source, depth, field, car = _pair()
    fit = _fit_field(target, source, depth, sparsity=0.2)
    static = (~car).expand(1, 3, H, W)
    inner = torch.zeros_like(car)
    inner[0, 0, 13:19, 24:40] = True
    mover = fit[0][:, inner[0, 0]].mean(1)
    assert float(mover[0]) == pytest.approx(0.5, abs=0.05), mover       # the car's 0.5 m to the right
    assert float(mover[1:].abs().max()) < 0.01, mover                      # ... and nothing else
    assert float(fit[static].abs().mean()) < 0.01, float(fit[static].abs().mean())
    # Without the regularisers the static pixels drift more (the sparsity term is what holds them at zero).
    free = _fit_field(target, source, depth, sparsity=0.0)
    assert float(free[static].abs().mean()) > 2 * float(fit[static].abs().mean())


def test_a_uniform_field_is_a_depth_scale_error_and_remove_median_forbids_it():
    """With known camera motion a field shared by the whole image is the depth's scale in disguise: depth
    scaled by s plus the uniform field (s-1) t warps exactly like the true depth (a field learned fast
    cancels the known translation and the metric scale is lost). Removing the median leaves zero."""
    target, source, depth, field, car = _pair()
    cam = PinholeCamera(K, H, W)
    s = 1.6
    uniform = ((s - 1) * T_CAM[0, :3, 3]).view(1, 3, 1, 1).expand(1, 3, H, W)
    err_true = photometric_error_fast(warp(source, depth, T_CAM, cam, motion=field)[0], target)
    err_scaled = photometric_error_fast(warp(source, s * depth, T_CAM, cam, motion=field)[0], target)
    err_disguised = photometric_error_fast(warp(source, s * depth, T_CAM, cam, motion=field * s + uniform)[0],
                                           target)
    inner = (slice(None), slice(None), slice(6, H - 6), slice(12, W - 12))   # off the border padding
    true, scaled = float(err_true[inner].mean()), float(err_scaled[inner].mean())
    assert true < 0.01 and scaled > 5 * true, (true, scaled)
    assert torch.allclose(err_disguised, err_true, atol=1e-4)
    # The median of (uniform + the car's motion) is the background: removed, the background is exactly
    # zero and the car keeps its motion relative to it.
    out = remove_median(uniform + field)
    assert float(out[(~car).expand(1, 3, H, W)].abs().max()) < 1e-6
    assert torch.allclose(out[0, :, 15, 30], T_OBJ, atol=1e-6)
    assert float(remove_median(uniform.contiguous()).abs().max()) < 1e-6


def test_object_motion_net_starts_at_zero_and_fields_are_computed_once():
    target, source, depth, _, _ = _pair()
    om = ObjectMotion(0.1, 100.0, after_steps=0, steps=lambda: 0)
    ctx = TermContext(StepInputs(target, [source, source], [T_CAM, T_CAM], K), None,
                      [depth_to_disp(depth, 0.1, 100.0)])
    f = om.fields(ctx)
    assert len(f) == 2 and f[0].shape == (1, 3, H, W) and float(f[0].detach().abs().max()) == 0.0
    assert om.fields(ctx) is f and ctx.extra[FIELDS_KEY] is f


def test_config_refuses_object_motion_without_the_fast_step():
    with pytest.raises(ValueError, match="fast step"):
        AdaptConfig(object_motion=True, step="reference")
    with pytest.raises(ValueError, match="object_motion_after_steps"):
        AdaptConfig(object_motion=True, object_motion_after_steps=-1)


def test_schedule_off_then_on_in_the_engine():
    """The field is off (the motion net untouched, the warp rigid) for N steps, then trains."""
    from .test_adapt_engine import feed, make_engine, small
    from mono_depth_ros.tools.synth import render_drive
    frames = list(render_drive("B", seed=7, duration_s=2.0, width=192, height=64))
    N = 6
    engine, provider = make_engine(small(lr=1e-3, replay_per_step=1, object_motion=True,
                                         object_motion_after_steps=N, warmup_steps=100))
    om = engine.object_motion
    start = [p.detach().clone() for p in om.parameters()]
    active, changed = [], []
    for f in frames:
        feed(engine, provider, [f], steps=2)
        active.append((engine.counters.steps, om.active()))
        changed.append(any(not torch.equal(a, b) for a, b in zip(start, om.parameters())))
    before = [c for (s, _), c in zip(active, changed) if s <= N]
    assert before and not any(before), active                      # untouched while off
    assert all(a == (s >= N) for s, a in active)
    assert engine.counters.steps >= N + 6 and changed[-1], (engine.stats(), active)
    assert engine.stats()["adapt_object_motion_active"] is True
    # The motion network's gradients are clipped to its own limit: its update stays bounded.
    assert all(torch.isfinite(p).all() for p in om.parameters())


# ----------------------------------------------------------------------------- the node, over DDS
@pytest.fixture(scope="module")
def traffic_bag(tmp_path_factory):
    """6 s of domain B with dense traffic (moving cars cover >= 5 % of the pixels: test_traffic.py)."""
    from mono_depth_ros.tools.synth import generate_bag
    out = tmp_path_factory.mktemp("traffic") / "traffic_B"
    generate_bag(out, preset="B", seed=31, duration_s=6.0, width=320, height=96, progress=False,
                 contact_sheet=False, sensors="camera,odom,tf,tf_static", traffic="dense", workers=1)
    return out


@pytest.mark.ros
def test_node_learns_with_object_motion_over_dds(tmp_path, traffic_bag):
    """The dense-traffic bag replayed over DDS (sim time) into the node in its own process with
    adapt_object_motion: it adapts, the field enters the warp after adapt_object_motion_after_steps, the
    served weights are swapped, and depth is published to the end of the drive."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    from mono_depth_ros.bagio import iter_messages
    from mono_depth_ros.conventions import Topics
    from mono_depth_ros.msgconv import stamp_to_ns

    from .rosutil import BAG_REMAPS, NodeProcess, diagnostics, replay_in_thread, spin_until

    N = 2
    last_image_ns = max(stamp_to_ns(m.header.stamp) for _, _, m in iter_messages(traffic_bag, [Topics.BAG_IMAGE]))
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("object_motion_dds_client", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    depth_stamps: list[int] = []
    node.create_subscription(Image, "depth", lambda m: depth_stamps.append(stamp_to_ns(m.header.stamp)),
                             QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    params = {"use_sim_time": True, "adapt_object_motion": True, "adapt_object_motion_after_steps": N,
              "publish_points": False, "checkpoint_period": 0.0, "resume": False, "adapt_train_width": 320,
              "adapt_train_height": 96}
    proc = NodeProcess(tmp_path, params=params, remaps=BAG_REMAPS)
    try:
        assert proc.wait_for_log("depth node ready", 90), proc.log()
        assert proc.wait_for_log("adaptation ready", 120), proc.log()   # its training process is up
        done = replay_in_thread(node, traffic_bag)
        assert spin_until(node, done.is_set, 60, ex)
        spin_until(node, lambda: False, 2.0, ex)
        stats = diagnostics(node, ex)
        got = {k: stats[k] for k in ("frames_processed", "adapt_frames", "adapt_steps", "adapt_swaps",
                                     "adapt_object_motion_active", "adapt_rollbacks")}
        print("object motion over DDS:", got, f"{len(depth_stamps)} depth images")
        assert int(got["adapt_steps"]) > N + 2 and got["adapt_object_motion_active"] == "True", got
        assert int(got["adapt_swaps"]) >= 1, got
        # Depth all along the drive: from the start to its last second, while the field trains.
        assert len(depth_stamps) >= 10 and max(depth_stamps) >= last_image_ns - 1_000_000_000, (
            len(depth_stamps), (last_image_ns - max(depth_stamps, default=0)) / 1e9)
    finally:
        assert proc.stop() == 0
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
