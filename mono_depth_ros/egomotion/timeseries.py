"""Time-bounded sorted sample buffers, interpolation and motion integration.

Stamps are int ns; values are float64 vectors of a fixed length per buffer.
Rotations interpolate with scipy ``Slerp``; translations and rates linearly.
"""
from __future__ import annotations

import bisect
import enum

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

__all__ = ["PoseStatus", "Coverage", "TimeSeries", "integrate_translation", "make_T", "invert_T",
           "gyro_rotations"]


class PoseStatus(str, enum.Enum):
    """Outcome of a motion query.

    * ``OK``: answered.
    * ``NOT_YET``: the stamp is newer than the data received so far; ask again
      later (late odometry is normal, training waits).
    * ``NEVER``: cannot be answered now or later (older than the buffer, a
      gap larger than allowed, a stale or absent source, gating failed).
    """

    OK = "ok"
    NOT_YET = "not_yet"
    NEVER = "never"


class Coverage(tuple):
    """(status, reason) of a buffer for a time interval."""

    __slots__ = ()

    def __new__(cls, status: PoseStatus, reason: str = ""):
        return super().__new__(cls, (status, reason))

    @property
    def status(self) -> PoseStatus:
        return self[0]

    @property
    def reason(self) -> str:
        return self[1]


OK_COVERAGE = Coverage(PoseStatus.OK)


def make_T(R, p) -> np.ndarray:
    """Rotation (scipy Rotation or (3,3)) and (3,) translation -> (4,4) T."""
    T = np.eye(4)
    T[:3, :3] = R.as_matrix() if isinstance(R, Rotation) else np.asarray(R)
    T[:3, 3] = p
    return T


def invert_T(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid (4,4) transform (exact: R^T, -R^T p)."""
    out = np.eye(4)
    Rt = T[:3, :3].T
    out[:3, :3] = Rt
    out[:3, 3] = -Rt @ T[:3, 3]
    return out


class TimeSeries:
    """Sorted buffer of ``(stamp_ns, value (D,))`` samples.

    Insertions keep stamp order (out-of-order samples are inserted in place),
    drop exact-duplicate stamps, and :meth:`prune` trims by age. Not thread
    safe; the provider serialises access.
    """

    def __init__(self, dim: int):
        self.dim = dim
        self._stamps: list[int] = []
        self._values: list[np.ndarray] = []

    def __len__(self) -> int:
        return len(self._stamps)

    @property
    def oldest(self) -> int | None:
        return self._stamps[0] if self._stamps else None

    @property
    def newest(self) -> int | None:
        return self._stamps[-1] if self._stamps else None

    def clear(self) -> None:
        self._stamps.clear()
        self._values.clear()

    def insert(self, stamp_ns: int, value) -> str:
        """Insert one sample. Returns ``"ok"``, ``"out_of_order"`` (inserted
        before newer samples) or ``"duplicate"`` (same stamp present; dropped)."""
        value = np.asarray(value, dtype=np.float64).reshape(self.dim)
        i = bisect.bisect_left(self._stamps, stamp_ns)
        if i < len(self._stamps) and self._stamps[i] == stamp_ns:
            return "duplicate"
        self._stamps.insert(i, stamp_ns)
        self._values.insert(i, value)
        return "ok" if i == len(self._stamps) - 1 else "out_of_order"

    def prune(self, keep_from_ns: int) -> int:
        """Drop samples older than ``keep_from_ns``; keeps at least one sample
        at or before it so interpolation at ``keep_from_ns`` still works."""
        i = bisect.bisect_right(self._stamps, keep_from_ns) - 1
        if i > 0:
            del self._stamps[:i]
            del self._values[:i]
            return i
        return 0

    def coverage(self, a_ns: int, b_ns: int, max_gap_ns: int) -> Coverage:
        """Can [a, b] (a <= b) be interpolated/integrated from this buffer?

        NOT_YET when b is newer than the newest sample; NEVER when empty, when a
        is older than the oldest sample, or when two consecutive samples
        spanning part of [a, b] are more than ``max_gap_ns`` apart.
        """
        if not self._stamps:
            return Coverage(PoseStatus.NEVER, "no data")
        if b_ns > self._stamps[-1]:
            return Coverage(PoseStatus.NOT_YET, "newer than data")
        if a_ns < self._stamps[0]:
            return Coverage(PoseStatus.NEVER, "older than buffer")
        lo, hi = self._bracket(a_ns, b_ns)
        st = self._stamps[lo:hi + 1]
        if len(st) > 1 and max(np.diff(st)) > max_gap_ns:
            return Coverage(PoseStatus.NEVER, "gap in data")
        return OK_COVERAGE

    def _bracket(self, a_ns: int, b_ns: int) -> tuple[int, int]:
        """Indices of the last sample <= a and the first sample >= b."""
        lo = max(bisect.bisect_right(self._stamps, a_ns) - 1, 0)
        hi = min(bisect.bisect_left(self._stamps, b_ns), len(self._stamps) - 1)
        return lo, hi

    def window(self, a_ns: int, b_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples bracketing [a, b]: (N,) int64 stamps and (N, D) values."""
        lo, hi = self._bracket(a_ns, b_ns)
        return (np.asarray(self._stamps[lo:hi + 1], dtype=np.int64),
                np.asarray(self._values[lo:hi + 1]).reshape(-1, self.dim))

    def range(self, a_ns: int, b_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Samples with a <= stamp <= b: (N,) stamps and (N, D) values."""
        lo = bisect.bisect_left(self._stamps, a_ns)
        hi = bisect.bisect_right(self._stamps, b_ns)
        return (np.asarray(self._stamps[lo:hi], dtype=np.int64),
                np.asarray(self._values[lo:hi]).reshape(-1, self.dim))

    def interp_linear(self, times_ns) -> np.ndarray:
        """Linear interpolation at (M,) stamps inside the covered range -> (M, D)."""
        times_ns = np.atleast_1d(np.asarray(times_ns, dtype=np.int64))
        st, vals = self.window(int(times_ns.min()), int(times_ns.max()))
        x = (times_ns - st[0]).astype(np.float64)
        xp = (st - st[0]).astype(np.float64)
        return np.stack([np.interp(x, xp, vals[:, k]) for k in range(self.dim)], axis=-1)

    def interp_pose(self, t_ns: int) -> np.ndarray:
        """For a pose buffer (D=7: translation (3), quaternion xyzw (4)):
        (4,4) T at ``t_ns`` — linear translation, slerp rotation."""
        st, vals = self.window(t_ns, t_ns)
        if len(st) == 1 or st[0] == st[-1]:
            return make_T(Rotation.from_quat(vals[0, 3:]), vals[0, :3])
        st, vals = st[[0, -1]], vals[[0, -1]]
        x = float(t_ns - st[0])
        span = float(st[1] - st[0])
        p = vals[0, :3] + (vals[1, :3] - vals[0, :3]) * (x / span)
        R = Slerp([0.0, span], Rotation.from_quat(vals[:, 3:]))([x])[0]
        return make_T(R, p)

    def interp_rotation(self, times_ns) -> Rotation:
        """For a rotation buffer (D=4 xyzw, or D=7 with quaternion last):
        slerp at (M,) stamps -> Rotation of length M."""
        times_ns = np.atleast_1d(np.asarray(times_ns, dtype=np.int64))
        st, vals = self.window(int(times_ns.min()), int(times_ns.max()))
        q = vals[:, -4:]
        if len(st) == 1:
            return Rotation.from_quat(np.repeat(q, len(times_ns), axis=0))
        return Slerp((st - st[0]).astype(np.float64), Rotation.from_quat(q))(
            (times_ns - st[0]).astype(np.float64))


def integration_grid(series: TimeSeries, a_ns: int, b_ns: int) -> np.ndarray:
    """(N,) int64 stamps: a, every sample strictly inside (a, b), b."""
    inner, _ = series.range(a_ns + 1, b_ns - 1)
    return np.concatenate([[a_ns], inner, [b_ns]]).astype(np.int64)


def gyro_rotations(grid_ns: np.ndarray, omega: np.ndarray) -> Rotation:
    """Integrate body rates: R_a_k (body at grid[0] <- body at grid[k]).

    Args:
        grid_ns: (N,) int64 increasing stamps.
        omega: (N, 3) rad/s body angular velocity at the grid stamps.
    Returns:
        Rotation of length N, the first the identity.

    Midpoint rule on SO(3): each step applies exp(mean(omega_k, omega_k+1) * dt).
    (scipy has no ODE integrator on SO(3); this is the standard first-order
    scheme and is exact for piecewise-constant rates.)
    """
    dt = np.diff(grid_ns).astype(np.float64) * 1e-9
    steps = Rotation.from_rotvec(0.5 * (omega[:-1] + omega[1:]) * dt[:, None])
    quats = np.empty((len(grid_ns), 4))
    R = Rotation.identity()
    quats[0] = R.as_quat()
    for k in range(len(dt)):
        R = R * steps[k]
        quats[k + 1] = R.as_quat()
    return Rotation.from_quat(quats)


def integrate_translation(grid_ns: np.ndarray, rotations: Rotation, velocity: np.ndarray) -> np.ndarray:
    """Position of the body at each grid stamp in the body frame at grid[0].

    Args:
        grid_ns: (N,) int64 stamps.
        rotations: length-N Rotation R_a_k.
        velocity: (N, 3) m/s body-frame linear velocity at the grid stamps.
    Returns:
        (N, 3) positions, the first zero.

    Midpoint rule: the step's velocity (mean of its ends) is rotated by the
    rotation halfway through the step.
    """
    dt = np.diff(grid_ns).astype(np.float64) * 1e-9
    r0, r1 = rotations[:-1], rotations[1:]
    half = Rotation.from_rotvec(0.5 * (r0.inv() * r1).as_rotvec())
    v_mid = 0.5 * (velocity[:-1] + velocity[1:])
    steps = (r0 * half).apply(v_mid) * dt[:, None]
    return np.vstack([np.zeros((1, 3)), np.cumsum(steps, axis=0)])
