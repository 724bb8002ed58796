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
#: Standard gravity, m/s^2.
GRAVITY = 9.80665


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


class TransformSource:
    """Relative base motion from a transform lookup: base(t_target) <- base(t_source) through ``odom_frame``.

    Asks :meth:`~mono_depth_ros.tf_buffer.TransformLookup.lookup_full`, so any chain of links between
    the odometry frame and the base works (odom -> base_footprint -> base_link, ...), from the package's
    own buffer or from tf2_ros. Data newer than the lookup's is NOT_YET (it may still come); older, or
    frames that are not (yet) connected, NEVER.

    Attributes:
        newest_ns: newest stamp of the chain as reported by the last extrapolation error (0: unknown);
            the provider's stale check reads it when the lookup is fed elsewhere.
    """

    def __init__(self, transforms, odom_frame: str, base_frame: str):
        self.transforms = transforms
        self.odom_frame = odom_frame
        self.base_frame = base_frame
        self.newest_ns = 0

    def query(self, t_target: int, t_source: int):
        from ..tf_buffer import ExtrapolationError, TfError
        b = self.base_frame
        try:
            return OK_COVERAGE, self.transforms.lookup_full(b, t_target, b, t_source, self.odom_frame)
        except ExtrapolationError as exc:
            self.newest_ns = exc.latest_ns or self.newest_ns
            if exc.future:
                return Coverage(PoseStatus.NOT_YET, "newer than data"), _NO
            return Coverage(PoseStatus.NEVER, f"older than buffer ({exc})"), _NO
        except TfError as exc:
            return Coverage(PoseStatus.NEVER, f"no data ({exc})"), _NO


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
        dt = np.diff(grid).astype(np.float64) * 1e-9
        if not (np.all(np.isfinite(tw)) and np.all(np.isfinite(tw[1:, 3:] * dt[:, None]))):
            # Absurd but finite rates (e.g. 1e308 rad/s) overflow the integration (fuzzing found it).
            return Coverage(PoseStatus.NEVER, "twist too large to integrate"), _NO
        rots = gyro_rotations(grid, tw[:, 3:])
        pos = integrate_translation(grid, rots, tw[:, :3])
        T = make_T(rots[-1], pos[-1])
        if not np.all(np.isfinite(T)):
            return Coverage(PoseStatus.NEVER, "twist too large to integrate"), _NO
        return OK_COVERAGE, _from_forward(T, flipped)


class ImuRotation:
    """Relative base rotation from the IMU.

    ``gyro``: (D=3) angular velocity already rotated into the base frame.
    ``orientation``: (D=4) quaternion xyzw of R_world_base, when the IMU gives one.
    ``mode``: ``"gyro"`` integrates rates, ``"orientation"`` slerps the IMU's
    own orientation, ``"auto"`` integrates the gyro and uses the orientation
    only where the gyro cannot answer (e.g. a gap in rates). Gyro integration
    is preferred: over 0.1 s its error is ~0.01 deg, while a filter's
    orientation output typically carries per-sample noise of 0.1-0.3 deg that
    does not cancel in a relative rotation.
    """

    def __init__(self, gyro: TimeSeries, orientation: TimeSeries, max_gap_ns: int, mode: str = "auto"):
        if mode not in ("gyro", "orientation", "auto"):
            raise ValueError(f"imu rotation mode must be gyro|orientation|auto, got {mode!r}")
        self.gyro, self.orientation, self.max_gap_ns, self.mode = gyro, orientation, max_gap_ns, mode

    def coverage(self, a: int, b: int) -> tuple[Coverage, str]:
        """(coverage, "orientation" | "gyro"): which buffer answers [a, b]."""
        if self.mode == "orientation":
            return self.orientation.coverage(a, b, self.max_gap_ns), "orientation"
        cov = self.gyro.coverage(a, b, self.max_gap_ns)
        if self.mode == "auto" and cov.status is not PoseStatus.OK and len(self.orientation):
            cov_o = self.orientation.coverage(a, b, self.max_gap_ns)
            if cov_o.status is PoseStatus.OK:
                return cov_o, "orientation"
        return cov, "gyro"

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
    """GPS fixes as local ENU positions, smoothed over a window of fixes.

    Why smoothing: metre-level GPS noise is as large as the 1 m a car moves
    in 0.1 s, so differencing two fixes is useless. The displacement over a
    short interval [a, b] comes from a model fitted by linear least squares to
    every fix in a window centred on the interval (horizontal E/N only; the
    vertical GPS channel is 2x noisier and barely moves for a car):

    * ``"imu"`` (default when IMU data covers the window): IMU-aided path
      model. Heading change psi(t) is the integrated gyro yaw rate and the
      speed change A(t) the integrated forward specific force (accelerometer),
      both relative to the window centre m. In complex notation (E + iN)::

          p(t) = p0 + e^{i psi0} (v0 C1(t) + beta C2(t) + C3(t))
          C1 = int e^{i psi},  C2 = int (s - m) e^{i psi},  C3 = int A e^{i psi}

      with p0 (position), psi0 (heading at m, from a first free fit), v0
      (speed at m) and beta (slow speed drift: accelerometer bias, gravity
      leak from pitch). Because speed and heading changes inside the window
      are measured, the window can be long (10 s) without bias at turns,
      braking and stops, which averages GPS noise down: speed error ~
      ``sigma / sqrt(N W^2 / 12)`` (0.07 m/s for sigma 1.5 m, 5 Hz, 10 s).
    * ``"poly"``: quadratic polynomial in time per axis (no IMU needed);
      biased where speed or heading change quickly, so its window is shorter.

    The price is latency: a query waits (NOT_YET) until fixes up to half a
    window after the interval have arrived.

    ENU: ``pymap3d.geodetic2enu`` relative to ``origin`` (lat deg, lon deg,
    alt m) or, when None, the first accepted fix.
    """

    def __init__(self, window_ns: int, min_fixes: int, origin: tuple[float, float, float] | None = None,
                 imu_window_ns: int | None = None):
        self.series = TimeSeries(3)
        self.window_ns = int(window_ns)
        self.imu_window_ns = int(imu_window_ns if imu_window_ns is not None else 2 * window_ns)
        self.min_fixes = int(min_fixes)
        self.origin = origin

    def add_fix(self, stamp_ns: int, lat: float, lon: float, alt: float) -> str:
        if self.origin is None:
            self.origin = (lat, lon, alt)
        e, n, u = pymap3d.geodetic2enu(lat, lon, alt, *self.origin)
        return self.series.insert(stamp_ns, [float(e), float(n), float(u)])

    def _fixes(self, a: int, b: int, window_ns: int):
        """Fixes of the window around [a, b]: (coverage, mid, stamps, (N,3) enu)."""
        mid = (a + b) // 2
        lo, hi = mid - window_ns // 2, mid + window_ns // 2
        if self.series.newest < hi:
            return Coverage(PoseStatus.NOT_YET, "waiting for gps fixes after the interval"), mid, None, None
        st, pos = self.series.range(lo, hi)
        if len(st) < self.min_fixes or st[0] > a or st[-1] < b:
            return Coverage(PoseStatus.NEVER, f"only {len(st)} gps fixes around the interval"), mid, None, None
        if st[0] > mid - window_ns // 4:
            # One-sided windows (start of the track, after a GPS outage) extrapolate
            # the fit to its edge and are several times noisier: refuse them.
            return Coverage(PoseStatus.NEVER, "gps track starts too close to the interval"), mid, None, None
        return OK_COVERAGE, mid, st, pos

    def displacement(self, a: int, b: int, gyro: TimeSeries | None = None, accel: TimeSeries | None = None,
                     max_gap_ns: int | None = None) -> tuple[Coverage, np.ndarray | None]:
        """(coverage, (2,) horizontal ENU displacement p(b) - p(a) in m).

        Uses the IMU-aided model when ``gyro`` and ``accel`` cover its window,
        else the polynomial fit.
        """
        if not len(self.series):
            return Coverage(PoseStatus.NEVER, "no gps fixes"), None
        if gyro is not None and accel is not None:
            cov, mid, st, pos = self._fixes(a, b, self.imu_window_ns)
            if cov.status is not PoseStatus.OK:
                return cov, None
            lo, hi = int(min(st[0], a)), int(max(st[-1], b))
            if gyro.coverage(lo, hi, max_gap_ns).status is PoseStatus.OK and \
                    accel.coverage(lo, hi, max_gap_ns).status is PoseStatus.OK:
                return OK_COVERAGE, self._imu_aided(a, b, mid, st, pos, gyro, accel)
            # No IMU over the window: fall back to the polynomial fit.
        cov, mid, st, pos = self._fixes(a, b, self.window_ns)
        if cov.status is not PoseStatus.OK:
            return cov, None
        x = (st - mid).astype(np.float64) * 1e-9
        deg = 2 if len(st) >= 5 else 1
        coef = np.polynomial.polynomial.polyfit(x, pos[:, :2], deg)  # (deg+1, 2)
        ta, tb = (a - mid) * 1e-9, (b - mid) * 1e-9
        return OK_COVERAGE, (np.polynomial.polynomial.polyval(tb, coef)
                             - np.polynomial.polynomial.polyval(ta, coef))

    @staticmethod
    def _imu_aided(a, b, mid, st, pos, gyro: TimeSeries, accel: TimeSeries) -> np.ndarray:
        """IMU-aided path fit (see the class docstring) -> (2,) E/N displacement over [a, b]."""
        lo, hi = int(min(st[0], a)), int(max(st[-1], b))
        grid = integration_grid(gyro, lo, hi)
        tau = (grid - mid).astype(np.float64) * 1e-9                   # (K,) s from the window centre

        def cumtrapz(y):                                               # (K,) -> (K,) complex, 0 at the centre
            c = np.concatenate([[0.0], np.cumsum(0.5 * (y[1:] + y[:-1]) * np.diff(tau))]).astype(complex)
            return c - at(c, 0.0)

        def at(c, t):                                                  # complex linear interpolation
            return np.interp(t, tau, c.real) + 1j * np.interp(t, tau, c.imag)

        rates = gyro.interp_linear(grid)                               # (K,3) rad/s, base frame
        # Heading change: integrated yaw rate (pitch/roll coupling is second order for a car).
        h = np.exp(1j * cumtrapz(rates[:, 2]).real)
        # Forward specific force f_x = a_x - g sin(pitch). The pitch change about the
        # window centre is the integrated pitch rate: adding g * dpitch removes the
        # gravity leak of braking dive and road waves; the constant pitch at the
        # centre acts like an accelerometer bias and is absorbed by beta.
        f_x = accel.interp_linear(grid)[:, 0] + GRAVITY * cumtrapz(rates[:, 1]).real
        A = cumtrapz(f_x).real                                         # speed change from the accelerometer
        C1, C2, C3 = cumtrapz(h), cumtrapz(tau * h), cumtrapz(A * h)
        t_fix = (st - mid).astype(np.float64) * 1e-9
        G = np.column_stack([np.ones(len(st), dtype=complex), at(C1, t_fix), at(C2, t_fix), at(C3, t_fix)])
        y = pos[:, 0] + 1j * pos[:, 1]
        # Stage 1, heading only: free complex fit; psi0 = arg(a).
        coef, *_ = np.linalg.lstsq(G, y, rcond=None)
        u = np.exp(1j * np.angle(coef[1]))
        # Stage 2: with psi0 fixed and the accelerometer trusted (gain 1; freeing it
        # doubled the p95 error on the synthetic drives), the model is linear in 4
        # real unknowns: p0 (E, N), v0, beta.
        y2 = y - u * G[:, 3]
        n = len(st)
        cols = [u * G[:, 1], u * G[:, 2]]
        Gr = np.block([[np.ones((n, 1)), np.zeros((n, 1))] + [c.real[:, None] for c in cols],
                       [np.zeros((n, 1)), np.ones((n, 1))] + [c.imag[:, None] for c in cols]])
        (_, _, v0, beta), *_ = np.linalg.lstsq(Gr, np.concatenate([y2.real, y2.imag]), rcond=None)
        ta, tb = (a - mid) * 1e-9, (b - mid) * 1e-9
        d = u * (v0 * (at(C1, tb) - at(C1, ta)) + beta * (at(C2, tb) - at(C2, ta)) + (at(C3, tb) - at(C3, ta)))
        return np.array([d.real, d.imag])


class ImuGpsSource:
    """IMU rotation + GPS distance.

    The GPS gives no heading, so its displacement cannot be rotated into the
    base frame directly. Assuming non-holonomic motion (the base moves along
    its own x axis, true for cars without slip), the IMU rotation gives the
    *shape* of the path (integrate a unit forward speed along the rotation)
    and the smoothed GPS track (:class:`GpsTrack`) gives its *length*
    (horizontal chord |p(b) - p(a)|; slopes shorten it by cos(grade)).
    Reversing is not detected (forward motion assumed).
    """

    def __init__(self, imu: ImuRotation, gps: GpsTrack, accel: TimeSeries | None = None, fit: str = "imu"):
        if fit not in ("imu", "poly"):
            raise ValueError(f"gps fit must be imu|poly, got {fit!r}")
        self.imu, self.gps, self.accel, self.fit = imu, gps, accel, fit

    def query(self, t_target: int, t_source: int):
        a, b, flipped = _ordered(t_target, t_source)
        if self.fit == "imu" and self.accel is not None:
            cov, disp = self.gps.displacement(a, b, self.imu.gyro, self.accel, self.imu.max_gap_ns)
        else:
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
