"""Simulated vehicle sensors from the dense ground-truth trajectory.

All functions are pure: (trajectory, noise parameters, generator) -> arrays.

* Wheel odometry (``odom`` -> ``base_link``): planar dead reckoning of measured
  speed ``v (1 + scale_error) + n_v`` and yaw rate ``w_z + bias + n_w``; the
  odom frame coincides with the true start pose. Drift therefore grows as
  ``scale_error * distance`` along track and ``bias * t`` in heading.
* IMU (``base_link``): gyro ``w_body + b_g + n_g`` and accelerometer
  ``f_body + b_a + n_a`` (specific force: at rest it reads +g on z); biases
  are constant per drive. Optional orientation = true attitude with noise.
* GPS: base_link origin converted to WGS84 from ENU about a fixed geodetic
  origin (``map`` is that ENU frame), plus white ENU noise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

from mono_depth_ros.tools.synth.presets import SensorNoise
from mono_depth_ros.tools.synth.world import Trajectory

__all__ = ["GEODETIC_ORIGIN", "STANDSTILL_SPEED", "OdometryData", "ImuData", "GpsData",
           "simulate_odometry", "simulate_imu", "simulate_gps", "sample_times"]

#: Below this true speed (m/s) the vehicle counts as standing still.
STANDSTILL_SPEED = 0.01

#: (lat deg, lon deg, ellipsoid height m) of the ``map`` origin (ENU).
GEODETIC_ORIGIN = (48.13743, 11.57549, 520.0)


def sample_times(duration_s: float, rate_hz: float) -> np.ndarray:
    """(M,) sample times in seconds from 0 to ``duration_s`` inclusive at ``rate_hz``."""
    n = int(np.floor(duration_s * rate_hz + 1e-9)) + 1
    return np.round(np.arange(n) / rate_hz * 1e9) / 1e9


@dataclass
class OdometryData:
    """Odometry estimate at times ``t`` (M,): pose (x, y, yaw) in ``odom``, twist in base_link."""

    t: np.ndarray
    x: np.ndarray
    y: np.ndarray
    yaw: np.ndarray
    v: np.ndarray          # measured forward speed, m/s
    yaw_rate: np.ndarray   # measured yaw rate, rad/s
    T_map_odom: np.ndarray  # (4,4) true pose of the odom frame in map

    def T_odom_base(self) -> np.ndarray:
        """(M,4,4) estimated base_link poses in odom."""
        T = np.tile(np.eye(4), (len(self.t), 1, 1))
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        T[:, 0, 0], T[:, 0, 1], T[:, 1, 0], T[:, 1, 1] = c, -s, s, c
        T[:, 0, 3], T[:, 1, 3] = self.x, self.y
        return T


def simulate_odometry(traj: Trajectory, noise: SensorNoise, rng: np.random.Generator,
                      duration_s: float) -> OdometryData:
    """Dead-reckoned wheel odometry at ``noise.odom_rate_hz``."""
    t = sample_times(duration_s, noise.odom_rate_hz)
    v_true = traj.sample(t, traj.vel_body[:, 0])
    w_true = traj.sample(t, _yaw_rate_world(traj))
    m = len(t)
    v_meas = v_true * (1 + noise.odom_scale_error) + rng.normal(0, noise.odom_speed_noise, m)
    v_meas = np.where(v_true < STANDSTILL_SPEED, 0.0, v_meas)   # wheels do not tick at standstill
    w_meas = w_true + noise.odom_yaw_rate_bias + rng.normal(0, noise.odom_yaw_rate_noise, m)
    dt = np.diff(t, prepend=t[0])
    # Midpoint integration of the measured increments.
    yaw = np.cumsum(0.5 * (w_meas + np.concatenate([w_meas[:1], w_meas[:-1]])) * dt)
    yaw_mid = yaw - 0.5 * w_meas * dt
    v_mid = 0.5 * (v_meas + np.concatenate([v_meas[:1], v_meas[:-1]]))
    x = np.cumsum(v_mid * np.cos(yaw_mid) * dt)
    y = np.cumsum(v_mid * np.sin(yaw_mid) * dt)
    T0 = traj.T_map_base(0.0)
    # odom frame: the start pose, levelled (odometry is planar).
    T_map_odom = np.eye(4)
    T_map_odom[:3, :3] = Rotation.from_euler("z", traj.yaw[0]).as_matrix()
    T_map_odom[:2, 3] = T0[:2, 3]
    return OdometryData(t, x, y, yaw, v_meas, w_meas, T_map_odom)


def _yaw_rate_world(traj: Trajectory) -> np.ndarray:
    """(N,) rate of the heading angle (what a wheel-odometry yaw-rate sensor measures)."""
    return np.gradient(np.unwrap(traj.yaw), traj.DT)


@dataclass
class ImuData:
    """IMU samples at ``t`` (M,): gyro (M,3) rad/s, accel (M,3) m/s^2, orientation (M,4) xyzw or None."""

    t: np.ndarray
    gyro: np.ndarray
    accel: np.ndarray
    orientation: np.ndarray | None
    gyro_bias: np.ndarray
    accel_bias: np.ndarray


def simulate_imu(traj: Trajectory, noise: SensorNoise, rng: np.random.Generator,
                 duration_s: float) -> ImuData:
    """IMU in base_link at ``noise.imu_rate_hz`` with per-drive constant biases."""
    t = sample_times(duration_s, noise.imu_rate_hz)
    m = len(t)
    gyro_bias = rng.normal(0, noise.gyro_bias_sigma, 3)
    accel_bias = rng.normal(0, noise.accel_bias_sigma, 3)
    gyro = traj.sample(t, traj.omega_body) + gyro_bias + rng.normal(0, noise.gyro_noise, (m, 3))
    accel = traj.sample(t, traj.specific_force_body) + accel_bias + rng.normal(0, noise.accel_noise, (m, 3))
    orient = None
    if noise.imu_orientation:
        q = Rotation.from_matrix(traj.T_map_base(t)[:, :3, :3])
        orient = (q * Rotation.from_rotvec(rng.normal(0, 0.005, (m, 3)))).as_quat()
    return ImuData(t, gyro, accel, orient, gyro_bias, accel_bias)


@dataclass
class GpsData:
    """GPS fixes at ``t`` (M,): lat/lon (deg), alt (m), and the noisy ENU used to make them."""

    t: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray
    enu: np.ndarray          # (M,3) noisy ENU
    enu_true: np.ndarray     # (M,3) true antenna ENU
    origin: tuple[float, float, float]


def simulate_gps(traj: Trajectory, noise: SensorNoise, rng: np.random.Generator,
                 duration_s: float, origin=GEODETIC_ORIGIN) -> GpsData:
    """GPS fixes at ``noise.gps_rate_hz`` (antenna at the base_link origin)."""
    import pymap3d

    t = sample_times(duration_s, noise.gps_rate_hz)
    enu_true = traj.sample(t, traj.pos)
    sig = np.array([noise.gps_sigma_horizontal, noise.gps_sigma_horizontal, noise.gps_sigma_vertical])
    enu = enu_true + rng.normal(0, 1, (len(t), 3)) * sig
    lat, lon, alt = pymap3d.enu2geodetic(enu[:, 0], enu[:, 1], enu[:, 2], *origin)
    return GpsData(t, np.asarray(lat), np.asarray(lon), np.asarray(alt), enu, enu_true, tuple(origin))
