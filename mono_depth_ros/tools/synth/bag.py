"""Write a synthetic drive into a rosbag2 (mcap or sqlite3) with rosbags.

The bag is written into ``<out>.partial/<out name>/`` and renamed to ``<out>``
only after the writer closed successfully, so an interrupted or crashed
generation never leaves a bag that looks complete.
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from mono_depth_ros.conventions import (
    BASE_FRAME, CAMERA_LINK_FRAME, CAMERA_OPTICAL_FRAME, MAP_FRAME, NS_PER_S, ODOM_FRAME,
    RIGHT_CAMERA_OPTICAL_FRAME, Topics,
)
from mono_depth_ros.msgconv import ns_to_stamp
from mono_depth_ros.tools.synth.drive import DEFAULT_START_NS, Drive, DriveConfig, SynthFrame
from mono_depth_ros.tools.synth.presets import T_camera_link_optical, get_preset, noise_with
from mono_depth_ros.tools.synth.sensors import (
    GEODETIC_ORIGIN, simulate_gps, simulate_imu, simulate_odometry,
)

__all__ = ["SENSORS", "DEFAULT_SENSORS", "STORAGES", "DYNAMIC_MASK_TOPIC", "TRAFFIC", "traffic_density", "generate_bag", "check_options"]

#: GT mask of independently moving objects (mono8, 255 = moving), same header as the image.
#: ``mono-depth evaluate`` reads it (conventions.Topics.BAG_DYNAMIC_MASK_GT) to score moving pixels apart.
DYNAMIC_MASK_TOPIC = Topics.BAG_DYNAMIC_MASK_GT

#: Switchable sensors / outputs and the topics they write.
SENSORS: dict[str, tuple[str, ...]] = {
    "camera": (Topics.BAG_IMAGE, Topics.BAG_CAMERA_INFO),
    "right_camera": (Topics.BAG_RIGHT_IMAGE, Topics.BAG_RIGHT_CAMERA_INFO),
    "depth_gt": (Topics.BAG_DEPTH_GT,),
    "dynamic_mask_gt": (DYNAMIC_MASK_TOPIC,),
    "pose_gt": (Topics.BAG_POSE_GT,),
    "odom": (Topics.BAG_ODOM,),
    "imu": (Topics.BAG_IMU,),
    "gps": (Topics.BAG_GPS,),
    "tf": (Topics.BAG_TF,),
    "tf_static": (Topics.BAG_TF_STATIC,),
    "pose": (Topics.BAG_POSE,),
}
#: The ``pose`` sensor: a planar localiser (AMCL-like: x, y, yaw of base_link in map; z, roll, pitch 0) at
#: 30 Hz with white noise of these standard deviations (m, rad), covariance stated in the message.
POSE_RATE_HZ, POSE_SIGMA_XY, POSE_SIGMA_YAW = 30.0, 0.02, np.radians(0.1)
DEFAULT_SENSORS: tuple[str, ...] = ("camera", "depth_gt", "dynamic_mask_gt", "pose_gt", "odom", "imu", "gps", "tf", "tf_static")
STORAGES = ("mcap", "sqlite3")
#: ``traffic`` choices: moving cars per km of road (normal: the preset's own; dense: moving cars cover
#: >= 5 % of the pixels, test/test_traffic.py measures it).
TRAFFIC = {"dense": 250.0}


def check_options(sensors, storage: str) -> tuple[str, ...]:
    """Validate the sensor list and storage; returns the sensors as a tuple."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}; got {storage!r}")
    if isinstance(sensors, str):
        sensors = [s for s in sensors.split(",") if s]
    sensors = tuple(sensors)
    bad = [s for s in sensors if s not in SENSORS]
    if bad:
        raise ValueError(f"unknown sensor(s) {bad}; sensors must be chosen from: {', '.join(SENSORS)}")
    if not sensors:
        raise ValueError(f"sensors must name at least one of: {', '.join(SENSORS)}")
    return sensors


class _Msgs:
    """Message constructors over one rosbags typestore."""

    def __init__(self):
        from rosbags.typesys import Stores, get_typestore

        self.store = get_typestore(Stores.ROS2_KILTED)
        self.t = self.store.types

    def header(self, stamp_ns: int, frame: str):
        T = self.t
        return T["std_msgs/msg/Header"](
            stamp=T["builtin_interfaces/msg/Time"](*ns_to_stamp(stamp_ns)),
            frame_id=frame)

    def vec3(self, v):
        return self.t["geometry_msgs/msg/Vector3"](x=float(v[0]), y=float(v[1]), z=float(v[2]))

    def quat(self, q):
        return self.t["geometry_msgs/msg/Quaternion"](x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))

    def pose(self, T):
        P = self.t
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        return P["geometry_msgs/msg/Pose"](
            position=P["geometry_msgs/msg/Point"](x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            orientation=self.quat(q))

    def transform(self, stamp_ns, parent, child, T):
        P = self.t
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        return P["geometry_msgs/msg/TransformStamped"](
            header=self.header(stamp_ns, parent), child_frame_id=child,
            transform=P["geometry_msgs/msg/Transform"](translation=self.vec3(T[:3, 3]), rotation=self.quat(q)))

    def tf(self, transforms):
        return self.t["tf2_msgs/msg/TFMessage"](transforms=list(transforms))

    def image(self, stamp_ns, frame, img: np.ndarray, encoding: str | None = None):
        h, w = img.shape[:2]
        if encoding == "mono8":
            enc, step, data = "mono8", w, np.ascontiguousarray(img, dtype=np.uint8).reshape(-1)
        elif img.dtype == np.uint8:
            enc, step, data = "rgb8", 3 * w, np.ascontiguousarray(img).reshape(-1)
        else:
            enc, step = "32FC1", 4 * w
            data = np.ascontiguousarray(img, dtype="<f4").view(np.uint8).reshape(-1)
        return self.t["sensor_msgs/msg/Image"](
            header=self.header(stamp_ns, frame), height=h, width=w, encoding=enc,
            is_bigendian=0, step=step, data=data)

    def camera_info(self, stamp_ns, frame, K, width, height, Tx=0.0):
        P = np.zeros((3, 4))
        P[:, :3] = K
        P[0, 3] = Tx
        T = self.t
        return T["sensor_msgs/msg/CameraInfo"](
            header=self.header(stamp_ns, frame), height=height, width=width,
            distortion_model="plumb_bob", d=np.zeros(5), k=K.reshape(-1).astype(np.float64),
            r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
            roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                      do_rectify=False))

    def serialize(self, msg) -> bytes:
        return bytes(self.store.serialize_cdr(msg, msg.__msgtype__))


def _qos(transient: bool):
    from rosbags.interfaces import (
        Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime,
    )
    zero = QosTime(0, 0)
    return [Qos(QosHistory.KEEP_LAST, 1 if transient else 10, QosReliability.RELIABLE,
                QosDurability.TRANSIENT_LOCAL if transient else QosDurability.VOLATILE,
                zero, zero, QosLiveliness.AUTOMATIC, zero, False)]


_TYPES = {
    Topics.BAG_IMAGE: "sensor_msgs/msg/Image", Topics.BAG_CAMERA_INFO: "sensor_msgs/msg/CameraInfo",
    Topics.BAG_RIGHT_IMAGE: "sensor_msgs/msg/Image",
    Topics.BAG_RIGHT_CAMERA_INFO: "sensor_msgs/msg/CameraInfo",
    Topics.BAG_DEPTH_GT: "sensor_msgs/msg/Image", DYNAMIC_MASK_TOPIC: "sensor_msgs/msg/Image",
    Topics.BAG_POSE_GT: "geometry_msgs/msg/PoseStamped",
    Topics.BAG_ODOM: "nav_msgs/msg/Odometry", Topics.BAG_IMU: "sensor_msgs/msg/Imu",
    Topics.BAG_GPS: "sensor_msgs/msg/NavSatFix", Topics.BAG_TF: "tf2_msgs/msg/TFMessage",
    Topics.BAG_TF_STATIC: "tf2_msgs/msg/TFMessage",
    Topics.BAG_POSE: "geometry_msgs/msg/PoseWithCovarianceStamped",
}


def _sensor_messages(drive: Drive, sensors: tuple[str, ...], M: _Msgs, start_ns: int):
    """All non-camera messages as a time-sorted list of (stamp_ns, order, topic, msg)."""
    cfg = drive.config
    noise = cfg.preset.noise
    traj = drive.world.trajectory
    rng_odom, rng_imu, rng_gps = (np.random.default_rng([cfg.seed, 0x5E45, k]) for k in range(3))
    out = []
    T = M.t
    if "tf_static" in sensors:
        p = cfg.preset
        tfs = [M.transform(start_ns, BASE_FRAME, CAMERA_LINK_FRAME, p.T_base_camera_link()),
               M.transform(start_ns, CAMERA_LINK_FRAME, CAMERA_OPTICAL_FRAME, T_camera_link_optical())]
        if cfg.stereo:
            T_link_right = np.linalg.inv(p.T_base_camera_link()) @ p.T_base_right_camera()
            tfs.append(M.transform(start_ns, CAMERA_LINK_FRAME, RIGHT_CAMERA_OPTICAL_FRAME, T_link_right))
        out.append((start_ns, 0, Topics.BAG_TF_STATIC, M.tf(tfs)))
    if "odom" in sensors or "tf" in sensors:
        od = simulate_odometry(traj, noise, rng_odom, cfg.duration_s)
        Tob = od.T_odom_base()
        cov_pose = np.zeros(36)
        cov_twist = np.zeros(36)
        dist = np.concatenate([[0], np.cumsum(np.abs(od.v[1:]) * np.diff(od.t))])
        for k, t in enumerate(od.t):
            stamp = start_ns + int(round(t * NS_PER_S))
            if "odom" in sensors:
                sxy = (noise.odom_scale_error * dist[k]) ** 2 + 1e-4
                syaw = (noise.odom_yaw_rate_bias * t) ** 2 + 1e-4
                cov_pose[[0, 7]] = sxy
                cov_pose[[14, 21, 28]] = 1e3          # z, roll, pitch unobserved (planar)
                cov_pose[35] = syaw
                cov_twist[0] = noise.odom_speed_noise ** 2
                cov_twist[[7, 14, 21, 28]] = 1e3
                cov_twist[35] = noise.odom_yaw_rate_noise ** 2
                msg = T["nav_msgs/msg/Odometry"](
                    header=M.header(stamp, ODOM_FRAME), child_frame_id=BASE_FRAME,
                    pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=M.pose(Tob[k]), covariance=cov_pose.copy()),
                    twist=T["geometry_msgs/msg/TwistWithCovariance"](
                        twist=T["geometry_msgs/msg/Twist"](linear=M.vec3((od.v[k], 0, 0)),
                                                           angular=M.vec3((0, 0, od.yaw_rate[k]))),
                        covariance=cov_twist.copy()))
                out.append((stamp, 2, Topics.BAG_ODOM, msg))
            if "tf" in sensors:
                out.append((stamp, 3, Topics.BAG_TF, M.tf([M.transform(stamp, ODOM_FRAME, BASE_FRAME, Tob[k])])))
    if "imu" in sensors:
        imu = simulate_imu(traj, noise, rng_imu, cfg.duration_s)
        cg = np.diag([noise.gyro_noise ** 2] * 3).reshape(-1)
        ca = np.diag([noise.accel_noise ** 2] * 3).reshape(-1)
        for k, t in enumerate(imu.t):
            stamp = start_ns + int(round(t * NS_PER_S))
            if imu.orientation is None:
                q, cq = (0.0, 0.0, 0.0, 1.0), np.array([-1.0] + [0.0] * 8)
            else:
                q, cq = imu.orientation[k], np.diag([0.005 ** 2] * 3).reshape(-1)
            msg = T["sensor_msgs/msg/Imu"](
                header=M.header(stamp, BASE_FRAME), orientation=M.quat(q), orientation_covariance=cq,
                angular_velocity=M.vec3(imu.gyro[k]), angular_velocity_covariance=cg,
                linear_acceleration=M.vec3(imu.accel[k]), linear_acceleration_covariance=ca)
            out.append((stamp, 4, Topics.BAG_IMU, msg))
    if "gps" in sensors:
        gps = simulate_gps(traj, noise, rng_gps, cfg.duration_s)
        cov = np.diag([noise.gps_sigma_horizontal ** 2] * 2 + [noise.gps_sigma_vertical ** 2]).reshape(-1)
        for k, t in enumerate(gps.t):
            stamp = start_ns + int(round(t * NS_PER_S))
            msg = T["sensor_msgs/msg/NavSatFix"](
                header=M.header(stamp, BASE_FRAME),
                status=T["sensor_msgs/msg/NavSatStatus"](status=0, service=1),   # STATUS_FIX, SERVICE_GPS
                latitude=float(gps.lat[k]), longitude=float(gps.lon[k]), altitude=float(gps.alt[k]),
                position_covariance=cov, position_covariance_type=2)             # COVARIANCE_TYPE_DIAGONAL_KNOWN
            out.append((stamp, 5, Topics.BAG_GPS, msg))
    if "pose" in sensors:
        rng_pose = np.random.default_rng([cfg.seed, 0x5E45, 3])
        t_pose = np.arange(0.0, cfg.duration_s + 1e-9, 1.0 / POSE_RATE_HZ)
        t_pose = t_pose[t_pose <= traj.t[-1]]
        T_true = traj.T_map_base(t_pose)
        xy = T_true[:, :2, 3] + rng_pose.normal(0.0, POSE_SIGMA_XY, (len(t_pose), 2))
        yaw = np.arctan2(T_true[:, 1, 0], T_true[:, 0, 0]) + rng_pose.normal(0.0, POSE_SIGMA_YAW, len(t_pose))
        cov = np.diag([POSE_SIGMA_XY ** 2] * 2 + [1e3] * 3 + [POSE_SIGMA_YAW ** 2]).reshape(-1)  # z/roll/pitch unobserved
        for k, t in enumerate(t_pose):
            stamp = start_ns + int(round(t * NS_PER_S))
            Tk = np.eye(4)
            Tk[:3, :3] = Rotation.from_euler("z", yaw[k]).as_matrix()
            Tk[:2, 3] = xy[k]
            out.append((stamp, 6, Topics.BAG_POSE, T["geometry_msgs/msg/PoseWithCovarianceStamped"](
                header=M.header(stamp, MAP_FRAME),
                pose=T["geometry_msgs/msg/PoseWithCovariance"](pose=M.pose(Tk), covariance=cov.copy()))))
    out.sort(key=lambda r: (r[0], r[1]))
    return out


def _frame_messages(frame: SynthFrame, drive: Drive, sensors, M: _Msgs):
    cfg = drive.config
    s = frame.stamp_ns
    out = []
    if "camera" in sensors:
        out.append((Topics.BAG_IMAGE, M.image(s, CAMERA_OPTICAL_FRAME, frame.image)))
        out.append((Topics.BAG_CAMERA_INFO, M.camera_info(s, CAMERA_OPTICAL_FRAME, frame.K, cfg.width, cfg.height)))
    if "right_camera" in sensors and frame.right_image is not None:
        out.append((Topics.BAG_RIGHT_IMAGE, M.image(s, RIGHT_CAMERA_OPTICAL_FRAME, frame.right_image)))
        tx = -frame.K[0, 0] * cfg.preset.stereo_baseline
        out.append((Topics.BAG_RIGHT_CAMERA_INFO,
                    M.camera_info(s, RIGHT_CAMERA_OPTICAL_FRAME, frame.K, cfg.width, cfg.height, Tx=tx)))
    if "depth_gt" in sensors:
        out.append((Topics.BAG_DEPTH_GT, M.image(s, CAMERA_OPTICAL_FRAME, frame.depth)))
    if "dynamic_mask_gt" in sensors:
        mask = frame.dynamic_mask.astype(np.uint8) * np.uint8(255)
        out.append((DYNAMIC_MASK_TOPIC, M.image(s, CAMERA_OPTICAL_FRAME, mask, encoding="mono8")))
    if "pose_gt" in sensors:
        out.append((Topics.BAG_POSE_GT, M.t["geometry_msgs/msg/PoseStamped"](
            header=M.header(s, MAP_FRAME), pose=M.pose(frame.T_map_camera))))
    return out


def traffic_density(traffic, default: float) -> float:
    """Moving cars per km for ``traffic`` (None / "normal": ``default``; "dense"; a number >= 0). ValueError."""
    if traffic is None or traffic == "normal":
        return float(default)
    if traffic in TRAFFIC:
        return TRAFFIC[traffic]
    try:
        v = float(traffic)
    except (TypeError, ValueError):
        v = float("nan")
    if not 0.0 <= v <= 1000.0:
        raise ValueError(f"traffic must be normal, dense or a number of moving cars per km in [0, 1000], got {traffic!r}")
    return v


def generate_bag(out_path, preset="A", seed=0, duration_s=60.0, width=640, height=192, rate_hz=10.0,
                 storage="mcap", sensors=DEFAULT_SENSORS, overwrite=False, progress=True,
                 contact_sheet=True, stereo=None, start_ns=DEFAULT_START_NS, camera_noise=True,
                 workers=None, noise=None, frame_callback=None, stand_still=False, traffic=None,
                 car_texture=False) -> Path:
    """Render a drive and write it as a rosbag2 directory at ``out_path``.

    Args:
        out_path: bag directory to create.
        preset, seed, duration_s, width, height, rate_hz: see :func:`render_drive`.
        storage: "mcap" (default) or "sqlite3".
        sensors: subset of :data:`SENSORS` (list or comma-separated string).
        overwrite: replace an existing ``out_path``.
        progress: show a tqdm bar.
        contact_sheet: also write ``<out>/contact_sheet.png``.
        stereo: render the right camera (default: when "right_camera" is in ``sensors``).
        workers: render processes (1: render in this process; None: 2 on a multi-core
            machine for drives of 50+ frames, else 1). The output does not depend on
            it: every frame depends only on (seed, frame index).
        noise: overrides of the preset's :class:`SensorNoise` (dict, "key=value,..." or a
            SensorNoise), e.g. ``{"imu_rate_hz": 200, "odom_scale_error": 0.02}``.
        frame_callback: called as ``f(k, frame)`` after frame ``k`` is written (testing hook).
        stand_still: the vehicle stands at its start for the whole drive (speed 0; the road and
            start of the moving drive of the same seed).
        traffic: None or "normal" (the preset's moving cars per km), "dense" (:data:`TRAFFIC`) or a number
            of moving cars per km of road.
        car_texture: paint every car (moving and parked) with a livery pattern that moves rigidly with
            it (the preset's ``car_texture`` strength set to 1; default: plain paint, as before).
    Returns:
        The bag directory.
    Raises:
        ValueError: invalid preset/parameter (nothing written).
        FileExistsError: ``out_path`` exists and ``overwrite`` is false (nothing written).
    """
    sensors = check_options(sensors, storage)
    if stereo is None:
        stereo = "right_camera" in sensors
    elif "right_camera" in sensors and not stereo:
        raise ValueError("sensors includes 'right_camera' but stereo=False")
    p = get_preset(preset)
    p = p.replace(noise=noise_with(p.noise, noise), stand_still=bool(stand_still) or p.stand_still,
                  moving_cars_per_km=traffic_density(traffic, p.moving_cars_per_km),
                  car_texture=1.0 if car_texture else p.car_texture)
    cfg = DriveConfig.make(p, seed, duration_s, width, height, rate_hz, stereo, start_ns, camera_noise)
    if workers is None:
        n_frames = int(cfg.duration_s * cfg.rate_hz) + 1
        workers = 2 if (os.cpu_count() or 1) >= 2 and n_frames >= 50 else 1
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 64:
        raise ValueError(f"workers must be an integer in [1, 64], got {workers!r}")
    out = Path(out_path)
    if out.name in ("", ".", ".."):
        raise ValueError(f"out_path must name a bag directory, got {str(out_path)!r}")
    if out.exists() and not overwrite:
        raise FileExistsError(f"{out} exists; pass overwrite=True (--overwrite) to replace it")
    if not out.parent.exists():
        raise FileNotFoundError(f"output folder {out.parent} does not exist")

    from rosbags.rosbag2 import StoragePlugin, Writer
    from tqdm import tqdm

    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)            # a stale, incomplete run of ours
    partial.mkdir()
    try:
        drive = Drive(cfg)
        M = _Msgs()
        side = _sensor_messages(drive, sensors, M, cfg.start_ns)
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        bag_dir = partial / out.name
        writer = Writer(bag_dir, version=8, storage_plugin=plugin)
        writer.open()
        try:
            topics = [t for s in sensors for t in SENSORS[s]]
            conns = {t: writer.add_connection(t, _TYPES[t], typestore=M.store,
                                              offered_qos_profiles=_qos(t == Topics.BAG_TF_STATIC))
                     for t in topics}
            writer.set_custom_data("mono_depth_ros.synth", json.dumps(_info(drive, sensors), sort_keys=True))
            n = len(drive)
            sheet_idx = set(np.linspace(0, n - 1, min(n, 8)).round().astype(int).tolist())
            sheet = []
            j = 0
            frames = _render_frames(drive, workers)
            for k in tqdm(range(n), desc=f"generate {out.name}", unit="frame", disable=not progress,
                          file=sys.stderr):
                frame = next(frames)
                while j < len(side) and side[j][0] <= frame.stamp_ns:
                    stamp, _, topic, msg = side[j]
                    writer.write(conns[topic], stamp, M.serialize(msg))
                    j += 1
                for topic, msg in _frame_messages(frame, drive, sensors, M):
                    writer.write(conns[topic], frame.stamp_ns, M.serialize(msg))
                if k in sheet_idx and contact_sheet:
                    sheet.append(frame)
                if frame_callback is not None:
                    frame_callback(k, frame)
            for stamp, _, topic, msg in side[j:]:
                writer.write(conns[topic], stamp, M.serialize(msg))
        finally:
            writer.close()
        if contact_sheet and sheet:
            write_contact_sheet(sheet, bag_dir / "contact_sheet.png")
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        elif out.exists() or out.is_symlink():
            out.unlink()
        bag_dir.rename(out)
        partial.rmdir()
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


_WORKER_DRIVE: Drive | None = None


def _worker_init(cfg: DriveConfig) -> None:
    global _WORKER_DRIVE
    import signal

    # Ctrl-C is the parent's to handle: it stops submitting and shuts the pool down.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _WORKER_DRIVE = Drive(cfg, threads=1)          # the processes already use the cores


def _worker_frame(k: int) -> SynthFrame:
    assert _WORKER_DRIVE is not None
    return _WORKER_DRIVE.frame(k)


def _render_frames(drive: Drive, workers: int):
    """Frames 0..n-1 in order, rendered here or by ``workers`` processes (same bytes either way)."""
    if workers <= 1:
        for k in range(len(drive)):
            yield drive.frame(k)
        return
    import multiprocessing
    from collections import deque
    from concurrent.futures import ProcessPoolExecutor

    ctx = multiprocessing.get_context("spawn")      # open3d/Embree threads do not survive fork
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=_worker_init, initargs=(drive.config,))
    try:
        pending: deque = deque()
        nxt = 0
        for _ in range(len(drive)):
            while nxt < len(drive) and len(pending) < 2 * workers:
                pending.append(pool.submit(_worker_frame, nxt))
                nxt += 1
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _info(drive: Drive, sensors) -> dict:
    cfg = drive.config
    od_T = np.eye(4)
    od_T[:3, :3] = Rotation.from_euler("z", drive.world.trajectory.yaw[0]).as_matrix()
    od_T[:2, 3] = drive.world.trajectory.pos[0, :2]
    return {
        "preset": cfg.preset.name, "preset_label": cfg.preset.label, "seed": cfg.seed,
        "duration_s": cfg.duration_s, "width": cfg.width, "height": cfg.height, "rate_hz": cfg.rate_hz,
        "stereo": cfg.stereo, "stand_still": cfg.preset.stand_still,
        "moving_cars_per_km": cfg.preset.moving_cars_per_km, "car_texture": cfg.preset.car_texture,
        "sensors": list(sensors),
        "geodetic_origin": list(GEODETIC_ORIGIN),
        "T_map_odom": od_T.round(12).tolist(), "T_base_camera": cfg.preset.T_base_camera().round(12).tolist(),
        "noise": {k: v for k, v in vars(cfg.preset.noise).items()},
    }


def write_contact_sheet(frames: list[SynthFrame], path: Path) -> None:
    """PNG grid: one row per frame (image | colourised GT depth | dynamic mask overlay)."""
    import matplotlib.image

    from mono_depth_ros.pointcloud import colorize_depth  # the package's one depth colour map

    rows = []
    for f in frames:
        over = f.image.copy()
        over[f.dynamic_mask] = (0.5 * over[f.dynamic_mask] + (127, 0, 127)).astype(np.uint8)
        rows.append(np.concatenate([f.image, colorize_depth(f.depth), over], 1))
    matplotlib.image.imsave(str(path), np.concatenate(rows, 0))
