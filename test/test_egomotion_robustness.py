"""Bad inputs never crash, never poison the buffers, and are counted."""
import logging

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mono_depth_ros.conventions import to_ns
from mono_depth_ros.egomotion import (EgoMotionConfig, EgoMotionProvider, GpsFix, ImuSample, OdometrySample,
                                      PoseStatus, TransformSample)
from mono_depth_ros.egomotion.simulate import NoiseModel, simulate_drive

pytestmark = [pytest.mark.faults]

NAN, INF = float("nan"), float("inf")


def odom(t, x=None, q=(0, 0, 0, 1), v=(10.0, 0, 0), w=(0, 0, 0)):
    return OdometrySample(to_ns(t), [10 * t if x is None else x, 0, 0], q, v, w, np.eye(6) * 0.01)


def clean_provider(**kw):
    p = EgoMotionProvider(EgoMotionConfig(priority=("odom",), **kw))
    for t in np.arange(0, 1.0001, 0.02):
        p.add_odometry(odom(t))
    return p


def reference_translation(p):
    rp = p.relative_pose(to_ns(0.55), to_ns(0.35))
    assert rp.ok and rp.source == "odom"
    return rp.T_base_target_source[:3, 3]


def test_out_of_order_samples_are_inserted_sorted():
    stamps = np.arange(0, 1.0001, 0.02)
    rng = np.random.default_rng(1)
    shuffled = stamps.copy()
    for k in range(0, len(shuffled) - 3, 4):      # local shuffles, as late messages do
        rng.shuffle(shuffled[k:k + 4])
    p = EgoMotionProvider(EgoMotionConfig(priority=("odom",)))
    for t in shuffled:
        p.add_odometry(odom(t))
    np.testing.assert_allclose(reference_translation(p), [-2.0, 0, 0], atol=1e-9)
    assert p.counters["odom_pose_out_of_order"] > 0
    assert p.counters.get("time_jumps", 0) == 0


def test_duplicate_stamps_are_dropped():
    p = clean_provider()
    p.add_odometry(odom(0.4, x=999.0))                 # same stamp, garbage value
    np.testing.assert_allclose(reference_translation(p), [-2.0, 0, 0], atol=1e-9)
    assert p.counters["odom_pose_duplicate"] == 1 and p.counters["odom_twist_duplicate"] == 1


def test_backwards_time_jump_resets_buffers(caplog):
    p = clean_provider(time_jump_tolerance_s=0.5)
    epoch = p.epoch
    with caplog.at_level(logging.WARNING, logger="mono_depth_ros.egomotion"):
        for t in np.arange(0, 0.5001, 0.02):           # the bag loops: time restarts at 0
            p.add_odometry(odom(t, x=100 + 10 * t))
    assert p.counters["time_jumps"] == 1 and p.counters["resets"] == 1 and p.epoch == epoch + 1
    assert any("time jumped backwards" in r.getMessage() for r in caplog.records)
    # Nothing of the first loop survives: data after 0.5 s is gone, the new loop is consistent.
    assert p.relative_pose(to_ns(0.9), to_ns(0.8)).status is PoseStatus.NOT_YET
    rp = p.relative_pose(to_ns(0.4), to_ns(0.2))
    np.testing.assert_allclose(rp.T_base_target_source[:3, 3], [-2.0, 0, 0], atol=1e-9)


def test_small_backwards_step_within_tolerance_is_not_a_jump():
    p = clean_provider(time_jump_tolerance_s=0.5)
    p.add_odometry(odom(0.71))                          # 0.29 s late: normal latency
    assert p.counters.get("time_jumps", 0) == 0 and p.counters["odom_pose_out_of_order"] == 1


@pytest.mark.parametrize("bad", [
    dict(x=NAN), dict(x=INF), dict(q=(NAN, 0, 0, 1)), dict(q=(0, 0, 0, 0)),
])
def test_bad_odometry_pose_never_enters_buffers(bad):
    p = clean_provider()
    p.add_odometry(odom(0.45, **bad))
    np.testing.assert_allclose(reference_translation(p), [-2.0, 0, 0], atol=1e-9)
    assert p.counters["odom_rejected_bad_pose"] == 1
    assert np.all(np.isfinite(p.relative_pose(to_ns(0.46), to_ns(0.44)).T_target_source))


@pytest.mark.parametrize("bad", [dict(v=(NAN, 0, 0)), dict(w=(0, 0, INF))])
def test_bad_odometry_twist_counted_and_twist_buffer_clean(bad):
    p = clean_provider()
    p.add_odometry(odom(0.45, **bad))
    assert p.counters["odom_rejected_bad_twist"] == 1
    rp = p.relative_pose(to_ns(0.55), to_ns(0.35), sources=["odom_twist"])
    np.testing.assert_allclose(rp.T_base_target_source[:3, 3], [-2.0, 0, 0], atol=1e-9)


def test_fully_bad_odometry_rejected_without_touching_time():
    p = clean_provider()
    assert not p.add_odometry(odom(-50.0, x=NAN, v=(NAN, 0, 0)))   # would also be a time jump
    assert p.counters.get("time_jumps", 0) == 0
    np.testing.assert_allclose(reference_translation(p), [-2.0, 0, 0], atol=1e-9)


@pytest.mark.parametrize("translation,rotation", [([NAN, 0, 0], [0, 0, 0, 1]), ([0, INF, 0], [0, 0, 0, 1]),
                                                  ([0, 0, 0], [0, 0, 0, 0]), ([0, 0, 0], [0, NAN, 0, 1])])
def test_bad_tf_rejected(translation, rotation):
    p = EgoMotionProvider(EgoMotionConfig(priority=("tf",)))
    for t in np.arange(0, 1.0001, 0.02):
        p.add_transform(TransformSample(to_ns(t), "odom", "base_link", [10 * t, 0, 0], [0, 0, 0, 1]))
    assert not p.add_transform(TransformSample(to_ns(0.45), "odom", "base_link", translation, rotation))
    assert p.counters["tf_rejected_bad_values"] == 1
    rp = p.relative_pose(to_ns(0.55), to_ns(0.35))
    np.testing.assert_allclose(rp.T_base_target_source[:3, 3], [-2.0, 0, 0], atol=1e-9)


def test_nearly_unit_quaternion_is_normalised_non_unit_rejected():
    """tf2's rule: |norm^2 - 1| <= 0.01 is rounding (normalised), more is a publisher bug (rejected)."""
    p = EgoMotionProvider(EgoMotionConfig(priority=("tf",)))
    q = Rotation.from_euler("z", 0.1).as_quat()
    p.add_transform(TransformSample(0, "odom", "base_link", [0, 0, 0], [0, 0, 0, 1]))
    assert p.add_transform(TransformSample(to_ns(0.1), "odom", "base_link", [1, 0, 0], q * 1.004))
    assert not p.add_transform(TransformSample(to_ns(0.2), "odom", "base_link", [2, 0, 0], q * 3.0))
    assert p.counters["tf_rejected_bad_values"] == 1
    rp = p.relative_pose(to_ns(0.1), 0)
    assert rp.rotation_rad == pytest.approx(0.1)


def test_bad_imu_rejected():
    p = EgoMotionProvider(EgoMotionConfig(priority=("imu_speed",), imu_rotation="auto"))
    for t in np.arange(0, 1.0001, 0.01):
        p.add_imu(ImuSample(to_ns(t), [0, 0, 0.1], [0, 0, 9.81]))
        p.add_odometry(odom(t))
    assert not p.add_imu(ImuSample(to_ns(0.455), [NAN, 0, 0], [0, INF, 9.81]))
    p.add_imu(ImuSample(to_ns(0.465), [0, 0, 0.1], [0, 0, 9.81], orientation=[0, 0, 0, 0]))  # zero quaternion
    c = p.counters
    assert c["imu_rejected_bad_gyro"] == 1 and c["imu_rejected_bad_accel"] == 1
    assert c["imu_rejected_bad_orientation"] == 1
    rp = p.relative_pose(to_ns(0.6), to_ns(0.4))
    assert rp.ok and rp.rotation_rad == pytest.approx(0.02, abs=1e-9)


def test_gps_without_fix_or_bad_values_ignored():
    d = simulate_drive(8.0, NoiseModel(gps_sigma_h=0.0, gps_sigma_v=0.0))
    p = EgoMotionProvider(EgoMotionConfig(priority=("imu_gps",)), d.T_base_camera)
    d.feed(p, ("imu", "gps"))
    before = p.relative_pose(d.camera_stamps_ns[30], d.camera_stamps_ns[29])
    assert before.ok
    t = d.gps[20].stamp_ns + 1000
    assert not p.add_gps(GpsFix(t, 0.0, 0.0, 0.0, status=-1))               # no fix: far away and ignored
    assert not p.add_gps(GpsFix(t + 1, NAN, 11.0, 500.0))
    assert not p.add_gps(GpsFix(t + 2, 48.0, INF, 500.0))
    assert not p.add_gps(GpsFix(t + 3, 48.0, 11.0, 500.0, position_covariance=np.eye(3) * 1e4,
                                position_covariance_type=2))
    c = p.counters
    assert c["gps_ignored_no_fix"] == 1 and c["gps_rejected_bad_values"] == 2 and c["gps_rejected_covariance"] == 1
    after = p.relative_pose(d.camera_stamps_ns[30], d.camera_stamps_ns[29])
    np.testing.assert_array_equal(before.T_target_source, after.T_target_source)


def test_too_old_samples_dropped():
    p = clean_provider(buffer_s=0.5, time_jump_tolerance_s=5.0)
    p.add_odometry(odom(0.1))
    assert p.counters["odom_pose_too_old"] == 1
