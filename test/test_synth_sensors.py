"""Odometry, IMU and GPS integrate to the GT trajectory within their configured noise."""
import numpy as np
import pymap3d
import pytest
from scipy.spatial.transform import Rotation

from mono_depth_ros.tools.synth.presets import get_preset
from mono_depth_ros.tools.synth.sensors import simulate_gps, simulate_imu, simulate_odometry
from mono_depth_ros.tools.synth.world import GRAVITY, build_world

DURATION = 60.0


@pytest.fixture(scope="module")
def world():
    return build_world(get_preset("A"), seed=5, duration_s=DURATION)


def test_trajectory_has_curves_stops_and_attitude(world):
    tr = world.trajectory
    assert (tr.v < 0.01).mean() > 0.02, "the drive should include stops"
    assert tr.v.max() > 8.0
    a = np.gradient(tr.v, tr.DT)
    assert a.min() < -1.5 and a.max() > 1.0
    assert np.ptp(np.unwrap(tr.yaw)) > 0.2, "the road should curve"
    assert np.abs(tr.pitch).max() > np.deg2rad(0.5) and np.abs(tr.roll).max() > np.deg2rad(0.2)


def test_odometry_drift_matches_configured_rate(world):
    noise = get_preset("A").noise
    tr = world.trajectory
    od = simulate_odometry(tr, noise, np.random.default_rng(0), DURATION)
    # Distance: the scale error is the configured fraction.
    d_true = np.sum(np.linalg.norm(np.diff(tr.pos[:, :2], axis=0), axis=1)[: int(DURATION / tr.DT)])
    d_odom = np.sum(np.hypot(np.diff(od.x), np.diff(od.y)))
    assert d_odom / d_true - 1 == pytest.approx(noise.odom_scale_error, abs=0.002)
    # Heading: bias * t, plus a random walk of the white yaw-rate noise.
    yaw_true = np.unwrap(tr.yaw)[int(round(DURATION / tr.DT))] - tr.yaw[0]
    err = od.yaw[-1] - yaw_true
    rw = noise.odom_yaw_rate_noise * np.sqrt(DURATION / noise.odom_rate_hz)
    assert err == pytest.approx(noise.odom_yaw_rate_bias * DURATION, abs=4 * rw + 0.005)
    # Position drift stays within what scale error and heading drift explain.
    T_odom_base = od.T_odom_base()[-1]
    est = od.T_map_odom @ T_odom_base
    true = tr.T_map_base(DURATION)
    drift = np.linalg.norm(est[:2, 3] - true[:2, 3])
    bound = noise.odom_scale_error * d_true + 0.5 * abs(err) * d_true + 1.0
    assert drift < bound
    assert drift > 0.2 * noise.odom_scale_error * d_true


def test_imu_gyro_integrates_to_gt_rotation(world):
    noise = get_preset("A").noise
    tr = world.trajectory
    imu = simulate_imu(tr, noise, np.random.default_rng(1), DURATION)
    dt = 1.0 / noise.imu_rate_hz
    T = 20.0
    n = int(T * noise.imu_rate_hz)

    def integrate(gyro):
        R = Rotation.identity()
        for k in range(n):                            # midpoint rule
            R = R * Rotation.from_rotvec(0.5 * (gyro[k] + gyro[k + 1]) * dt)
        return R

    R_gt = Rotation.from_matrix(tr.T_map_base(0.0)[:3, :3]).inv() * Rotation.from_matrix(tr.T_map_base(T)[:3, :3])
    err_raw = (integrate(imu.gyro).inv() * R_gt).magnitude()
    err_unbiased = (integrate(imu.gyro - imu.gyro_bias).inv() * R_gt).magnitude()
    noise_bound = 4 * noise.gyro_noise * dt * np.sqrt(n) + 1e-3
    assert err_unbiased < noise_bound
    assert err_raw < np.linalg.norm(imu.gyro_bias) * T + noise_bound


def test_imu_accelerometer_reads_specific_force(world):
    noise = get_preset("A").noise
    tr = world.trajectory
    imu = simulate_imu(tr, noise, np.random.default_rng(2), DURATION)
    still = tr.sample(imu.t, tr.v) < 0.01
    assert still.sum() > 50
    mean = imu.accel[still].mean(0) - imu.accel_bias
    # At rest the accelerometer reads +g along the (slightly tilted) body z.
    assert np.linalg.norm(mean) == pytest.approx(GRAVITY, abs=0.05)
    resid = imu.accel - tr.sample(imu.t, tr.specific_force_body) - imu.accel_bias
    assert resid.std() == pytest.approx(noise.accel_noise, rel=0.1)


def test_gps_error_matches_sigma(world):
    noise = get_preset("A").noise
    tr = world.trajectory
    gps = simulate_gps(tr, noise, np.random.default_rng(3), DURATION)
    assert 1.0 <= noise.gps_rate_hz <= 10.0
    e, n, u = pymap3d.geodetic2enu(gps.lat, gps.lon, gps.alt, *gps.origin)
    err = np.column_stack([e, n, u]) - gps.enu_true
    assert err[:, :2].std() == pytest.approx(noise.gps_sigma_horizontal, rel=0.2)
    assert err[:, 2].std() == pytest.approx(noise.gps_sigma_vertical, rel=0.2)
    assert np.abs(err[:, :2].mean(0)).max() < 0.5
