"""EgoMotionProvider: feed motion samples, ask for metric relative camera poses.

Typical use (the ROS node does the same from its callbacks)::

    provider = EgoMotionProvider(EgoMotionConfig(priority=("odom", "tf", "imu_gps", "imu_speed")),
                                 T_base_camera=T_base_cam)          # (4,4) from TF
    provider.add_odometry(from_odometry_msg(msg))                    # per message
    provider.add_imu(from_imu_msg(msg)); provider.add_gps(from_navsatfix_msg(msg))
    for tf in from_tf_message(msg): provider.add_transform(tf)      # or: a shared TransformLookup
    rp = provider.relative_pose(t_target_ns, t_source_ns)
    if rp.status is PoseStatus.OK:
        use(rp.T_target_source, rp.source)       # (4,4), camera optical frame
    provider.counters                            # dict[str, int] for diagnostics

All methods are plain Python/NumPy and guarded by one lock, so callbacks from
several executor threads may call them.
"""
from __future__ import annotations

import logging
import math
import threading
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from .. import tf_buffer as _tf   # module import: tf_buffer imports egomotion.samples (no cycle at import)
from ..conventions import BASE_FRAME, NS_PER_S, ODOM_FRAME, QUATERNION_NORM_TOLERANCE, quaternion_is_unit, to_ns
from ..options import option
from .samples import (GPS_COVARIANCE_TYPE_UNKNOWN, GpsFix, ImuSample, OdometrySample, PoseSample,
                      TransformSample)
from .sources import (GpsTrack, ImuGpsSource, ImuRotation, ImuSpeedSource, OdomSource, PoseSource,
                      TransformSource, TwistSource)
from .timeseries import Coverage, PoseStatus, TimeSeries, invert_T

__all__ = ["SOURCES", "SOURCE_INPUTS", "parse_sources", "EgoMotionConfig", "RelativePose", "EgoMotionProvider"]

log = logging.getLogger(__name__)

#: Source names accepted in ``EgoMotionConfig.priority``.
SOURCES = ("odom", "odom_twist", "tf", "imu_gps", "imu_speed", "pose")
#: source -> the input kinds (keys of ``samples.MOTION_INPUTS``) it needs.
SOURCE_INPUTS = {"odom": ("odometry",), "odom_twist": ("odometry",), "tf": ("tf",), "imu_gps": ("imu", "gps"),
                 "imu_speed": ("imu", "odometry"), "pose": ("pose",)}


def parse_sources(text: str) -> tuple[str, ...]:
    """The one parser of a source list's text form (``egomotion_sources``, ``--egomotion``).

    >>> parse_sources(" odom, tf ,imu_gps")
    ('odom', 'tf', 'imu_gps')
    """
    srcs = tuple(x.strip() for x in str(text).split(",") if x.strip())
    bad = [x for x in srcs if x not in SOURCES]
    if not srcs or bad:
        raise ValueError(f"{text!r}: unknown {bad}; use a comma-separated list of {list(SOURCES)}")
    return srcs


@dataclass(frozen=True)
class EgoMotionConfig:
    """Every ego-motion parameter, with its unit.

    Attributes:
        priority: sources tried in order; the first that answers wins. A source
            that is NOT_YET (data will come) makes the query wait rather than
            fall back; absent, stale or gapped sources are skipped.
        odom_frame / base_frame: the ``tf`` source asks the transform lookup for
            base_frame(t_target) <- base_frame(t_source) through odom_frame, so any chain
            of TF links between them works (e.g. odom -> base_footprint -> base_link).
        buffer_s: seconds of samples kept (older ones are pruned).
        max_gap_s: largest spacing between consecutive samples that
            interpolation/integration may bridge.
        time_jump_tolerance_s: a sample older than the newest stamp seen by
            more than this is a backwards time jump (bag loop, sim-time reset):
            all buffers are reset.
        stale_timeout_s: a source whose newest sample is this much older than
            the newest sample of any stream is stale: NEVER instead of NOT_YET.
        odom_max_pose_variance: odometry pose usable only while the x, y and yaw
            variances (m^2, rad^2) are finite, >= 0 and below this; otherwise its
            twist is integrated. Dead-reckoning covariance grows without bound
            with distance while relative accuracy does not, so the default
            (1e6, i.e. sigma 1 km) only catches "unknown" markers (1e9, -1, NaN).
        imu_rotation: ``"gyro"`` | ``"orientation"`` | ``"auto"`` (see ImuRotation).
        R_base_imu: (3,3) rotation of the IMU frame into base_link.
        gps_origin: (lat deg, lon deg, alt m) of the local ENU origin; None =
            first accepted fix.
        gps_fit: ``"imu"`` (IMU-aided path model, falls back to ``"poly"``
            where IMU data is missing) or ``"poly"`` (quadratic in time); see GpsTrack.
        gps_window_s: window (s) of the ``poly`` fit; gps_imu_window_s: of the ``imu`` fit.
        gps_min_fixes: fixes needed in the window.
        gps_max_variance: fixes whose horizontal variance (m^2) exceeds this are
            rejected (when the covariance type is known).
        gps_min_status: NavSatStatus.status below this is "no fix" (ignored).
        quaternion_norm_tolerance: quaternions with ``|norm^2 - 1|`` above this are
            rejected (tf2's rule: a denormalised quaternion is a publisher bug, not a
            rotation); smaller deviations are normalised.
        imu_max_angular_velocity: gyro samples faster than this (rad/s; 35 rad/s is
            2000 deg/s, the range of common MEMS gyros) are spikes: rejected, counted.
        imu_max_acceleration: accelerometer samples above this (m/s^2, 16 g) are
            spikes: rejected, counted.
        pose_max_variance: a localiser pose (``pose`` source) whose x, y or yaw variance (m^2, rad^2)
            is NaN, negative or above this is rejected (counted); like ``odom_max_pose_variance`` the
            default only catches "unknown" markers. PoseStamped carries no covariance: always accepted.
    """

    priority: tuple[str, ...] = option(("odom", "tf", "imu_gps", "imu_speed"), "egomotion_sources",
                                       "ego-motion sources in priority order (odom, odom_twist, tf, imu_gps, "
                                       "imu_speed, pose)", read_only="the sources' subscriptions are made at start",
                                       cli="--egomotion", to_param=",".join, from_param=parse_sources)
    odom_frame: str = option(ODOM_FRAME, "odom_frame", "odometry frame of the tf ego-motion source (REP 105)",
                             read_only="the ego-motion provider is built at start")
    base_frame: str = option(BASE_FRAME, "base_frame", "vehicle frame (REP 105); extrinsics are looked up from it",
                             read_only="the camera extrinsics are looked up once")
    buffer_s: float = 30.0
    max_gap_s: float = 0.5
    time_jump_tolerance_s: float = 1.0
    stale_timeout_s: float = 1.0
    odom_max_pose_variance: float = 1e6
    imu_rotation: str = "auto"
    R_base_imu: tuple = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))
    gps_origin: tuple[float, float, float] | None = None
    gps_fit: str = "imu"
    gps_window_s: float = 4.0
    gps_imu_window_s: float = 10.0
    gps_min_fixes: int = 4
    gps_max_variance: float = 100.0
    gps_min_status: int = 0
    quaternion_norm_tolerance: float = QUATERNION_NORM_TOLERANCE
    imu_max_angular_velocity: float = 35.0
    imu_max_acceleration: float = 160.0
    pose_max_variance: float = 1e6

    def __post_init__(self):
        object.__setattr__(self, "priority", tuple(self.priority))
        unknown = [s for s in self.priority if s not in SOURCES]
        if unknown or not self.priority:
            raise ValueError(f"priority must be a non-empty list of {SOURCES}, got {self.priority}")
        if self.imu_rotation not in ("gyro", "orientation", "auto"):
            raise ValueError(f"imu_rotation must be gyro|orientation|auto, got {self.imu_rotation!r}")
        if self.gps_fit not in ("imu", "poly"):
            raise ValueError(f"gps_fit must be imu|poly, got {self.gps_fit!r}")
        for name in ("buffer_s", "max_gap_s", "time_jump_tolerance_s", "stale_timeout_s", "gps_window_s",
                     "gps_imu_window_s", "quaternion_norm_tolerance", "imu_max_angular_velocity",
                     "imu_max_acceleration"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        R = np.asarray(self.R_base_imu, dtype=np.float64)
        if R.shape != (3, 3) or not np.allclose(R @ R.T, np.eye(3), atol=1e-6):
            raise ValueError("R_base_imu must be a (3,3) rotation matrix")


@dataclass(frozen=True)
class RelativePose:
    """Answer to :meth:`EgoMotionProvider.relative_pose`.

    Attributes:
        status: OK, NOT_YET (ask again later) or NEVER.
        stamp_target_ns / stamp_source_ns: the queried image stamps.
        source: the source that answered (``odom``, ``odom_twist``, ``tf``,
            ``imu_gps``, ``imu_speed``, ``pose``), or the one waited for / last tried.
        T_target_source: (4,4) camera optical frame at target <- at source
            (``inv(T_odom_cam(t)) @ T_odom_cam(s)``), metres; None unless OK.
        T_base_target_source: (4,4) same motion in base_link; None unless OK.
        reason: why not OK ("" when OK).
        attempts: ((source, status value, reason), ...) in priority order.
    """

    status: PoseStatus
    stamp_target_ns: int
    stamp_source_ns: int
    source: str | None = None
    T_target_source: np.ndarray | None = None
    T_base_target_source: np.ndarray | None = None
    reason: str = ""
    attempts: tuple = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.status is PoseStatus.OK

    @property
    def translation_m(self) -> float:
        """Distance between the two camera centres, m (nan unless OK)."""
        return float(np.linalg.norm(self.T_target_source[:3, 3])) if self.ok else math.nan

    @property
    def rotation_rad(self) -> float:
        """Rotation angle between the two camera frames, rad (nan unless OK)."""
        if not self.ok:
            return math.nan
        return float(Rotation.from_matrix(self.T_target_source[:3, :3]).magnitude())


def _finite(*arrays) -> bool:
    return all(np.all(np.isfinite(a)) for a in arrays)


class EgoMotionProvider:
    """Buffers odometry / TF / IMU / GPS samples and answers relative camera poses.

    Args:
        config: :class:`EgoMotionConfig`.
        T_base_camera: (4,4) base_link <- camera optical frame; identity (poses
            of the base itself) until :meth:`set_camera_extrinsics` is called.
        transforms: the process's transform lookup (:class:`~mono_depth_ros.tf_buffer.TransformLookup`,
            e.g. the node's ``TfSource``) that the ``tf`` source asks; None: the provider owns a
            :class:`~mono_depth_ros.tf_buffer.TfBuffer` that :meth:`add_transform` fills (the bag path).
            :meth:`reset` clears it either way: a time jump clears transforms in this one place.
    """

    def __init__(self, config: EgoMotionConfig | None = None, T_base_camera: np.ndarray | None = None,
                 transforms: "_tf.TransformLookup | None" = None):
        self.config = config or EgoMotionConfig()
        c = self.config
        self._lock = threading.RLock()
        self._counters: Counter = Counter()
        self._max_gap = to_ns(c.max_gap_s)
        self._R_base_imu = Rotation.from_matrix(np.asarray(c.R_base_imu, dtype=np.float64))
        self._odom_pose = TimeSeries(7)
        self._odom_twist = TimeSeries(6)
        self.owns_transforms = transforms is None
        self.transforms = _tf.TfBuffer(cache_time_s=c.buffer_s) if transforms is None else transforms
        self._gyro = TimeSeries(3)
        self._imu_orientation = TimeSeries(4)
        self._accel = TimeSeries(3)
        self._pose = TimeSeries(7)
        self._pose_frame: str | None = None
        self._gps = GpsTrack(to_ns(c.gps_window_s), c.gps_min_fixes, c.gps_origin, to_ns(c.gps_imu_window_s))
        self._streams = {"odom_pose": self._odom_pose, "odom_twist": self._odom_twist,
                         "imu_gyro": self._gyro,
                         "imu_orientation": self._imu_orientation, "imu_accel": self._accel,
                         "gps": self._gps.series, "pose": self._pose}
        imu = ImuRotation(self._gyro, self._imu_orientation, self._max_gap, c.imu_rotation)
        twist = TwistSource(self._odom_twist, self._max_gap)
        self._sources = {
            "odom": OdomSource(PoseSource(self._odom_pose, self._max_gap), twist),
            "odom_twist": twist,
            "tf": TransformSource(self.transforms, c.odom_frame, c.base_frame),
            "imu_speed": ImuSpeedSource(imu, self._odom_twist, self._max_gap),
            # The GPS track is smoothed over a window, so fixes may be sparser
            # than max_gap; its own window check applies instead.
            "imu_gps": ImuGpsSource(imu, self._gps, self._accel, c.gps_fit),
            "pose": PoseSource(self._pose, self._max_gap),
        }
        # Which streams each source reads (for the stale check).
        self._source_streams = {
            "odom": ("odom_pose", "odom_twist"), "odom_twist": ("odom_twist",), "tf": (),
            "imu_speed": ("imu_gyro", "imu_orientation", "odom_twist"),
            "imu_gps": ("imu_gyro", "imu_orientation", "gps"), "pose": ("pose",),
        }
        self._newest_ns: int | None = None
        self._stream_newest: dict[str, int] = {}
        self.epoch = 0  # incremented on every reset (FrameSelector watches it)
        self.T_base_camera = np.eye(4)
        if T_base_camera is not None:
            self.set_camera_extrinsics(T_base_camera)

    # ------------------------------------------------------------ configuration
    def set_camera_extrinsics(self, T_base_camera: np.ndarray) -> None:
        """Set T_base_camera: (4,4) base_link <- camera optical frame (REP 103)."""
        T = np.asarray(T_base_camera, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"T_base_camera must be a finite (4,4) matrix, got shape {T.shape}")
        with self._lock:
            self.T_base_camera = T.copy()

    @property
    def counters(self) -> dict[str, int]:
        """Snapshot of diagnostic counters (received / rejected / reset / query outcomes)."""
        with self._lock:
            return dict(self._counters)

    def reset(self, reason: str = "requested") -> None:
        """Clear every buffer, and the dynamic transforms of a lookup this provider owns (the bag path; a
        lookup handed in is cleared by its owner: the node's time-jump handler). The GPS origin is kept."""
        with self._lock:
            for s in self._streams.values():
                s.clear()
            if self.owns_transforms:
                self.transforms.clear()
            self._pose_frame = None
            self._newest_ns = None
            self._stream_newest.clear()
            self.epoch += 1
            self._counters["resets"] += 1
            log.warning("ego-motion buffers reset: %s", reason)

    # ------------------------------------------------------------ feeding
    def _admit(self, stream: str, stamp_ns: int) -> bool:
        """Time bookkeeping shared by every input: backwards jumps reset, old samples drop.

        A backwards jump is judged per stream (a sample older than its own stream's newest
        by more than the tolerance): a busy executor may deliver different topics out of
        order, which is no time jump.
        """
        c = self.config
        own = self._stream_newest.get(stream)
        if own is not None and stamp_ns < own - to_ns(c.time_jump_tolerance_s):
            self._counters["time_jumps"] += 1
            self.reset(f"time jumped backwards by {(own - stamp_ns) / NS_PER_S:.3f} s "
                       f"on {stream} (bag loop or sim-time reset?)")
            own = None
        if own is None or stamp_ns > own:
            self._stream_newest[stream] = stamp_ns
        if self._newest_ns is None or stamp_ns > self._newest_ns:
            self._newest_ns = stamp_ns
            keep_from = stamp_ns - to_ns(c.buffer_s)
            for s in self._streams.values():
                s.prune(keep_from)
        return True

    def _insert(self, stream: str, series: TimeSeries, stamp_ns: int, value) -> bool:
        if stamp_ns < self._newest_ns - to_ns(self.config.buffer_s):
            self._counters[f"{stream}_too_old"] += 1
            return False
        result = series.insert(stamp_ns, value)
        if result == "duplicate":
            self._counters[f"{stream}_duplicate"] += 1
            return False
        if result == "out_of_order":
            self._counters[f"{stream}_out_of_order"] += 1
        return True

    def add_odometry(self, sample: OdometrySample) -> bool:
        """Feed one odometry sample (pose of base in odom + base-frame twist).

        Returns True when anything entered a buffer. Non-finite pose data or a
        non-unit quaternion never enters the pose buffer (counted); the twist is still
        used when finite. A pose whose x/y/yaw covariance is NaN or above
        ``odom_max_pose_variance`` is unusable (counted) and only its twist is kept.
        """
        with self._lock:
            self._counters["odom_received"] += 1
            qtol = self.config.quaternion_norm_tolerance
            pose_finite = _finite(sample.position) and quaternion_is_unit(sample.orientation, qtol)
            twist_finite = _finite(sample.linear_velocity, sample.angular_velocity)
            if not pose_finite:
                self._counters["odom_rejected_bad_pose"] += 1
                if _finite(sample.position, sample.orientation):
                    self._counters["odom_rejected_non_unit_quaternion"] += 1
            if not twist_finite:
                self._counters["odom_rejected_bad_twist"] += 1
            if not pose_finite and not twist_finite:
                return False
            self._admit("odom", sample.stamp_ns)
            entered = False
            if twist_finite:
                entered |= self._insert("odom_twist", self._odom_twist, sample.stamp_ns,
                                        np.concatenate([sample.linear_velocity, sample.angular_velocity]))
            if pose_finite:
                var = np.diag(sample.pose_covariance)[[0, 1, 5]]
                if not (np.all(np.isfinite(var)) and np.all(var >= 0)
                        and np.all(var <= self.config.odom_max_pose_variance)):
                    self._counters["odom_pose_unusable_covariance"] += 1
                else:
                    q = sample.orientation / np.linalg.norm(sample.orientation)
                    entered |= self._insert("odom_pose", self._odom_pose, sample.stamp_ns,
                                            np.concatenate([sample.position, q]))
            return entered

    def add_transform(self, sample: TransformSample, static: bool = False) -> bool:
        """Feed one TF sample (``/tf``, or ``/tf_static`` with ``static=True``) into the owned transform buffer.

        Any link counts (odom -> base_footprint -> base_link -> camera ...), except links into
        ``odom_frame`` (a localiser's map -> odom correction is no odometry: counted, ignored). Bad values
        are counted and refused. With a shared lookup (``transforms=`` given) the sample only drives the
        time bookkeeping (time jumps, staleness): whoever owns that lookup fills it.
        """
        with self._lock:
            if sample.child_frame.lstrip("/") == self.config.odom_frame:
                self._counters["tf_ignored_other_frames"] += 1
                return False
            self._counters["tf_static_received" if static else "tf_received"] += 1
            if not (_finite(sample.translation)
                    and quaternion_is_unit(sample.rotation, self.config.quaternion_norm_tolerance)):
                self._counters["tf_rejected_bad_values"] += 1
                return False
            if not static:
                self._admit("tf", sample.stamp_ns)
                if sample.stamp_ns < self._newest_ns - to_ns(self.config.buffer_s):
                    self._counters["tf_too_old"] += 1
                    return False
            if not self.owns_transforms:
                return True
            return self.transforms.set_transform(sample, static=static)

    def add_pose(self, sample: PoseSample) -> bool:
        """Feed one localiser pose (T_frame_base; the ``pose`` source). Returns True when it entered the buffer.

        Refused and counted: non-finite values or a non-unit quaternion (``pose_rejected_bad_values``), an
        x/y/yaw variance that is NaN, negative or above ``pose_max_variance`` (``pose_rejected_covariance``),
        and poses in another frame than the first one seen since the last reset (``pose_ignored_other_frame``:
        relative motion needs one world frame).
        """
        with self._lock:
            self._counters["pose_received"] += 1
            if not (_finite(sample.position) and quaternion_is_unit(sample.orientation, self.config.quaternion_norm_tolerance)):
                self._counters["pose_rejected_bad_values"] += 1
                return False
            if sample.covariance is not None:
                var = np.diag(sample.covariance)[[0, 1, 5]]
                if not (np.all(np.isfinite(var)) and np.all(var >= 0) and np.all(var <= self.config.pose_max_variance)):
                    self._counters["pose_rejected_covariance"] += 1
                    return False
            if self._pose_frame not in (None, sample.frame_id):
                self._counters["pose_ignored_other_frame"] += 1
                return False
            self._admit("pose", sample.stamp_ns)
            self._pose_frame = sample.frame_id
            q = sample.orientation / np.linalg.norm(sample.orientation)
            return self._insert("pose", self._pose, sample.stamp_ns, np.concatenate([sample.position, q]))

    def add_imu(self, sample: ImuSample) -> bool:
        """Feed one IMU sample (vectors rotated into base_link by ``R_base_imu``).

        Gyro, accelerometer and orientation are validated separately: a bad
        part is counted and dropped, the good parts are kept.
        """
        with self._lock:
            self._counters["imu_received"] += 1
            c = self.config
            gyro_ok = _finite(sample.angular_velocity)
            accel_ok = _finite(sample.linear_acceleration)
            orient_ok = sample.orientation is not None and quaternion_is_unit(sample.orientation, c.quaternion_norm_tolerance)
            if not gyro_ok:
                self._counters["imu_rejected_bad_gyro"] += 1
            elif np.linalg.norm(sample.angular_velocity) > c.imu_max_angular_velocity:
                gyro_ok = False
                self._counters["imu_rejected_gyro_spike"] += 1
            if not accel_ok:
                self._counters["imu_rejected_bad_accel"] += 1
            elif np.linalg.norm(sample.linear_acceleration) > c.imu_max_acceleration:
                accel_ok = False
                self._counters["imu_rejected_accel_spike"] += 1
            if sample.orientation is not None and not orient_ok:
                self._counters["imu_rejected_bad_orientation"] += 1
            if not (gyro_ok or accel_ok or orient_ok):
                return False
            self._admit("imu", sample.stamp_ns)
            entered = False
            if gyro_ok:
                entered |= self._insert("imu_gyro", self._gyro, sample.stamp_ns,
                                        self._R_base_imu.apply(np.array(sample.angular_velocity)))
            if accel_ok:
                entered |= self._insert("imu_accel", self._accel, sample.stamp_ns,
                                        self._R_base_imu.apply(np.array(sample.linear_acceleration)))
            if orient_ok:
                # R_world_base = R_world_imu @ R_imu_base
                R_w_b = Rotation.from_quat(np.array(sample.orientation)) * self._R_base_imu.inv()
                entered |= self._insert("imu_orientation", self._imu_orientation, sample.stamp_ns,
                                        R_w_b.as_quat())
            return entered

    def add_gps(self, sample: GpsFix) -> bool:
        """Feed one GPS fix; no-fix, non-finite or too-uncertain fixes are ignored (counted)."""
        with self._lock:
            self._counters["gps_received"] += 1
            if sample.status < self.config.gps_min_status:
                self._counters["gps_ignored_no_fix"] += 1
                return False
            if not _finite(np.array([sample.latitude, sample.longitude, sample.altitude])) or \
                    abs(sample.latitude) > 90.0 or abs(sample.longitude) > 180.0:
                self._counters["gps_rejected_bad_values"] += 1
                return False
            if sample.position_covariance_type != GPS_COVARIANCE_TYPE_UNKNOWN:
                var = np.diag(sample.position_covariance)[:2]
                if not (np.all(np.isfinite(var)) and np.all(var <= self.config.gps_max_variance)):
                    self._counters["gps_rejected_covariance"] += 1
                    return False
            self._admit("gps", sample.stamp_ns)
            if sample.stamp_ns < self._newest_ns - to_ns(self.config.buffer_s):
                self._counters["gps_too_old"] += 1
                return False
            result = self._gps.add_fix(sample.stamp_ns, sample.latitude, sample.longitude, sample.altitude)
            if result == "duplicate":
                self._counters["gps_duplicate"] += 1
                return False
            if result == "out_of_order":
                self._counters["gps_out_of_order"] += 1
            return True

    # ------------------------------------------------------------ queries
    def _stale(self, name: str) -> bool:
        newest = [self._streams[s].newest for s in self._source_streams[name] if len(self._streams[s])]
        if name == "tf":   # fed here (bag path) or seen by the lookup's last extrapolation error (shared lookup)
            newest = [n for n in (self._stream_newest.get("tf"), self._sources["tf"].newest_ns) if n]
        if not newest or self._newest_ns is None:
            return False
        return max(newest) < self._newest_ns - to_ns(self.config.stale_timeout_s)

    def _query_source(self, name: str, t_target: int, t_source: int):
        """(Coverage, T_bt_bs | None, reported source name)."""
        src = self._sources[name]
        try:
            if name == "odom":
                cov, T, used = src.query(t_target, t_source)
            else:
                (cov, T), used = src.query(t_target, t_source), name
        except ValueError as exc:
            # Absurd but finite inputs (rates of 1e308, found by fuzzing) can overflow an integration
            # inside scipy (zero-norm quaternions): this source gives no pose for the pair.
            return Coverage(PoseStatus.NEVER, f"{name}: input too large to integrate ({exc})"), None, name
        if cov.status is PoseStatus.NOT_YET and self._stale(name):
            cov = Coverage(PoseStatus.NEVER, "stale source")
        return cov, T, used

    def relative_pose(self, stamp_target_ns: int, stamp_source_ns: int,
                      sources: tuple[str, ...] | list[str] | None = None) -> RelativePose:
        """Relative camera pose T_camtarget_camsource between two image stamps.

        Args:
            stamp_target_ns / stamp_source_ns: image stamps, int ns.
            sources: override ``config.priority`` for this query.
        Returns:
            :class:`RelativePose` with ``T_target_source`` (4,4) in the camera
            optical frame = ``inv(T_base_cam) @ T_bt_bs @ T_base_cam``.
        """
        order = tuple(sources) if sources is not None else self.config.priority
        for s in order:
            if s not in SOURCES:
                raise ValueError(f"unknown ego-motion source {s!r}; choose from {SOURCES}")
        t, s_ = int(stamp_target_ns), int(stamp_source_ns)
        with self._lock:
            attempts = []
            result = None
            for name in order:
                cov, T_b, used = self._query_source(name, t, s_)
                attempts.append((used, cov.status.value, cov.reason))
                if cov.status is PoseStatus.OK:
                    with np.errstate(all="ignore"):
                        T_cam = invert_T(self.T_base_camera) @ T_b @ self.T_base_camera
                    if not (np.all(np.isfinite(T_b)) and np.all(np.isfinite(T_cam))):
                        # Finite but absurd inputs (|x| ~ 1e308 m, 1e308 m/s) overflow in the
                        # interpolation: never hand out a non-finite pose; try the next source.
                        self._counters[f"query_non_finite_{used}"] += 1
                        attempts[-1] = (used, PoseStatus.NEVER.value, "non-finite pose (input values out of range)")
                        continue
                    result = RelativePose(PoseStatus.OK, t, s_, used, T_cam, T_b, "", tuple(attempts))
                    break
                if cov.status is PoseStatus.NOT_YET:
                    result = RelativePose(PoseStatus.NOT_YET, t, s_, used, reason=f"{used}: {cov.reason}",
                                          attempts=tuple(attempts))
                    break
            if result is None:
                result = RelativePose(PoseStatus.NEVER, t, s_, attempts[-1][0] if attempts else None,
                                      reason="; ".join(f"{a}: {r}" for a, _, r in attempts),
                                      attempts=tuple(attempts))
            key = f"query_{result.status.value}" + (f"_{result.source}" if result.ok else "")
            self._counters[key] += 1
            return result
