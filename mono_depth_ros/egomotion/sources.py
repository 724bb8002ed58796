"""Ego-motion sources: each answers T_base(target)_base(source) for two stamps.

Every source has ``query(t_target_ns, t_source_ns) -> (Coverage, T | None)``
where ``T`` is the (4,4) rigid transform ``T_bt_bs`` that maps points in the
base frame at ``t_source`` into the base frame at ``t_target`` (REP 105
base_link, metres). The provider turns it into the camera optical frame.

Sources (names used in ``EgoMotionConfig.priority``):

* ``odom``: ``nav_msgs/Odometry`` pose, interpolated (slerp + linear); when the
  pose is unusable (NaN, huge covariance) over the interval, the odometry
  twist is integrated instead and the result is reported as ``odom_twist``.
* ``odom_twist``: odometry twist integration only.
* ``tf``: T_odom_base from TF samples, interpolated like ``odom``.
* ``imu_speed``: IMU rotation + wheel speed (odometry twist linear velocity).
* ``imu_gps``: IMU rotation + GPS-derived distance (see :class:`GpsTrack`).
"""
from __future__ import annotations

import numpy as np
import pymap3d
from scipy.spatial.transform import Rotation

from .timeseries import (OK_COVERAGE, Coverage, PoseStatus, TimeSeries, gyro_rotations,
                         integrate_translation, integration_grid, invert_T, make_T)

__all__ = ["PoseSource", "TwistSource", "ImuRotation", "GpsTrack", "ImuSpeedSource", "ImuGpsSource",
           "OdomSource"]

_NO = None


def _ordered(t_target: int, t_source: int) -> tuple[int, int, bool]:
    """(a, b, flipped) with a <= b; flipped when the target is the later stamp."""
    return (t_source, t_target, True) if t_source <= t_target else (t_target, t_source, False)


def _from_forward(T_a_b: np.ndarray, flipped: bool) -> np.ndarray:
    """T_bt_bs from T_a_b where (a, b) = ordered(target, source)."""
    # not flipped: a = target, b = source -> T_bt_bs = T_a_b.
    # flipped: a = source, b = target -> T_bt_bs = inv(T_a_b).
    return invert_T(T_a_b) if flipped else T_a_b


class PoseSource:
    """Interpolated absolute poses T_odom_base (from Odometry pose or TF).

    ``series`` has D=7 values: translation (3) m, quaternion xyzw (4).
    """

    def __init__(self, series: TimeSeries, max_gap_ns: int):
        self.series = series
        self.max_gap_ns = max_gap_ns

    def query(self, t_target: int, t_source: int):
        a, b, _ = _ordered(t_target, t_source)
        cov = self.series.coverage(a, b, self.max_gap_ns)
        if cov.status is not PoseStatus.OK:
            return cov, _NO
        # T_bt_bs = inv(T_odom_bt) @ T_odom_bs
        return OK_COVERAGE, invert_T(self.series.interp_pose(t_target)) @ self.series.interp_pose(t_source)


class TwistSource:
    """Dead reckoning from body-frame twist samples (D=6: v (3) m/s, w (3) rad/s).

    Integrated lazily between the two query stamps only, so out-of-order
    samples and old drift never matter.
    """

    def __init__(self, series: TimeSeries, max_gap_ns: int):
        self.series = series
        self.max_gap_ns = max_gap_ns

    def query(self, t_target: int, t_source: int):
        a, b, flipped = _ordered(t_target, t_source)
        cov = self.series.coverage(a, b, self.max_gap_ns)
        if cov.status is not PoseStatus.OK:
            return cov, _NO
        if a == b:
            return OK_COVERAGE, np.eye(4)
        grid = integration_grid(self.series, a, b)
        tw = self.series.interp_linear(grid)
        rots = gyro_rotations(grid, tw[:, 3:])
        pos = integrate_translation(grid, rots, tw[:, :3])
        return OK_COVERAGE, _from_forward(make_T(rots[-1], pos[-1]), flipped)


class ImuRotation:
    """Relative base rotation from the IMU.

    ``gyro``: (D=3) angular velocity already rotated into the base frame.
    ``orientation``: (D=4) quaternion xyzw of R_world_base, when the IMU gives one.
    ``mode``: ``"gyro"`` integrates rates, ``"orientation"`` slerps the IMU's
    own orientation, ``"auto"`` uses the orientation once the IMU has provided one.
    """

    def __init__(self, gyro: TimeSeries, orientation: TimeSeries, max_gap_ns: int, mode: str = "auto"):
        if mode not in ("gyro", "orientation", "auto"):
            raise ValueError(f"imu rotation mode must be gyro|orientation|auto, got {mode!r}")
        self.gyro, self.orientation, self.max_gap_ns, self.mode = gyro, orientation, max_gap_ns, mode

    def coverage(self, a: int, b: int) -> tuple[Coverage, str]:
        """(coverage, "orientation" | "gyro"): which buffer answers [a, b]."""
        use_orientation = self.mode == "orientation" or (self.mode == "auto" and len(self.orientation) > 0)
        if use_orientation:
            return self.orientation.coverage(a, b, self.max_gap_ns), "orientation"
        return self.gyro.coverage(a, b, self.max_gap_ns), "gyro"

    def rotations(self, a: int, b: int) -> tuple[Coverage, np.ndarray | None, Rotation | None]:
        """(coverage, grid (N,) ns, R_a_k rotations of the base at grid[k] in base at a)."""
        cov, kind = self.coverage(a, b)
        if cov.status is not PoseStatus.OK:
            return cov, None, None
        if kind == "orientation":
            grid = integration_grid(self.orientation, a, b)
            R_w = self.orientation.interp_rotation(grid)
            return cov, grid, R_w[0].inv() * R_w
        grid = integration_grid(self.gyro, a, b)
        return cov, grid, gyro_rotations(grid, self.gyro.interp_linear(grid))


class ImuSpeedSource:
    """IMU rotation + wheel speed: integrates the odometry twist's linear
    velocity (base frame, m/s) along the IMU's rotation."""

    def __init__(self, imu: ImuRotation, twist: TimeSeries, max_gap_ns: int):
        self.imu, self.twist, self.max_gap_ns = imu, twist, max_gap_ns

    def query(self, t_target: int, t_source: int):
        a, b, flipped = _ordered(t_target, t_source)
        cov = self.twist.coverage(a, b, self.max_gap_ns)
        if cov.status is not PoseStatus.OK:
            return Coverage(cov.status, "speed: " + cov.reason), _NO
        cov, grid, rots = self.imu.rotations(a, b)
        if cov.status is not PoseStatus.OK:
            return Coverage(cov.status, "imu: " + cov.reason), _NO
        if a == b:
            return OK_COVERAGE, np.eye(4)
        vel = self.twist.interp_linear(grid)[:, :3]
        pos = integrate_translation(grid, rots, vel)
        return OK_COVERAGE, _from_forward(make_T(rots[-1], pos[-1]), flipped)


class GpsTrack:
    """GPS fixes as local ENU positions, smoothed by a local polynomial fit.

    Approach (why not raw fixes): metre-level GPS noise is as large as the
    1 m a car moves in 0.1 s, so differencing two fixes is useless. Instead
    every coordinate of the ENU track is fitted with a quadratic in time by
    least squares (``numpy.polynomial.polynomial.polyfit``) over a window of
    ``window_ns`` centred on the middle of the queried interval; the
    displacement over [a, b] comes from the fitted curve. With N fixes of
    noise sigma spread over a window W the slope error is about
    ``sigma / sqrt(N * W^2 / 12)`` (0.19 m/s for 1 m, 20 fixes, 4 s), i.e. a
    few % of a car's speed; the quadratic term absorbs constant acceleration.
    The price is latency: a query waits (NOT_YET) until fixes up to half a
    window after the interval have arrived.

    ENU: ``pymap3d.geodetic2enu`` relative to ``origin`` (lat deg, lon deg,
    alt m) or, when None, the first accepted fix.
    """

    def __init__(self, window_ns: int, min_fixes: int, origin: tuple[float, float, float] | None = None):
        self.series = TimeSeries(3)
        self.window_ns = int(window_ns)
        self.min_fixes = int(min_fixes)
        self.origin = origin

    def add_fix(self, stamp_ns: int, lat: float, lon: float, alt: float) -> str:
        if self.origin is None:
            self.origin = (lat, lon, alt)
        e, n, u = pymap3d.geodetic2enu(lat, lon, alt, *self.origin)
        return self.series.insert(stamp_ns, [float(e), float(n), float(u)])

    def displacement(self, a: int, b: int) -> tuple[Coverage, np.ndarray | None]:
        """(coverage, (3,) ENU displacement p(b) - p(a) in m from the fitted track)."""
        if not len(self.series):
            return Coverage(PoseStatus.NEVER, "no gps fixes"), None
        mid = (a + b) // 2
        lo, hi = mid - self.window_ns // 2, mid + self.window_ns // 2
        if self.series.newest < hi:
            return Coverage(PoseStatus.NOT_YET, "waiting for gps fixes after the interval"), None
        st, pos = self.series.range(lo, hi)
        if len(st) < self.min_fixes or st[0] > a or st[-1] < b:
            return Coverage(PoseStatus.NEVER, f"only {len(st)} gps fixes around the interval"), None
        x = (st - mid).astype(np.float64) * 1e-9
        deg = 2 if len(st) >= 5 else 1
        coef = np.polynomial.polynomial.polyfit(x, pos, deg)  # (deg+1, 3)
        ta, tb = (a - mid) * 1e-9, (b - mid) * 1e-9
        pa = np.polynomial.polynomial.polyval(ta, coef)
        pb = np.polynomial.polynomial.polyval(tb, coef)
        return OK_COVERAGE, pb - pa


class ImuGpsSource:
    """IMU rotation + GPS distance.

    The GPS gives no heading, so its displacement cannot be rotated into the
    base frame directly. Assuming non-holonomic motion (the base moves along
    its own x axis, true for cars without slip), the IMU rotation gives the
    *shape* of the path (integrate a unit forward speed along the rotation)
    and the smoothed GPS track gives its *length* (chord |p(b) - p(a)|).
    Reversing is not detected (forward motion assumed).
    """

    def __init__(self, imu: ImuRotation, gps: GpsTrack):
        self.imu, self.gps = imu, gps

    def query(self, t_target: int, t_source: int):
        a, b, flipped = _ordered(t_target, t_source)
        cov, disp = self.gps.displacement(a, b)
        if cov.status is not PoseStatus.OK:
            return Coverage(cov.status, "gps: " + cov.reason), _NO
        cov, grid, rots = self.imu.rotations(a, b)
        if cov.status is not PoseStatus.OK:
            return Coverage(cov.status, "imu: " + cov.reason), _NO
        if a == b:
            return OK_COVERAGE, np.eye(4)
        unit = np.zeros((len(grid), 3))
        unit[:, 0] = 1.0
        shape = integrate_translation(grid, rots, unit)[-1]
        p = shape * (np.linalg.norm(disp) / max(np.linalg.norm(shape), 1e-12))
        return OK_COVERAGE, _from_forward(make_T(rots[-1], p), flipped)


class OdomSource:
    """Odometry pose where usable, else its twist integrated (reported ``odom_twist``)."""

    def __init__(self, pose: PoseSource, twist: TwistSource):
        self.pose, self.twist = pose, twist

    def query(self, t_target: int, t_source: int):
        cov, T = self.pose.query(t_target, t_source)
        if cov.status is PoseStatus.OK:
            return cov, T, "odom"
        if cov.status is PoseStatus.NOT_YET and len(self.pose.series) and \
                self.pose.series.newest >= (self.twist.series.newest or 0):
            return cov, None, "odom"
        cov2, T2 = self.twist.query(t_target, t_source)
        if cov2.status is PoseStatus.OK:
            return cov2, T2, "odom_twist"
        return (cov if cov.status is PoseStatus.NOT_YET else cov2), None, "odom"
