"""Ego-motion from odometry, TF, IMU and GPS -> metric relative camera poses at image stamps.

ROS-free core (no rclpy): the node converts messages with the ``from_*``
functions, feeds an :class:`EgoMotionProvider`, and asks it (or a
:class:`FrameSelector`) for ``T_target_source`` between image stamps.
See docs/egomotion.md.
"""
from .provider import SOURCES, EgoMotionConfig, EgoMotionProvider, RelativePose, parse_sources
from .samples import (GpsFix, ImuSample, OdometrySample, TransformSample, from_imu_msg,
                      from_navsatfix_msg, from_odometry_msg, from_tf_message, from_transform_stamped,
                      pose_from_pose_msg, stamp_to_ns)
from .selector import FrameSelection, FrameSelector, GatingConfig
from .timeseries import PoseStatus

__all__ = [
    "SOURCES", "parse_sources", "EgoMotionConfig", "EgoMotionProvider", "RelativePose", "PoseStatus",
    "FrameSelector", "FrameSelection", "GatingConfig",
    "OdometrySample", "TransformSample", "ImuSample", "GpsFix",
    "from_odometry_msg", "from_transform_stamped", "from_tf_message", "from_imu_msg",
    "from_navsatfix_msg", "pose_from_pose_msg", "stamp_to_ns",
]
