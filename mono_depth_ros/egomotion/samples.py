"""Plain, ROS-free input samples for ego-motion, and duck-typed message converters.

Every sample is a frozen dataclass with its stamp in integer nanoseconds
(``stamp_ns``), metres, radians, seconds. Quaternions are ``(x, y, z, w)``
(ROS and scipy order). Arrays are float64 numpy arrays.

The ``from_*`` converters read fields by name only, so they accept both rclpy
message objects and rosbags-deserialised messages (same field names; arrays
may be ``array.array``, lists or numpy). They never validate: NaN/inf and
zero-norm quaternions come out as they went in, and
:class:`~mono_depth_ros.egomotion.provider.EgoMotionProvider` rejects and
counts them. Samples compare by identity (``eq=False``: array fields make
``==`` ambiguous); compare fields with numpy. This keeps the core free of rclpy while the live node and the
offline bag tools share one conversion.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# One home for message stamps and pose messages (shared with the node and the bag tools);
# re-exported here under the names the ego-motion API has always had.
from mono_depth_ros.msgconv import pose_to_matrix as pose_from_pose_msg  # noqa: F401
from mono_depth_ros.msgconv import stamp_to_ns

__all__ = [
    "OdometrySample", "TransformSample", "ImuSample", "GpsFix", "PoseSample", "from_pose_stamped_msg",
    "GPS_STATUS_NO_FIX", "GPS_STATUS_FIX", "GPS_COVARIANCE_TYPE_UNKNOWN",
    "stamp_to_ns", "from_odometry_msg", "from_transform_stamped",
    "from_tf_message", "from_imu_msg", "from_navsatfix_msg", "pose_from_pose_msg",
    "MotionInput", "MOTION_INPUTS",
]

#: sensor_msgs/NavSatStatus values (REP 145 / NavSatStatus.msg).
GPS_STATUS_NO_FIX = -1
GPS_STATUS_FIX = 0
#: sensor_msgs/NavSatFix.position_covariance_type value meaning "unknown".
GPS_COVARIANCE_TYPE_UNKNOWN = 0


def _arr(values, shape) -> np.ndarray:
    a = np.asarray(values, dtype=np.float64).reshape(shape)
    a.setflags(write=False)
    return a


def _nan(shape) -> np.ndarray:
    return _arr(np.full(shape, np.nan), shape)


@dataclass(frozen=True, eq=False)
class OdometrySample:
    """One ``nav_msgs/Odometry``: pose of ``child_frame_id`` in ``frame_id``.

    Attributes:
        stamp_ns: header stamp, int ns.
        frame_id / child_frame_id: e.g. ``odom`` / ``base_link``.
        position: (3,) m, ``child`` origin in ``frame_id`` (T_frame_child translation).
        orientation: (4,) quaternion xyzw of T_frame_child.
        linear_velocity: (3,) m/s, expressed in ``child_frame_id`` (nav_msgs convention).
        angular_velocity: (3,) rad/s, expressed in ``child_frame_id``.
        pose_covariance / twist_covariance: (6,6), order x y z roll pitch yaw.
    """

    stamp_ns: int
    position: np.ndarray
    orientation: np.ndarray
    linear_velocity: np.ndarray
    angular_velocity: np.ndarray
    pose_covariance: np.ndarray = field(default_factory=lambda: _arr(np.zeros(36), (6, 6)))
    twist_covariance: np.ndarray = field(default_factory=lambda: _arr(np.zeros(36), (6, 6)))
    frame_id: str = "odom"
    child_frame_id: str = "base_link"

    def __post_init__(self):
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        for name, shape in (("position", (3,)), ("orientation", (4,)), ("linear_velocity", (3,)),
                            ("angular_velocity", (3,)), ("pose_covariance", (6, 6)),
                            ("twist_covariance", (6, 6))):
            object.__setattr__(self, name, _arr(getattr(self, name), shape))


@dataclass(frozen=True, eq=False)
class TransformSample:
    """One ``geometry_msgs/TransformStamped``: T_parent_child at ``stamp_ns``.

    Attributes:
        translation: (3,) m, child origin in parent.
        rotation: (4,) quaternion xyzw.
    """

    stamp_ns: int
    parent_frame: str
    child_frame: str
    translation: np.ndarray
    rotation: np.ndarray

    def __post_init__(self):
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        object.__setattr__(self, "translation", _arr(self.translation, (3,)))
        object.__setattr__(self, "rotation", _arr(self.rotation, (4,)))


@dataclass(frozen=True, eq=False)
class ImuSample:
    """One ``sensor_msgs/Imu`` in its ``frame_id`` (see ``EgoMotionConfig.R_base_imu``).

    Attributes:
        angular_velocity: (3,) rad/s.
        linear_acceleration: (3,) m/s^2 (includes gravity reaction, REP 145).
        orientation: (4,) xyzw or ``None`` when the IMU gives none
            (``orientation_covariance[0] == -1`` or an all-zero quaternion).
        *_covariance: (3,3); ``orientation_covariance`` is None with no orientation.
    """

    stamp_ns: int
    angular_velocity: np.ndarray
    linear_acceleration: np.ndarray
    orientation: np.ndarray | None = None
    angular_velocity_covariance: np.ndarray = field(default_factory=lambda: _arr(np.zeros(9), (3, 3)))
    linear_acceleration_covariance: np.ndarray = field(default_factory=lambda: _arr(np.zeros(9), (3, 3)))
    orientation_covariance: np.ndarray | None = None
    frame_id: str = "imu_link"

    def __post_init__(self):
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        object.__setattr__(self, "angular_velocity", _arr(self.angular_velocity, (3,)))
        object.__setattr__(self, "linear_acceleration", _arr(self.linear_acceleration, (3,)))
        object.__setattr__(self, "angular_velocity_covariance", _arr(self.angular_velocity_covariance, (3, 3)))
        object.__setattr__(self, "linear_acceleration_covariance",
                           _arr(self.linear_acceleration_covariance, (3, 3)))
        if self.orientation is not None:
            object.__setattr__(self, "orientation", _arr(self.orientation, (4,)))
        if self.orientation_covariance is not None:
            object.__setattr__(self, "orientation_covariance", _arr(self.orientation_covariance, (3, 3)))


@dataclass(frozen=True, eq=False)
class GpsFix:
    """One ``sensor_msgs/NavSatFix``.

    Attributes:
        latitude / longitude: degrees (WGS84); altitude: m above the ellipsoid.
        status: NavSatStatus.status (-1 no fix, 0 fix, 1 SBAS, 2 GBAS).
        position_covariance: (3,3) m^2 in ENU; ``position_covariance_type`` 0 = unknown.
    """

    stamp_ns: int
    latitude: float
    longitude: float
    altitude: float
    status: int = GPS_STATUS_FIX
    position_covariance: np.ndarray = field(default_factory=lambda: _arr(np.zeros(9), (3, 3)))
    position_covariance_type: int = GPS_COVARIANCE_TYPE_UNKNOWN
    frame_id: str = "gps"

    def __post_init__(self):
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        for name in ("latitude", "longitude", "altitude"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "status", int(self.status))
        object.__setattr__(self, "position_covariance_type", int(self.position_covariance_type))
        object.__setattr__(self, "position_covariance", _arr(self.position_covariance, (3, 3)))


# ---------------------------------------------------------------- converters

def _xyz(v) -> list[float]:
    return [float(v.x), float(v.y), float(v.z)]


def _xyzw(q) -> list[float]:
    return [float(q.x), float(q.y), float(q.z), float(q.w)]


def from_odometry_msg(msg) -> OdometrySample:
    """``nav_msgs/Odometry`` (rclpy or rosbags) -> :class:`OdometrySample`."""
    return OdometrySample(
        stamp_ns=stamp_to_ns(msg.header.stamp),
        position=_xyz(msg.pose.pose.position),
        orientation=_xyzw(msg.pose.pose.orientation),
        linear_velocity=_xyz(msg.twist.twist.linear),
        angular_velocity=_xyz(msg.twist.twist.angular),
        pose_covariance=np.asarray(msg.pose.covariance, dtype=np.float64).reshape(6, 6),
        twist_covariance=np.asarray(msg.twist.covariance, dtype=np.float64).reshape(6, 6),
        frame_id=str(msg.header.frame_id),
        child_frame_id=str(msg.child_frame_id),
    )


def from_transform_stamped(msg) -> TransformSample:
    """``geometry_msgs/TransformStamped`` -> :class:`TransformSample`."""
    return TransformSample(
        stamp_ns=stamp_to_ns(msg.header.stamp),
        parent_frame=str(msg.header.frame_id),
        child_frame=str(msg.child_frame_id),
        translation=_xyz(msg.transform.translation),
        rotation=_xyzw(msg.transform.rotation),
    )


def from_tf_message(msg) -> list[TransformSample]:
    """``tf2_msgs/TFMessage`` (``/tf`` or ``/tf_static``) -> list of samples."""
    return [from_transform_stamped(t) for t in msg.transforms]


def from_imu_msg(msg) -> ImuSample:
    """``sensor_msgs/Imu`` -> :class:`ImuSample`.

    Orientation is "not provided" when ``orientation_covariance[0] == -1``
    (REP 145) or the quaternion is all zeros.
    """
    ocov = np.asarray(msg.orientation_covariance, dtype=np.float64).reshape(3, 3)
    q = _xyzw(msg.orientation)
    has_orientation = not (ocov[0, 0] == -1.0 or all(c == 0.0 for c in q))
    return ImuSample(
        stamp_ns=stamp_to_ns(msg.header.stamp),
        angular_velocity=_xyz(msg.angular_velocity),
        linear_acceleration=_xyz(msg.linear_acceleration),
        orientation=q if has_orientation else None,
        angular_velocity_covariance=np.asarray(msg.angular_velocity_covariance, dtype=np.float64).reshape(3, 3),
        linear_acceleration_covariance=np.asarray(msg.linear_acceleration_covariance,
                                                  dtype=np.float64).reshape(3, 3),
        orientation_covariance=ocov if has_orientation else None,
        frame_id=str(msg.header.frame_id),
    )


def from_navsatfix_msg(msg) -> GpsFix:
    """``sensor_msgs/NavSatFix`` -> :class:`GpsFix`."""
    return GpsFix(
        stamp_ns=stamp_to_ns(msg.header.stamp),
        latitude=float(msg.latitude),
        longitude=float(msg.longitude),
        altitude=float(msg.altitude),
        status=int(msg.status.status),
        position_covariance=np.asarray(msg.position_covariance, dtype=np.float64).reshape(3, 3),
        position_covariance_type=int(msg.position_covariance_type),
        frame_id=str(msg.header.frame_id),
    )


@dataclass(frozen=True, eq=False)
class PoseSample:
    """One localiser pose (``geometry_msgs/PoseWithCovarianceStamped`` or ``PoseStamped``): the base frame's
    pose in ``frame_id`` (``map`` for AMCL, ``odom``/``map`` for robot_localization).

    Attributes:
        position: (3,) m; orientation: (4,) quaternion xyzw of T_frame_base.
        covariance: (6,6), order x y z roll pitch yaw; None for ``PoseStamped`` (no covariance).
    """

    stamp_ns: int
    position: np.ndarray
    orientation: np.ndarray
    covariance: np.ndarray | None = None
    frame_id: str = "map"

    def __post_init__(self):
        object.__setattr__(self, "stamp_ns", int(self.stamp_ns))
        object.__setattr__(self, "position", _arr(self.position, (3,)))
        object.__setattr__(self, "orientation", _arr(self.orientation, (4,)))
        if self.covariance is not None:
            object.__setattr__(self, "covariance", _arr(self.covariance, (6, 6)))


def from_pose_stamped_msg(msg) -> PoseSample:
    """``geometry_msgs/PoseWithCovarianceStamped`` or ``PoseStamped`` -> :class:`PoseSample` (told apart by field:
    ``msg.pose.pose`` exists only in the one with covariance)."""
    inner = msg.pose
    pose, cov = (inner.pose, inner.covariance) if hasattr(inner, "pose") else (inner, None)
    return PoseSample(stamp_ns=stamp_to_ns(msg.header.stamp), position=_xyz(pose.position),
                      orientation=_xyzw(pose.orientation),
                      covariance=None if cov is None else np.asarray(cov, dtype=np.float64).reshape(6, 6),
                      frame_id=str(msg.header.frame_id))


# ------------------------------------------------------------------ the input table
@dataclass(frozen=True)
class MotionInput:
    """One kind of ego-motion message, and how every feeder hands it to the provider.

    The node, ``mono-depth adapt``/``train`` over bags and ``mono-depth egomotion-eval`` all read
    :data:`MOTION_INPUTS`, so a new input is one row here (plus its provider method and source).

    Attributes:
        kind: short name (``EgoMotionFeed.on_message(kind, msg)``; ``egomotion-eval``'s event kind).
        add: the :class:`~mono_depth_ros.egomotion.provider.EgoMotionProvider` method that takes one sample.
        convert: message (rclpy or rosbags) -> list of samples.
        msg_types: ROS message types accepted (first: the node's default subscription type).
        topic: the node's default topic (relative: namespaces and remapping apply).
        bag_topic: the topic in bags (``conventions.Topics.BAG_*``).
    """

    kind: str
    add: str
    convert: object
    msg_types: tuple
    topic: str
    bag_topic: str


def _rows() -> dict:
    from ..conventions import Topics
    rows = (
        MotionInput("odometry", "add_odometry", lambda m: [from_odometry_msg(m)], ("nav_msgs/msg/Odometry",),
                    Topics.ODOM, Topics.BAG_ODOM),
        # In the node /tf reaches the provider through the node's one TransformLookup (ros/tf.py), not this row.
        MotionInput("tf", "add_transform", from_tf_message, ("tf2_msgs/msg/TFMessage",), "/tf", Topics.BAG_TF),
        MotionInput("imu", "add_imu", lambda m: [from_imu_msg(m)], ("sensor_msgs/msg/Imu",), Topics.IMU,
                    Topics.BAG_IMU),
        MotionInput("gps", "add_gps", lambda m: [from_navsatfix_msg(m)], ("sensor_msgs/msg/NavSatFix",),
                    Topics.GPS, Topics.BAG_GPS),
        MotionInput("pose", "add_pose", lambda m: [from_pose_stamped_msg(m)],
                    ("geometry_msgs/msg/PoseWithCovarianceStamped", "geometry_msgs/msg/PoseStamped"),
                    Topics.POSE, Topics.BAG_POSE),
    )
    return {r.kind: r for r in rows}


#: kind -> :class:`MotionInput`: every ego-motion message kind (``/tf_static`` is not motion: the
#: transform lookup takes it, ``EgoMotionFeed.on_tf_static``).
MOTION_INPUTS: dict[str, MotionInput] = _rows()
