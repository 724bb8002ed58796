"""Learned intrinsics (issue 16 item 3) on an exact synthetic drive: known K, known metric poses."""
import dataclasses

import numpy as np
import pytest
import torch

from mono_depth_ros.adapt import AdaptConfig
from mono_depth_ros.adapt.intrinsics import IntrinsicsCorrection, K_from_hfov
from mono_depth_ros.adapt.guard import Verdict

from .test_adapt_engine import feed, make_engine, pretrain_on_depth

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
    return pretrain_on_depth(drive_b)


def cfg(**kw):
    """The training loss's own intrinsics gradient (the calibrator off: TestCalibration has it on)."""
    base = dict(train_height=H, train_width=W, lr=1e-4, replay_per_step=1, crop_width=0, intrinsics="refine",
                intrinsics_lr=2e-3, intrinsics_calibration=False)
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

    def test_focal_warmup_freezes_the_focal_length_only(self):
        c = IntrinsicsCorrection()
        c.focal_frozen = True
        c.begin_step()
        with torch.no_grad():
            c.log_f += 0.001
            c.c += 0.001
        c.bound_step()
        assert float(c.log_f.detach()) == 0.0 and c.c.tolist() == pytest.approx([0.001, 0.001])
        c.point_frozen = True                       # the calibrator owns both (adapt/calibration.py)
        c.begin_step()
        with torch.no_grad():
            c.c += 0.001
        c.bound_step()
        assert c.c.tolist() == pytest.approx([0.001, 0.001])

    def test_focal_from_x_learns_the_shared_scale_from_fx_only(self):
        K = torch.tensor([[[100.0, 0.0, 50.0], [0.0, 90.0, 20.0], [0.0, 0.0, 1.0]]])
        c = IntrinsicsCorrection(focal_from_x=True)
        with torch.no_grad():
            c.log_f.fill_(0.1)
        out = c.correct(K, 200, 40)[0]
        assert float(out[1, 1]) == pytest.approx(90 * np.exp(0.1))      # fy follows the shared scale...
        out[1, 1].backward(retain_graph=True)
        assert float(c.log_f.grad) == 0.0                                  # ...without pulling it
        out[0, 0].backward()
        assert float(c.log_f.grad) == pytest.approx(100 * np.exp(0.1))    # d fx / d log f
        assert not IntrinsicsCorrection(fixed_aspect=False, focal_from_x=True).focal_from_x

    def test_served_average(self):
        c = IntrinsicsCorrection(average_decay=0.5)
        assert c.served_snapshot()[0].tolist() == [0.0]
        for _ in range(3):
            c.begin_step()
            with torch.no_grad():
                c.log_f += 0.002
                c.c += 0.001
            c.bound_step()
        # values 0.002, 0.004, 0.006 -> average 0.002, 0.003, 0.0045
        assert c.served_snapshot()[0].tolist() == pytest.approx([0.0045])
        assert c.served_snapshot()[1].tolist() == pytest.approx([0.00225, 0.00225])
        assert c.snapshot()[0].tolist() == pytest.approx([0.006])           # training goes on with the raw value
        c.restore((torch.tensor([0.01]), torch.tensor([0.0, 0.0])))         # a rollback: the average restarts
        assert c.served_snapshot()[0].tolist() == pytest.approx([0.01])
        with pytest.raises(ValueError):
            IntrinsicsCorrection(average_decay=1.0)

    def test_hfov_guess(self):
        K = K_from_hfov(640, 192, 90.0)
        assert K[0, 0] == pytest.approx(320.0) and K[1, 1] == pytest.approx(320.0)
        assert (K[0, 2], K[1, 2]) == (319.5, 95.5)


class TestCalibration:
    """The focal length fitted on turning pairs (adapt/calibration.py)."""

    @staticmethod
    def _pairs(drive, cal, K, gap=5):
        for i in range(gap, len(drive)):
            T = torch.from_numpy((np.linalg.inv(drive[i - gap].T_map_camera) @ drive[i].T_map_camera).astype(np.float32))
            img = [torch.from_numpy(np.ascontiguousarray(drive[j].image.transpose(2, 0, 1))) for j in (i, i - gap)]
            cal.offer(drive[i].stamp_ns, img[0], img[1], T, torch.from_numpy(K.astype(np.float32)))

    def test_fit_recovers_the_focal_length_from_turns_with_exact_depth(self, drive_b):
        from mono_depth_ros.adapt.calibration import IntrinsicsCalibrator
        K_true = drive_b[0].K
        Kw = np.array(K_true, dtype=np.float64)
        Kw[:2, :2] *= 1.2                 # the focal length 20 % long...
        Kw[:2, 2] += 0.005 * W            # ...and the principal point 0.5 % of the width off
        # This 6 s drive turns one way (up to 1.7 degrees in 0.5 s): one direction is enough here.
        # Exact depth: held as it is (depth_grid=0; the grid's own test is below).
        cal = IntrinsicsCalibrator(per_direction=8, min_per_direction=0, downsample=1, iterations=150,
                                   max_change_log_f=0.3, depth_grid=0)
        self._pairs(drive_b, cal, Kw)
        assert cal.ready() and cal.counts()[0] == 8 and cal.counts()[1] == 0, cal.counts()
        assert min(abs(q.yaw) for q in cal.pairs[1]) > np.radians(1.0)   # the largest turns were kept
        gt = {f.stamp_ns: np.nan_to_num(f.depth, posinf=100.0) for f in drive_b}
        stamps = [q.stamp_ns for q in cal.pairs[1] + cal.pairs[-1]]

        def depth_fn(x):
            assert x.shape[0] == len(stamps)
            return torch.from_numpy(np.stack([gt[s] for s in stamps]).astype(np.float32))[:, None].clamp(0.1, 100)
        res = cal.fit(depth_fn, (0.0, 0.0), (0.0, 0.0))
        assert res is not None and res.accepted and res.loss_after < res.loss_before, res
        fx = Kw[0, 0] * np.exp(res.log_f[0])
        cx, cy = Kw[0, 2] + res.c[0] * W, Kw[1, 2] + res.c[1] * H
        # Measured: see the assertion message; the start was +20 %.
        assert abs(fx / K_true[0, 0] - 1) < 0.03, (fx / K_true[0, 0] - 1, res)
        assert abs(cx - K_true[0, 2]) / W < 0.01 and abs(cy - K_true[1, 2]) / W < 0.01, (cx, cy, res)

    def test_free_depth_grid_keeps_the_networks_depth_error_out_of_the_focal_length(self, drive_b):
        """A network's depth 15 % long and bent across the image: with the depth free on a coarse grid
        (``depth_grid``, the default) the focal length stays near the truth and the fit reports the depth's
        scale; with the depth held (``depth_grid=0``) the focal length is pulled off. Measured: held, log fx
        -0.228; free, log fx -0.001 and log scale -0.151 (the bend's median: 1.17)."""
        from mono_depth_ros.adapt.calibration import IntrinsicsCalibrator
        K_true = drive_b[0].K
        gt = {f.stamp_ns: np.nan_to_num(f.depth, posinf=100.0) for f in drive_b}
        yy, xx = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
        bend = (1.15 * np.exp(0.2 * np.sin(np.pi * xx) * yy)).astype(np.float32)   # smooth, 1.15 to 1.40
        out = {}
        for grid in (0, 8):
            cal = IntrinsicsCalibrator(per_direction=8, min_per_direction=0, downsample=1, iterations=150,
                                       max_change_log_f=0.3, depth_grid=grid)
            self._pairs(drive_b, cal, K_true)
            stamps = [q.stamp_ns for q in cal.pairs[1] + cal.pairs[-1]]
            res = cal.fit(lambda x: torch.from_numpy(np.stack([gt[s] * bend for s in stamps]).astype(np.float32))[
                :, None].clamp(0.1, 100), (0.0, 0.0), (0.0, 0.0))
            assert res is not None, res
            out[grid] = res
        held, free = out[0], out[8]
        assert held.log_depth_scale == 0.0
        assert free.accepted and abs(free.log_f[0]) < 0.02, free          # the truth is 0
        assert free.log_depth_scale == pytest.approx(-np.log(np.median(bend)), abs=0.05), free
        assert abs(held.log_f[0]) > 2 * abs(free.log_f[0]) + 0.02, (held, free)   # what the grid is for

    def test_coarse_levels_bring_a_far_principal_point_into_reach(self, drive_b):
        """From f +20% and the principal point 5% of W off (outside the warp's basin at the fit's own size),
        coarse levels first (``coarse``) land the focal length and cx; measured: without them f -5.5%,
        cx +1.3% of W; with 1/4 and 1/2 first f +1.5%, cx -0.2% (cy +1.7% either way on this 6 s drive)."""
        from mono_depth_ros.adapt.calibration import IntrinsicsCalibrator
        K_true = drive_b[0].K
        Kw = np.array(K_true, dtype=np.float64)
        Kw[:2, :2] *= 1.2
        Kw[:2, 2] += 0.05 * W
        gt = {f.stamp_ns: np.nan_to_num(f.depth, posinf=100.0) for f in drive_b}
        err = {}
        for coarse in ((), (4, 2)):
            cal = IntrinsicsCalibrator(per_direction=8, min_per_direction=0, downsample=1, iterations=150,
                                       max_change_log_f=0.3, max_change_c=0.1, coarse=coarse)
            self._pairs(drive_b, cal, Kw)
            stamps = [q.stamp_ns for q in cal.pairs[1] + cal.pairs[-1]]
            res = cal.fit(lambda x: torch.from_numpy(np.stack([gt[s] for s in stamps]).astype(np.float32))[
                :, None].clamp(0.1, 100), (0.0, 0.0), (0.0, 0.0))
            assert res is not None and res.accepted, res
            err[coarse] = (Kw[0, 0] * np.exp(res.log_f[0]) / K_true[0, 0] - 1, (Kw[0, 2] + res.c[0] * W - K_true[0, 2]) / W)
        assert abs(err[(4, 2)][0]) < 0.03 and abs(err[(4, 2)][1]) < 0.01, err
        assert abs(err[()][0]) > 2 * abs(err[(4, 2)][0]), err      # what the levels are for

    def test_fit_is_bounded_and_needs_both_directions_by_default(self, drive_b):
        from mono_depth_ros.adapt.calibration import IntrinsicsCalibrator
        cal = IntrinsicsCalibrator(downsample=1, iterations=20, max_change_log_f=0.01, max_change_c=0.001)
        self._pairs(drive_b, cal, drive_b[0].K * np.array([[1.2, 1, 1], [1, 1.2, 1], [1, 1, 1]]))
        assert not cal.ready() and cal.fit(lambda x: None, (0.0, 0.0), (0.0, 0.0)) is None   # one direction only
        cal.min_per_direction = 0
        res = cal.fit(lambda x: torch.full((x.shape[0], 1, H, W), 10.0), (0.0, 0.0), (0.0, 0.0))
        assert abs(res.log_f[0]) <= 0.01 + 1e-7 and max(abs(v) for v in res.c) <= 0.001 + 1e-7, res
        bad = torch.full((4, 4), float("nan"))
        assert not cal.offer(1, cal.pairs[1][0].target, cal.pairs[1][0].source, bad, cal.pairs[1][0].K)
        with pytest.raises(ValueError):
            IntrinsicsCalibrator(per_direction=0)

    def test_engine_fits_on_pairs_from_its_own_frame_stream(self, drive_b, depth_net):
        """The node's path: TripletBuilder gives each triplet a frame ~0.5 s back, the engine offers it to the
        calibrator and fits every N healthy steps after the warm-up; the fit moves the trained correction."""
        K_true = drive_b[0].K
        Kw = np.array(K_true, dtype=np.float64)
        Kw[:2, :2] *= 1.2
        engine, provider = make_engine(cfg(intrinsics_calibration=True, intrinsics_focal_warmup=20,
                                           intrinsics_calibration_every=20), model=depth_net)
        engine.calibrator.min_per_direction = 0          # this drive turns one way...
        engine.calibrator.downsample, engine.calibrator.iterations = 1, 150   # ...and is 192x64: fit at full size
        feed(engine, provider, [dataclasses.replace(f, K=Kw) for f in drive_b], steps=2)
        st = engine.stats()
        assert engine.calibrator.offered > 20 and st["adapt_intrinsics_fits"] >= 2, st
        fit = engine.calibrator.last
        log_f = float(engine.intrinsics.log_f.detach())
        # Towards the truth (log(1/1.2) = -0.18); measured: -0.170 after the last fit (-0.085 with the network's
        # depth held, depth_grid=0).
        assert fit.accepted and log_f == pytest.approx(fit.log_f[0]) and log_f < -0.12, (fit, log_f)
        # The training gradient leaves the focal length alone, and the principal point after the first fit.
        assert engine.intrinsics.focal_frozen and engine.intrinsics.point_frozen


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
        # Measured (seed 201, 6 s, 233 steps, the full K gradient since session 5): with the default focal
        # warm-up (100 steps, the principal point first) f +20% -> +18.7%, cx, cy 5% -> 0.2%, 0.9% of the
        # width; without the warm-up f went the wrong way (+32%). Online, the focal length is barely
        # observable (docs/learning.md, Intrinsics): this asserts it does not get worse. Since session 6 the
        # shared focal scale learns from fx's gradient only (intrinsics_focal_from_x; fy follows): on this
        # 6 s drive (few turns) it also passes; on the 2-minute drive it took f +69% -> +14% (adapt_sweep).
        assert f_err < 0.20, K
        assert cx_err < 0.02 and cy_err < 0.02, K
        assert K[0, 0] / K[1, 1] == pytest.approx(Kw[0, 0] / Kw[1, 1])   # fixed aspect
        # Every step within its bounds.
        assert max(s[0] for s in steps_seen) <= 0.005 + 1e-7 and max(s[1] for s in steps_seen) <= 0.002 + 1e-7
        st = engine.stats()
        assert st["adapt_intrinsics_fx_change"] == pytest.approx(K[0, 0] / Kw[0, 0] - 1, abs=1e-6)

    def test_rollback_restores_intrinsics_with_the_weights(self, drive_b, depth_net):
        engine, provider = make_engine(cfg(good_every=1, swap_every=1, intrinsics_focal_warmup=0), model=depth_net)
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


# ------------------------------------------------------------------ the node over DDS
def _run_node(tmp_path, mode: str, send_info: bool, check):
    """A DepthNode (adapt_intrinsics = ``mode``) and a peer over DDS; ``check(node, peer, spin, send, got)``."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image

    from mono_depth_ros.ros.depth_node import DepthNode

    from .rosutil import make_camera_info, make_image, spin_until, textured_image

    ctx = Context()
    rclpy.init(context=ctx)
    overrides = [Parameter("input_width", value=320), Parameter("input_height", value=96),
                 Parameter("inference_backend", value="eager"), Parameter("adapt_anchor", value="none"),
                 Parameter("resume", value=False), Parameter("checkpoint_dir", value=str(tmp_path / "ck")),
                 Parameter("checkpoint_period", value=0.0), Parameter("adapt_intrinsics", value=mode),
                 Parameter("camera_hfov_deg", value=80.0)]
    node = DepthNode(f"intrinsics_{mode}", context=ctx, parameter_overrides=overrides)
    peer = rclpy.create_node("intrinsics_peer", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(peer)
    got = {"depth": [], "depth_info": [], "calibrated": []}
    try:
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        peer.create_subscription(Image, "depth", got["depth"].append, qos)
        peer.create_subscription(CameraInfo, "depth/camera_info", got["depth_info"].append, qos)
        peer.create_subscription(CameraInfo, "camera_info_calibrated", got["calibrated"].append, qos)
        pub_img = peer.create_publisher(Image, "image", qos)
        pub_info = peer.create_publisher(CameraInfo, "camera_info", qos)
        assert spin_until(peer, lambda: pub_img.get_subscription_count() > 0, 10, ex)
        rgb = textured_image(320, 96)

        def send(fx: float = 200.0, wait: bool = True) -> None:
            for v in got.values():
                v.clear()
            msg = make_image(rgb)
            msg.header.stamp = peer.get_clock().now().to_msg()
            if send_info:
                info = make_camera_info(320, 96, fx)
                info.header.stamp = msg.header.stamp
                pub_info.publish(info)
                assert spin_until(peer, lambda: node._info is not None, 5, ex)
            pub_img.publish(msg)
            if wait:
                assert spin_until(peer, lambda: bool(got["depth"]) and (mode == "off" or bool(got["calibrated"])),
                                  30, ex), got

        check(node, peer, lambda t: spin_until(peer, lambda: False, t, ex), send, got)
    finally:
        node.shutdown()
        ex.shutdown()
        node.destroy_node()
        peer.destroy_node()
        rclpy.shutdown(context=ctx)


@pytest.mark.ros
def test_node_publishes_the_corrected_camera_info(tmp_path):
    def check(node, peer, spin, send, got):
        send(fx=200.0)
        cal = got["calibrated"][-1]
        np.testing.assert_allclose(np.reshape(cal.k, (3, 3)), [[200, 0, 159.5], [0, 200, 47.5], [0, 0, 1]])
        assert cal.header.stamp == got["depth"][-1].header.stamp and (cal.width, cal.height) == (320, 96)
        # A learned correction verified with the served weights (what the engine's rollback point holds):
        engine = node.adaptation.engine
        engine._intr_served = (torch.tensor([np.log(0.9)]), torch.tensor([0.02, -0.03]))
        send(fx=200.0)
        K = np.reshape(got["calibrated"][-1].k, (3, 3))
        np.testing.assert_allclose(K, [[180, 0, 159.5 + 6.4], [0, 180, 47.5 - 2.88], [0, 0, 1]], rtol=1e-6)
        np.testing.assert_allclose(np.reshape(got["calibrated"][-1].p, (3, 4))[:, :3], K, rtol=1e-6)
        # The depth is served with it (depth/camera_info: the learned K at the depth image's size).
        Kd = np.reshape(got["depth_info"][-1].k, (3, 3))
        assert Kd[0, 0] == pytest.approx(180.0 * got["depth_info"][-1].width / 320, rel=1e-4)
        d = node.diagnostics()
        assert d["intrinsics_fx"] == "180.000" and d["intrinsics_fx_change"] == "-20.000"
        assert d["intrinsics_cy_change"] == "-2.880"
    _run_node(tmp_path, "refine", True, check)


@pytest.mark.ros
def test_node_estimates_without_camera_info_and_drops_frames_when_off(tmp_path):
    def estimate(node, peer, spin, send, got):
        send()                                       # no camera_info at all: served with the guess
        want = K_from_hfov(320, 96, 80.0)
        np.testing.assert_allclose(np.reshape(got["calibrated"][-1].k, (3, 3)), want, rtol=1e-6)
        Kd = np.reshape(got["depth_info"][-1].k, (3, 3))                      # depth served with the guess
        assert Kd[0, 0] == pytest.approx(want[0, 0] * got["depth_info"][-1].width / 320, rel=1e-4)
        assert node.stats.input_errors == 0

    def off(node, peer, spin, send, got):
        assert peer.count_publishers("camera_info_calibrated") == 0
        send(wait=False)
        spin(2.0)
        assert not got["depth"] and not got["calibrated"]     # dropped until camera_info arrives (as before)
        assert node.stats.input_errors >= 1
    _run_node(tmp_path, "estimate", False, estimate)
    _run_node(tmp_path, "off", False, off)


# ------------------------------------------------------------------ mono-depth adapt
@pytest.mark.slow
def test_mono_depth_adapt_with_a_perturbed_camera_info(tmp_path):
    """The command: ``--intrinsics refine --camera-info-error`` learns from the perturbed K and reports the
    learned K against the bag's; ``--intrinsics estimate`` starts from the field of view."""
    import json

    from mono_depth_ros import cli
    from mono_depth_ros.tools.synth import generate_bag
    bag = tmp_path / "drive_B"
    generate_bag(bag, preset="B", seed=201, duration_s=2.0, width=320, height=96, progress=False,
                 contact_sheet=False, sensors="camera,depth_gt,odom,tf,tf_static", workers=1)
    rc = cli.main(["adapt", str(bag), "--out", str(tmp_path / "r" / "a.pt"), "--train-size", "96x320", "--quiet",
                   "--eval-every", "0", "--anchor", "none", "--intrinsics", "refine",
                   "--camera-info-error", "0.2,0.2,0.05,0.05", "--steps-per-frame", "3"])
    assert rc == 0
    rep = json.loads((tmp_path / "r" / "report.json").read_text())["intrinsics"]
    assert rep["seen"]["fx"] == pytest.approx(1.2 * rep["bag"]["fx"])
    assert rep["seen"]["cx"] == pytest.approx(rep["bag"]["cx"] + 16.0)
    assert rep["error"]["cx"] < 5.0 - 0.5 and rep["learned"] != rep["seen"], rep   # learning moved cx toward the bag's
    rc = cli.main(["adapt", str(bag), "--out", str(tmp_path / "e" / "a.pt"), "--train-size", "96x320", "--quiet",
                   "--eval-every", "0", "--anchor", "none", "--intrinsics", "estimate", "--camera-hfov-deg", "70"])
    assert rc == 0
    rep = json.loads((tmp_path / "e" / "report.json").read_text())["intrinsics"]
    assert rep["seen"]["fx"] == pytest.approx(K_from_hfov(320, 96, 70.0)[0, 0])
