"""Messages in, gated relative camera poses out: the one dispatch from odometry/TF/IMU/GPS messages
to an :class:`EgoMotionProvider` and its :class:`FrameSelector`.

Used by the live node and ``mono-depth adapt`` (through
:class:`mono_depth_ros.adapt.session.AdaptationSession`, which adds the adaptation
engine) and by offline training (:mod:`mono_depth_ros.learning.egoposes`), so
that every tool gets its training poses from the same code. Callers hand it
messages (rclpy or rosbags objects: the converters are duck-typed). The camera
extrinsics ``T_base_camera`` come from static transforms (base frame <- the
image's ``header.frame_id``) or :meth:`EgoMotionFeed.set_extrinsics`.
"""
from __future__ import annotations

import logging

import numpy as np

from ..conventions import BASE_FRAME
from .provider import EgoMotionConfig, EgoMotionProvider
from .samples import from_imu_msg, from_navsatfix_msg, from_odometry_msg, from_tf_message
from .selector import FrameSelector, GatingConfig
from .static_tf import lookup_static

__all__ = ["EgoMotionFeed"]

log = logging.getLogger(__name__)


class EgoMotionFeed:
    """Owns an :class:`EgoMotionProvider` and a :class:`FrameSelector`; dispatches messages to them.

    Args:
        ego: provider configuration (source priority, buffers, ...).
        gating: the selector's motion thresholds.
    """

    def __init__(self, ego: EgoMotionConfig | None = None, gating: GatingConfig | None = None):
        self.provider = EgoMotionProvider(ego or EgoMotionConfig())
        self.selector = FrameSelector(self.provider, gating or GatingConfig())
        self._static: list = []
        self.camera_frame: str | None = None
        self.have_extrinsics = False

    # ------------------------------------------------------------- motion
    def on_odometry(self, msg) -> None:
        self.provider.add_odometry(from_odometry_msg(msg))

    def on_imu(self, msg) -> None:
        self.provider.add_imu(from_imu_msg(msg))

    def on_gps(self, msg) -> None:
        self.provider.add_gps(from_navsatfix_msg(msg))

    def on_tf(self, msg) -> None:
        for t in from_tf_message(msg):
            self.provider.add_transform(t)

    def on_tf_static(self, msg) -> None:
        self._static.extend(from_tf_message(msg))
        self._update_extrinsics()

    def set_extrinsics(self, T_base_camera: np.ndarray) -> None:
        """Set base <- camera optical frame directly (the node does this from its TF buffer)."""
        self.provider.set_camera_extrinsics(T_base_camera)
        self.have_extrinsics = True

    def _update_extrinsics(self) -> None:
        if self.camera_frame is None or self.have_extrinsics:
            return
        base = self.provider.config.base_frame or BASE_FRAME
        try:
            self.set_extrinsics(lookup_static(self._static, base, self.camera_frame))
            log.info("camera extrinsics %s <- %s from /tf_static", base, self.camera_frame)
        except LookupError:
            pass

    def reset_time(self, reason: str) -> None:
        """Time jumped: forget buffered motion and the selector's frame history."""
        self.provider.reset(reason)   # bumps the epoch: the selector forgets its stamps

    # ------------------------------------------------------------- frames
    def camera_ready(self, frame_id: str) -> bool:
        """Note the camera's frame id (looks its extrinsics up in /tf_static); True once they are known."""
        if self.camera_frame != frame_id:
            self.camera_frame = frame_id
            self._update_extrinsics()
        return self.have_extrinsics

    def offer_frame(self, stamp_ns: int, frame_id: str) -> bool:
        """Note a camera frame's stamp for the selector. False (not added) while extrinsics are unknown."""
        if not self.camera_ready(frame_id):
            return False
        self.selector.add_frame(stamp_ns)
        return True

    def egomotion_stats(self) -> dict:
        """Which source answered, resets, and every sample kept out of the buffers, by kind."""
        counters = self.provider.counters
        used = {k.removeprefix("query_ok_"): v for k, v in counters.items() if k.startswith("query_ok_")}
        out = {"egomotion_source": max(used, key=used.get) if used else "none",
               "egomotion_resets": counters.get("resets", 0),
               "egomotion_time_jumps": counters.get("time_jumps", 0)}
        # e.g. odom_rejected_bad_pose, imu_rejected_gyro_spike, gps_ignored_no_fix, odom_pose_duplicate:
        # what diagnostics show for bad ego-motion input.
        refused = {k: v for k, v in counters.items()
                   if any(w in k for w in ("_rejected", "_ignored_no_fix", "_duplicate", "_too_old"))}
        out["egomotion_rejected"] = sum(v for k, v in refused.items() if "_rejected" in k)
        out["egomotion_out_of_order"] = sum(v for k, v in counters.items() if k.endswith("_out_of_order"))
        out.update({f"egomotion_{k}": v for k, v in sorted(refused.items())})
        return out
