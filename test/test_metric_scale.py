"""Relative -> metric scale online (adapt/scale.py): exact synthetic frame pairs, known answers."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mono_depth_ros.adapt.scale import (MetricScaleConfig, MetricScaleEstimator, OnlineMetricScale, RunningLogScale,
                                        apply_scale_shift, wants_online_scale)

WRONG = 0.137          # the "relative network": true depth times an arbitrary factor
SKY = 1000.0           # depth given to sky pixels (+inf in the renderer)


@pytest.fixture(scope="module")
def drive():
    from mono_depth_ros.tools.synth import render_drive
    return list(render_drive("A", seed=5, duration_s=2.0, width=640, height=192, camera_noise=False))


def _depth(frame) -> np.ndarray:
    return np.where(np.isfinite(frame.depth), frame.depth, SKY).astype(np.float32)


def _T_source_target(target, source) -> np.ndarray:
    return np.linalg.inv(source.T_map_camera) @ target.T_map_camera


class TestEstimator:
    def test_wrong_scale_recovered_within_2_percent(self, drive):
        est = MetricScaleEstimator()
        errors = []
        for i in range(1, len(drive), 4):
            tgt, src = drive[i], drive[i - 1]
            T = _T_source_target(tgt, src)
            assert np.linalg.norm(T[:3, 3]) > 0.5   # the car moves ~1 m between frames
            e = est.estimate(tgt.image, _depth(tgt) * WRONG, src.image, T, tgt.K)
            assert e.ok, e
            errors.append(e.scale * WRONG - 1.0)     # metric = scale * relative = scale * WRONG * true
        assert len(errors) >= 4
        assert max(abs(x) for x in errors) < 0.02, errors

    def test_scale_does_not_depend_on_the_arbitrary_factor(self, drive):
        est = MetricScaleEstimator()
        tgt, src = drive[6], drive[5]
        T = _T_source_target(tgt, src)
        for factor in (0.01, 1.0, 30.0):
            e = est.estimate(tgt.image, _depth(tgt) * factor, src.image, T, tgt.K)
            assert e.ok and abs(e.scale * factor - 1.0) < 0.02, (factor, e)

    def test_affine_disparity_scale_and_shift(self, drive):
        # relative disparity = 2 * metric disparity + 0.05  ->  metric disparity = 0.5 r - 0.025
        est = MetricScaleEstimator()
        a_true, b_true = 0.5, -0.025
        got = []
        for i in (3, 9, 15):
            tgt, src = drive[i], drive[i - 1]
            rel = 1.0 / ((1.0 / _depth(tgt) - b_true) / a_true)   # the network's 1/disparity
            e = est.estimate(tgt.image, rel.astype(np.float32), src.image, _T_source_target(tgt, src), tgt.K,
                             affine=True)
            assert e.ok, e
            got.append((1.0 / e.scale, e.shift))
            metric = apply_scale_shift(rel.astype(np.float32), e.scale, e.shift, "relative_affine_disparity")
            gt = _depth(tgt)
            near = gt < 50
            # what matters: the depth it gives, median ratio over the scene within 5 %
            assert abs(float(np.median(metric[near] / gt[near])) - 1.0) < 0.05, (i, e)
        a_med = float(np.median([g[0] for g in got]))
        b_med = float(np.median([g[1] for g in got]))
        assert abs(a_med / a_true - 1) < 0.08 and abs(b_med - b_true) < 0.01, got

    def test_guard_rejects_no_motion_and_textureless_frames(self, drive):
        est = MetricScaleEstimator()
        tgt, src = drive[4], drive[3]
        e = est.estimate(tgt.image, _depth(tgt), src.image, np.eye(4), tgt.K)
        assert not e.ok and e.reason == "no motion"
        grey = np.full_like(tgt.image, 128)
        e = est.estimate(grey, _depth(tgt), grey, _T_source_target(tgt, src), tgt.K)
        assert not e.ok and e.reason.startswith("flat minimum"), e

    def test_costs_are_lowest_at_the_true_depth(self, drive):
        import torch
        est = MetricScaleEstimator()
        tgt, src = drive[8], drive[7]
        img, d, Ks = est.shrink(tgt.image, _depth(tgt), tgt.K)
        src_img = est.shrink(src.image, _depth(src), src.K)[0]
        cam = est._camera(Ks, est.config.height, est.config.width)
        factors = torch.tensor([0.5, 0.8, 1.0, 1.25, 2.0]).reshape(-1, 1, 1, 1)
        c = est.costs(img, src_img, d * factors, _T_source_target(tgt, src), cam)
        assert c.shape == (5,) and int(torch.argmin(c)) == 2, c
        with pytest.raises(ValueError, match="depths"):
            est.costs(img, src_img, d[0], _T_source_target(tgt, src), cam)


class TestRunning:
    def test_median_ignores_outliers_and_reports_standard_error(self):
        r = RunningLogScale(window=30)
        rng = np.random.default_rng(0)
        for _ in range(25):
            r.add(2.0 * math.exp(rng.normal(0, 0.02)))
        for _ in range(5):
            r.add(50.0)
        assert abs(r.scale / 2.0 - 1) < 0.02
        assert 0.002 < r.std < 0.02, r.std
        r2 = RunningLogScale(window=3)
        for s in (1.0, 4.0, 4.0, 4.0):
            r2.add(s)
        assert r2.scale == pytest.approx(4.0) and r2.std == 0.0 and len(r2) == 3

    def test_modes(self):
        assert wants_online_scale("auto", "relative_affine_disparity")
        assert not wants_online_scale("off", "relative_scale")
        assert wants_online_scale("online", "metric")
        with pytest.raises(ValueError, match="metric_scale"):
            wants_online_scale("sometimes", "metric")


def test_online_with_a_real_ego_motion_provider(drive):
    """Frames and odometry (camera poses from the drive) through EgoMotionProvider + a FrameSelector:
    the running scale turns the wrong-scale depth metric after ``min_frames`` pairs."""
    from mono_depth_ros.egomotion import EgoMotionConfig
    from mono_depth_ros.egomotion.provider import EgoMotionProvider
    from mono_depth_ros.egomotion.samples import OdometrySample

    provider = EgoMotionProvider(EgoMotionConfig(priority=("odom",)))
    provider.set_camera_extrinsics(np.eye(4))   # odometry of the camera itself
    online = OnlineMetricScale(provider, "relative_scale", MetricScaleConfig(min_frames=3))

    def odom(stamp, T):
        provider.add_odometry(OdometrySample(stamp, T[:3, 3], Rotation.from_matrix(T[:3, :3]).as_quat(),
                                             np.zeros(3), np.zeros(3)))

    odom(drive[0].stamp_ns, drive[0].T_map_camera)
    applied = []
    for i, f in enumerate(drive):
        if i + 1 < len(drive):   # odometry runs one frame ahead of the images (interpolation needs both sides)
            odom(drive[i + 1].stamp_ns, drive[i + 1].T_map_camera)
        rel = _depth(f) * WRONG
        out = online.apply(rel)
        if out is not None:
            applied.append(float(np.median(_depth(f) / out)))
        online.on_frame(f.stamp_ns, f.image, rel, f.K)
    s = online.stats()
    assert int(s["metric_scale_frames"]) >= 10, s
    assert s["metric_scale_state"] == "applied"
    assert abs(float(s["metric_scale"]) * WRONG - 1) < 0.02, s
    assert float(s["metric_scale_std"]) < 0.02, s
    assert applied and len(applied) >= len(drive) - 6, (len(applied), s)
    assert max(abs(x - 1) for x in applied) < 0.02, applied
