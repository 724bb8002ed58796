"""Analytic test drives with closed-form ground truth for the ego-motion core.

A smooth 3-D drive whose base_link pose is known in closed form, sampled into
the plain samples of :mod:`.samples` with simple sensor noise models:
odometry = integrated noisy twist (drifts), IMU = gyro and accelerometer with
white noise and constant biases, GPS = ENU position with white noise converted to geodetic with
``pymap3d.enu2geodetic``. Used by the tests and by ``egomotion-eval --demo``;
independent of the synthetic world renderer.

Trajectory (odom frame, metres, seconds)::

    p(t) = (10 t + 15 sin(0.2 t), 20 sin(0.15 t), sin(0.1 t))

base_link x points along the velocity (non-holonomic), roll = 0.02 sin(0.5 t).
Speed 7..13 m/s, yaw rate up to ~0.2 rad/s.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pymap3d
from scipy.spatial.transform import Rotation

from ..conventions import NS_PER_S, T_BASE_OPTICAL_ROTATION
from ..msgconv import ns_to_stamp
from .samples import GpsFix, ImuSample, OdometrySample, TransformSample

__all__ = ["NoiseModel", "DEFAULT_GPS_ORIGIN", "default_T_base_camera", "true_pose",
           "true_twist", "SimulatedDrive", "simulate_drive", "write_drive_bag"]

#: Geodetic origin (lat deg, lon deg, alt m) of the analytic drive's odom frame.
DEFAULT_GPS_ORIGIN = (48.137, 11.575, 520.0)


@dataclass(frozen=True)
class NoiseModel:
    """Sensor noise (1-sigma) and rates of the analytic drive; zeros = exact.

    Units: m/s, rad/s, m, Hz. ``*_scale`` is a multiplicative error.
    """

    odom_rate: float = 50.0
    odom_speed_sigma: float = 0.05
    odom_speed_scale: float = 0.005
    odom_yaw_rate_sigma: float = 0.005
    odom_yaw_rate_bias: float = 0.001
    imu_rate: float = 200.0
    gyro_sigma: float = 0.01
    gyro_bias: tuple[float, float, float] = (0.002, -0.001, 0.0015)
    accel_sigma: float = 0.05
    accel_bias: tuple[float, float, float] = (0.03, -0.02, 0.04)
    gps_rate: float = 5.0
    gps_sigma_h: float = 1.0
    gps_sigma_v: float = 2.0
    camera_rate: float = 10.0


def default_T_base_camera() -> np.ndarray:
    """(4,4) T_base_cam: optical frame 1.5 m ahead, 1.2 m up, pitched 5 deg down."""
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("y", np.radians(5.0)).as_matrix() @ T_BASE_OPTICAL_ROTATION
    T[:3, 3] = (1.5, 0.0, 1.2)
    return T


def _position(t):
    t = np.asarray(t, dtype=np.float64)
    return np.stack([10 * t + 15 * np.sin(0.2 * t), 20 * np.sin(0.15 * t), np.sin(0.1 * t)], axis=-1)


def _velocity(t):
    t = np.asarray(t, dtype=np.float64)
    return np.stack([10 + 3 * np.cos(0.2 * t), 3 * np.cos(0.15 * t), 0.1 * np.cos(0.1 * t)], axis=-1)


def _acceleration(t):
    t = np.asarray(t, dtype=np.float64)
    return np.stack([-0.6 * np.sin(0.2 * t), -0.45 * np.sin(0.15 * t), -0.01 * np.sin(0.1 * t)], axis=-1)


def _rotation(t) -> Rotation:
    v = _velocity(t)
    yaw = np.arctan2(v[..., 1], v[..., 0])
    pitch = -np.arctan2(v[..., 2], np.hypot(v[..., 0], v[..., 1]))
    roll = 0.02 * np.sin(0.5 * np.asarray(t, dtype=np.float64))
    return Rotation.from_euler("ZYX", np.stack([yaw, pitch, roll], axis=-1))


def true_pose(t) -> np.ndarray:
    """(N,4,4) T_odom_base at float seconds t (N,)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    T = np.tile(np.eye(4), (len(t), 1, 1))
    T[:, :3, :3] = _rotation(t).as_matrix()
    T[:, :3, 3] = _position(t)
    return T


def true_twist(t) -> tuple[np.ndarray, np.ndarray]:
    """Body-frame (N,3) linear m/s and (N,3) angular rad/s velocity at t (N,)."""
    t = np.atleast_1d(np.asarray(t, dtype=np.float64))
    R = _rotation(t)
    v_body = R.inv().apply(_velocity(t))
    h = 1e-5  # central difference of the closed-form rotation: error ~h^2
    omega = (R.inv() * _rotation(t + h)).as_rotvec() / (2 * h) - (R.inv() * _rotation(t - h)).as_rotvec() / (2 * h)
    return v_body, omega


@dataclass
class SimulatedDrive:
    """Samples of one analytic drive, each list sorted by stamp."""

    odometry: list
    transforms: list
    imu: list
    gps: list
    camera_stamps_ns: np.ndarray  # (M,) int64
    T_odom_camera_gt: np.ndarray  # (M,4,4)
    T_base_camera: np.ndarray  # (4,4)
    gps_origin: tuple

    def events(self, kinds=("odometry", "transforms", "imu", "gps")) -> list[tuple[int, str, object]]:
        """All samples of ``kinds`` merged in stamp order: (stamp_ns, kind, sample)."""
        out = [(s.stamp_ns, k, s) for k in kinds for s in getattr(self, k)]
        out.sort(key=lambda e: e[0])
        return out

    def feed(self, provider, kinds=("odometry", "transforms", "imu", "gps")) -> None:
        """Feed ``provider`` with every sample of ``kinds`` in stamp order."""
        add = {"odometry": provider.add_odometry, "transforms": provider.add_transform,
               "imu": provider.add_imu, "gps": provider.add_gps}
        for _, kind, sample in self.events(kinds):
            add[kind](sample)


def _stamps(duration_s: float, rate: float, t0_s: float) -> np.ndarray:
    n = int(np.floor(duration_s * rate)) + 1
    return (np.round((t0_s + np.arange(n) / rate) * NS_PER_S)).astype(np.int64)


def simulate_drive(duration_s: float = 20.0, noise: NoiseModel | None = None, seed: int = 0,
                   t0_s: float = 100.0) -> SimulatedDrive:
    """Sample the analytic drive over [t0, t0 + duration] with ``noise``."""
    nm = noise or NoiseModel()
    rng = np.random.default_rng(seed)
    T_base_cam = default_T_base_camera()

    # Odometry: integrate the noisy twist -> drifting pose (like wheel odometry).
    st = _stamps(duration_s, nm.odom_rate, t0_s)
    ts = st / NS_PER_S
    v, w = true_twist(ts)
    v = v * (1 + nm.odom_speed_scale) + rng.normal(0, nm.odom_speed_sigma, v.shape) * [1, 0, 0]
    w = w + rng.normal(0, nm.odom_yaw_rate_sigma, w.shape) + nm.odom_yaw_rate_bias * np.array([0, 0, 1])
    T0 = true_pose(ts[:1])[0]
    R, p = Rotation.from_matrix(T0[:3, :3]), T0[:3, 3].copy()
    odom, tfs = [], []
    cov = np.diag([0.01, 0.01, 0.01, 0.001, 0.001, 0.001])
    for k in range(len(st)):
        if k:
            dt = ts[k] - ts[k - 1]
            wm, vm = 0.5 * (w[k] + w[k - 1]), 0.5 * (v[k] + v[k - 1])
            half = R * Rotation.from_rotvec(wm * dt / 2)
            p = p + half.apply(vm) * dt
            R = R * Rotation.from_rotvec(wm * dt)
        q = R.as_quat()
        odom.append(OdometrySample(int(st[k]), p.copy(), q, v[k], w[k], cov, cov * 0.1))
        tfs.append(TransformSample(int(st[k]), "odom", "base_link", p.copy(), q))

    # IMU in base_link: gyro and accelerometer (specific force = R^T (a + g)).
    st_i = _stamps(duration_s, nm.imu_rate, t0_s)
    ti = st_i / NS_PER_S
    _, wi = true_twist(ti)
    wi = wi + rng.normal(0, nm.gyro_sigma, wi.shape) + np.asarray(nm.gyro_bias)
    f = _rotation(ti).inv().apply(_acceleration(ti) + np.array([0.0, 0.0, 9.81]))
    f = f + rng.normal(0, nm.accel_sigma, f.shape) + np.asarray(nm.accel_bias)
    imu = [ImuSample(int(st_i[k]), wi[k], f[k]) for k in range(len(st_i))]

    # GPS: ENU = odom frame of the *true* trajectory, metre-level white noise.
    st_g = _stamps(duration_s, nm.gps_rate, t0_s)
    pg = _position(st_g / NS_PER_S)
    pg = pg + rng.normal(0, 1, pg.shape) * [nm.gps_sigma_h, nm.gps_sigma_h, nm.gps_sigma_v]
    lat, lon, alt = pymap3d.enu2geodetic(pg[:, 0], pg[:, 1], pg[:, 2], *DEFAULT_GPS_ORIGIN)
    gcov = np.diag([nm.gps_sigma_h ** 2, nm.gps_sigma_h ** 2, nm.gps_sigma_v ** 2])
    gps = [GpsFix(int(st_g[k]), lat[k], lon[k], alt[k], 0, gcov, 2) for k in range(len(st_g))]

    st_c = _stamps(duration_s, nm.camera_rate, t0_s)
    T_cam = true_pose(st_c / NS_PER_S) @ T_base_cam
    return SimulatedDrive(odom, tfs, imu, gps, st_c, T_cam, T_base_cam, DEFAULT_GPS_ORIGIN)


# ---------------------------------------------------------------- bag writing

def write_drive_bag(drive: SimulatedDrive, path, *, topics=None) -> None:
    """Write ``drive`` as a rosbag2 (sqlite3) with the synthetic-bag topic names.

    Topics (``conventions.Topics``): odometry, /tf (odom->base_link), /tf_static
    (base_link->camera_link->camera_optical_frame), IMU, GPS and the ground-truth
    camera pose (PoseStamped of the optical frame in ``map`` = odom here).
    No images. ``topics``: write only these (None: all), e.g. without the ground truth
    to stand in for a real recording. Needs the ``rosbags`` package (imported here only).
    """
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    from ..conventions import BASE_FRAME, CAMERA_LINK_FRAME, CAMERA_OPTICAL_FRAME, MAP_FRAME, Topics

    ts = get_typestore(Stores.ROS2_HUMBLE)
    M = ts.types
    Time, Header = M["builtin_interfaces/msg/Time"], M["std_msgs/msg/Header"]
    Vec, Pt, Quat = M["geometry_msgs/msg/Vector3"], M["geometry_msgs/msg/Point"], M["geometry_msgs/msg/Quaternion"]
    Pose, Tf, TfS = M["geometry_msgs/msg/Pose"], M["geometry_msgs/msg/Transform"], M["geometry_msgs/msg/TransformStamped"]

    def hdr(ns, frame):
        sec, nanosec = ns_to_stamp(ns)
        return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame)

    def vec(v, cls=Vec):
        return cls(x=float(v[0]), y=float(v[1]), z=float(v[2]))

    def quat(q):
        return Quat(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))

    def tfs(ns, parent, child, t, q):
        return TfS(header=hdr(ns, parent), child_frame_id=child, transform=Tf(translation=vec(t), rotation=quat(q)))

    def pose_of(T):
        return Pose(position=vec(T[:3, 3], Pt), orientation=quat(Rotation.from_matrix(T[:3, :3]).as_quat()))

    msgs = []  # (stamp, topic, type, msg)
    for o in drive.odometry:
        msgs.append((o.stamp_ns, Topics.BAG_ODOM, "nav_msgs/msg/Odometry", M["nav_msgs/msg/Odometry"](
            header=hdr(o.stamp_ns, o.frame_id), child_frame_id=o.child_frame_id,
            pose=M["geometry_msgs/msg/PoseWithCovariance"](
                pose=Pose(position=vec(o.position, Pt), orientation=quat(o.orientation)),
                covariance=np.array(o.pose_covariance, dtype=np.float64).ravel()),
            twist=M["geometry_msgs/msg/TwistWithCovariance"](
                twist=M["geometry_msgs/msg/Twist"](linear=vec(o.linear_velocity), angular=vec(o.angular_velocity)),
                covariance=np.array(o.twist_covariance, dtype=np.float64).ravel()))))
    for t in drive.transforms:
        msgs.append((t.stamp_ns, Topics.BAG_TF, "tf2_msgs/msg/TFMessage", M["tf2_msgs/msg/TFMessage"](
            transforms=[tfs(t.stamp_ns, t.parent_frame, t.child_frame, t.translation, t.rotation)])))
    for s in drive.imu:
        nocov = np.zeros(9)
        nocov[0] = -1.0
        msgs.append((s.stamp_ns, Topics.BAG_IMU, "sensor_msgs/msg/Imu", M["sensor_msgs/msg/Imu"](
            header=hdr(s.stamp_ns, BASE_FRAME), orientation=quat([0, 0, 0, 1]), orientation_covariance=nocov,
            angular_velocity=vec(s.angular_velocity), angular_velocity_covariance=np.zeros(9),
            linear_acceleration=vec(s.linear_acceleration), linear_acceleration_covariance=np.zeros(9))))
    for g in drive.gps:
        msgs.append((g.stamp_ns, Topics.BAG_GPS, "sensor_msgs/msg/NavSatFix", M["sensor_msgs/msg/NavSatFix"](
            header=hdr(g.stamp_ns, "gps"), status=M["sensor_msgs/msg/NavSatStatus"](status=g.status, service=1),
            latitude=g.latitude, longitude=g.longitude, altitude=g.altitude,
            position_covariance=np.array(g.position_covariance, dtype=np.float64).ravel(),
            position_covariance_type=g.position_covariance_type)))
    for ns, T in zip(drive.camera_stamps_ns, drive.T_odom_camera_gt):
        msgs.append((int(ns), Topics.BAG_POSE_GT, "geometry_msgs/msg/PoseStamped", M["geometry_msgs/msg/PoseStamped"](
            header=hdr(ns, MAP_FRAME), pose=pose_of(T))))
    # Static chain base_link -> camera_link -> optical, split like a URDF would.
    T_link_opt = np.eye(4)
    T_link_opt[:3, :3] = T_BASE_OPTICAL_ROTATION
    T_base_link = drive.T_base_camera @ np.linalg.inv(T_link_opt)
    t_static = int(drive.camera_stamps_ns[0])
    static = M["tf2_msgs/msg/TFMessage"](transforms=[
        tfs(t_static, BASE_FRAME, CAMERA_LINK_FRAME, T_base_link[:3, 3],
            Rotation.from_matrix(T_base_link[:3, :3]).as_quat()),
        tfs(t_static, CAMERA_LINK_FRAME, CAMERA_OPTICAL_FRAME, [0, 0, 0],
            Rotation.from_matrix(T_BASE_OPTICAL_ROTATION).as_quat())])
    msgs.append((t_static - 1, Topics.BAG_TF_STATIC, "tf2_msgs/msg/TFMessage", static))
    if topics is not None:
        msgs = [m for m in msgs if m[1] in set(topics)]
    msgs.sort(key=lambda m: m[0])
    with Writer(path, version=8) as writer:
        conns = {}
        for ns, topic, typ, msg in msgs:
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, typ, typestore=ts)
            writer.write(conns[topic], ns, ts.serialize_cdr(msg, typ))
