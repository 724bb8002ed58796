"""EgoMotionProvider: known answers, interpolation, extrinsics, sources, priority and status."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mono_depth_ros.conventions import T_BASE_OPTICAL_ROTATION, to_ns
from mono_depth_ros.egomotion import (EgoMotionConfig, EgoMotionProvider, ImuSample,
                                      OdometrySample, PoseStatus, TransformSample)
from mono_depth_ros.egomotion.simulate import NoiseModel, simulate_drive, true_pose

T_OPT = np.eye(4)
T_OPT[:3, :3] = T_BASE_OPTICAL_ROTATION
EXACT = NoiseModel(odom_speed_sigma=0, odom_speed_scale=0, odom_yaw_rate_sigma=0, odom_yaw_rate_bias=0,
                   gyro_sigma=0, gyro_bias=(0, 0, 0), accel_sigma=0, accel_bias=(0, 0, 0), gps_sigma_h=0, gps_sigma_v=0)


def odom(t_s, x=0.0, yaw=0.0, v=0.0, w=0.0, var=0.01):
    return OdometrySample(to_ns(t_s), [x, 0, 0], Rotation.from_euler("z", yaw).as_quat(),
                          [v, 0, 0], [0, 0, w], np.eye(6) * var)


def straight(provider, v=10.0, t0=0.0, t1=1.0, rate=50.0):
    for t in np.arange(t0, t1 + 1e-9, 1 / rate):
        provider.add_odometry(odom(t, x=v * t, v=v))


def gt_relative(drive, i, j):
    """T_cam(j)_cam(i) from the drive's ground truth."""
    return np.linalg.inv(drive.T_odom_camera_gt[j]) @ drive.T_odom_camera_gt[i]


class TestKnownAnswers:
    def test_forward_motion_is_minus_z_in_optical_frame(self):
        p = EgoMotionProvider(T_base_camera=T_OPT)
        straight(p)
        rp = p.relative_pose(to_ns(0.5), to_ns(0.4))   # target later than source
        assert rp.status is PoseStatus.OK and rp.source == "odom"
        # Camera moved 1 m forward (+z optical): a point of the earlier frame is 1 m closer.
        np.testing.assert_allclose(rp.T_target_source[:3, 3], [0, 0, -1.0], atol=1e-9)
        np.testing.assert_allclose(rp.T_target_source[:3, :3], np.eye(3), atol=1e-12)
        np.testing.assert_allclose(rp.T_base_target_source[:3, 3], [-1.0, 0, 0], atol=1e-9)
        assert rp.translation_m == pytest.approx(1.0) and rp.rotation_rad == pytest.approx(0.0, abs=1e-9)
        back = p.relative_pose(to_ns(0.4), to_ns(0.5))
        np.testing.assert_allclose(back.T_target_source @ rp.T_target_source, np.eye(4), atol=1e-9)

    def test_interpolates_between_samples_slerp_and_linear(self):
        p = EgoMotionProvider()
        p.add_odometry(odom(0.0, x=0.0, yaw=0.0))
        p.add_odometry(odom(0.1, x=1.0, yaw=0.2))
        rp = p.relative_pose(to_ns(0.025), to_ns(0.0))
        T_exp = np.eye(4)
        T_exp[:3, :3] = Rotation.from_euler("z", 0.05).as_matrix()
        T_exp[0, 3] = 0.25
        np.testing.assert_allclose(rp.T_base_target_source, np.linalg.inv(T_exp), atol=1e-12)

    def test_extrinsics_conjugation(self):
        d = simulate_drive(3.0, EXACT)
        p = EgoMotionProvider(EgoMotionConfig(priority=("tf",)), d.T_base_camera)
        d.feed(p, ("transforms",))
        s, t = d.camera_stamps_ns[3], d.camera_stamps_ns[7]
        rp = p.relative_pose(t, s)
        T_ob = true_pose(np.array([t, s]) * 1e-9)
        expected = np.linalg.inv(T_ob[0] @ d.T_base_camera) @ (T_ob[1] @ d.T_base_camera)
        np.testing.assert_allclose(rp.T_target_source, expected, atol=1e-3)   # odom integration error only
        np.testing.assert_allclose(rp.T_target_source, gt_relative(d, 3, 7), atol=1e-3)

    @pytest.mark.parametrize("source,tol_pct", [("odom", 0.01), ("odom_twist", 0.01), ("tf", 0.01),
                                                ("imu_speed", 0.01), ("imu_gps", 0.5)])
    def test_noise_free_drive_matches_ground_truth(self, source, tol_pct):
        d = simulate_drive(8.0, EXACT)
        p = EgoMotionProvider(EgoMotionConfig(priority=(source,), gps_origin=d.gps_origin, gps_imu_window_s=4.0),
                              d.T_base_camera)
        d.feed(p)
        n_ok = 0
        for i in range(0, len(d.camera_stamps_ns) - 1, 3):
            rp = p.relative_pose(d.camera_stamps_ns[i + 1], d.camera_stamps_ns[i])
            if source == "imu_gps" and not rp.ok:  # waits for later fixes; refuses one-sided windows
                continue
            assert rp.ok and rp.source == source
            gt = gt_relative(d, i, i + 1)
            err = np.linalg.norm(rp.T_target_source[:3, 3] - gt[:3, 3]) / np.linalg.norm(gt[:3, 3]) * 100
            assert err < tol_pct
            R_err = Rotation.from_matrix(gt[:3, :3].T @ rp.T_target_source[:3, :3]).magnitude()
            assert math.degrees(R_err) < 0.01
            n_ok += 1
        assert n_ok >= (10 if source == "imu_gps" else 20)


class TestSourcesAndPriority:
    def test_unusable_pose_covariance_falls_back_to_twist(self):
        p = EgoMotionProvider()
        for t in np.arange(0, 1.0001, 0.02):
            p.add_odometry(odom(t, x=10 * t, v=10.0, var=1e9 if t > 0.3 else 0.01))
        rp = p.relative_pose(to_ns(0.8), to_ns(0.5))
        assert rp.ok and rp.source == "odom_twist"
        np.testing.assert_allclose(rp.T_base_target_source[:3, 3], [-3.0, 0, 0], atol=1e-9)
        assert p.relative_pose(to_ns(0.2), to_ns(0.1)).source == "odom"
        assert p.counters["odom_pose_unusable_covariance"] == 35

    def test_nan_covariance_is_unusable(self):
        p = EgoMotionProvider()
        for t in np.arange(0, 1.0001, 0.02):
            p.add_odometry(odom(t, x=10 * t, v=10.0, var=float("nan")))
        assert p.relative_pose(to_ns(0.8), to_ns(0.5)).source == "odom_twist"

    def test_fallback_order_and_reported_source(self):
        p = EgoMotionProvider(EgoMotionConfig(priority=("odom", "tf")))
        for t in np.arange(0, 1.0001, 0.02):
            p.add_transform(TransformSample(to_ns(t), "odom", "base_link", [5 * t, 0, 0], [0, 0, 0, 1]))
        rp = p.relative_pose(to_ns(0.6), to_ns(0.4))
        assert rp.ok and rp.source == "tf"             # no odometry at all -> skipped
        assert rp.attempts[0][:2] == ("odom", "never")
        np.testing.assert_allclose(rp.T_base_target_source[:3, 3], [-1.0, 0, 0], atol=1e-9)
        # Per-query override of the priority.
        assert p.relative_pose(to_ns(0.6), to_ns(0.4), sources=["odom"]).status is PoseStatus.NEVER

    def test_lagging_preferred_source_waits_then_stale_falls_back(self):
        p = EgoMotionProvider(EgoMotionConfig(priority=("odom", "tf"), stale_timeout_s=1.0))
        straight(p, t1=1.0)                            # odometry up to 1.0 s
        for t in np.arange(0, 1.5001, 0.02):           # TF up to 1.5 s
            p.add_transform(TransformSample(to_ns(t), "odom", "base_link", [10 * t, 0, 0], [0, 0, 0, 1]))
        rp = p.relative_pose(to_ns(1.2), to_ns(1.1))
        assert rp.status is PoseStatus.NOT_YET and rp.source == "odom"   # late odometry: wait, don't fall back
        for t in np.arange(1.52, 2.3, 0.02):           # odometry silent for > stale_timeout
            p.add_transform(TransformSample(to_ns(t), "odom", "base_link", [10 * t, 0, 0], [0, 0, 0, 1]))
        rp = p.relative_pose(to_ns(1.2), to_ns(1.1))
        assert rp.ok and rp.source == "tf"

    def test_tf_other_frames_ignored(self):
        p = EgoMotionProvider(EgoMotionConfig(priority=("tf",)))
        assert not p.add_transform(TransformSample(0, "map", "odom", [0, 0, 0], [0, 0, 0, 1]))
        assert p.counters["tf_ignored_other_frames"] == 1

    def test_imu_orientation_used_when_provided(self):
        cfg = EgoMotionConfig(priority=("imu_speed",), imu_rotation="orientation")
        p = EgoMotionProvider(cfg)
        for t in np.arange(0, 1.0001, 0.01):
            # Gyro says nothing; the orientation says yaw = 0.5 t.
            p.add_imu(ImuSample(to_ns(t), [0, 0, 0], [0, 0, 9.81], Rotation.from_euler("z", 0.5 * t).as_quat()))
        straight(p)
        rp = p.relative_pose(to_ns(0.6), to_ns(0.4))
        assert rp.ok and rp.rotation_rad == pytest.approx(0.1, abs=1e-9)

    def test_imu_gyro_mode_integrates_rates(self):
        p = EgoMotionProvider(EgoMotionConfig(priority=("imu_speed",), imu_rotation="gyro",
                                              R_base_imu=Rotation.from_euler("x", math.pi).as_matrix()))
        for t in np.arange(0, 1.0001, 0.005):
            p.add_imu(ImuSample(to_ns(t), [0, 0, -0.5], [0, 0, -9.81]))   # IMU mounted upside down
        straight(p)
        rp = p.relative_pose(to_ns(0.6), to_ns(0.4))
        np.testing.assert_allclose(Rotation.from_matrix(rp.T_base_target_source[:3, :3]).as_rotvec(),
                                   [0, 0, -0.1], atol=1e-9)

    def test_config_validation(self):
        with pytest.raises(ValueError, match="priority"):
            EgoMotionConfig(priority=("odom", "visual"))
        with pytest.raises(ValueError, match="imu_rotation"):
            EgoMotionConfig(imu_rotation="magic")
        with pytest.raises(ValueError, match="T_base_camera"):
            EgoMotionProvider(T_base_camera=np.eye(3))
        with pytest.raises(ValueError, match="unknown ego-motion source"):
            EgoMotionProvider().relative_pose(0, 1, sources=["lidar"])


class TestStatus:
    def test_not_yet_vs_never(self):
        p = EgoMotionProvider(EgoMotionConfig(priority=("odom",), buffer_s=2.5, max_gap_s=0.2))
        straight(p, t0=0.0, t1=1.0)
        assert p.relative_pose(to_ns(1.05), to_ns(0.9)).status is PoseStatus.NOT_YET   # newer than data
        straight(p, t0=1.6, t1=4.0)                                                       # 0.6 s gap
        old = p.relative_pose(to_ns(1.3), to_ns(0.9))                                 # pruned
        assert old.status is PoseStatus.NEVER and "older than buffer" in old.reason
        gap = p.relative_pose(to_ns(2.0), to_ns(1.5))
        assert gap.status is PoseStatus.NEVER and "gap" in gap.reason
        rp = p.relative_pose(to_ns(2.5), to_ns(2.4))
        assert rp.ok and p.counters["query_ok_odom"] == 1
        assert p.counters["query_never"] == 2 and p.counters["query_not_yet"] == 1

    def test_empty_provider_is_never(self):
        rp = EgoMotionProvider().relative_pose(to_ns(1.0), to_ns(0.9))
        assert rp.status is PoseStatus.NEVER and "no data" in rp.reason

    @pytest.mark.parametrize("fit", ["imu", "poly"])
    def test_gps_source_waits_for_fixes_after_the_interval(self, fit):
        d = simulate_drive(6.0, EXACT)
        p = EgoMotionProvider(EgoMotionConfig(priority=("imu_gps",), gps_fit=fit, gps_window_s=2.0,
                                              gps_imu_window_s=2.0), d.T_base_camera)
        d.feed(p, ("imu", "gps"))
        last = d.camera_stamps_ns[-1]
        assert p.relative_pose(last, last - to_ns(0.1)).status is PoseStatus.NOT_YET
        rp = p.relative_pose(last - to_ns(2.0), last - to_ns(2.1))
        assert rp.ok
        gt = np.linalg.inv(true_pose((last - to_ns(2.0)) * 1e-9)[0]) @ true_pose((last - to_ns(2.1)) * 1e-9)[0]
        assert rp.T_base_target_source[:3, 3] == pytest.approx(gt[:3, 3], abs=2e-3)


def test_imu_auto_mode_prefers_gyro_and_falls_back_to_orientation():
    p = EgoMotionProvider(EgoMotionConfig(priority=("imu_speed",), imu_rotation="auto", max_gap_s=0.1))
    for t in np.arange(0, 2.0001, 0.01):
        # Gyro: yaw rate 0.5 rad/s. Orientation: a (wrong) yaw of 0.25 t, to see which one is used.
        w = [0, 0, 0.5] if not 1.0 < t < 1.5 else [NAN_, 0, 0]   # gyro gap between 1.0 and 1.5 s
        p.add_imu(ImuSample(to_ns(t), w, [0, 0, 9.81], Rotation.from_euler("z", 0.25 * t).as_quat()))
        p.add_odometry(odom(t, x=10 * t, v=10.0))
    assert p.counters["imu_rejected_bad_gyro"] == 49
    assert p.relative_pose(to_ns(0.6), to_ns(0.4)).rotation_rad == pytest.approx(0.1, abs=1e-9)
    assert p.relative_pose(to_ns(1.4), to_ns(1.2)).rotation_rad == pytest.approx(0.05, abs=1e-9)


NAN_ = float("nan")
