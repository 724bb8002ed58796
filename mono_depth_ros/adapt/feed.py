"""Feeding the adaptation engine: one dispatch used by the live node and by the bag tools.

:class:`AdaptationFeed` owns an :class:`EgoMotionProvider`, a :class:`FrameSelector`
and an :class:`AdaptationEngine`; callers hand it messages (rclpy or rosbags
objects: the converters are duck-typed) and camera frames. Extrinsics come from
static transforms (base frame <- camera optical frame).
"""
from __future__ import annotations

import logging

import numpy as np

from mono_depth_ros.conventions import BASE_FRAME
from mono_depth_ros.egomotion import (EgoMotionConfig, EgoMotionProvider, FrameSelector, GatingConfig,
                                      from_imu_msg, from_navsatfix_msg, from_odometry_msg, from_tf_message)
from mono_depth_ros.egomotion.static_tf import lookup_static

from .engine import AdaptationEngine, AdaptConfig

__all__ = ["AdaptationFeed"]

log = logging.getLogger(__name__)


class AdaptationFeed:
    """Messages in, training steps out. See module docstring."""

    def __init__(self, model, adapt: AdaptConfig | None = None, ego: EgoMotionConfig | None = None,
                 gating: GatingConfig | None = None, on_weights=None, anchors=None):
        self.provider = EgoMotionProvider(ego or EgoMotionConfig())
        self.selector = FrameSelector(self.provider, gating or GatingConfig())
        self.engine = AdaptationEngine(model, self.selector, adapt, on_weights, anchors)
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
        """Time jumped (``/clock`` or stamps going backwards, or far forwards): forget buffered
        motion and the frame history, so no pose and no frame pair spans the jump."""
        self.provider.reset(reason)   # bumps the epoch: the selector forgets its stamps
        self.engine.clear_frames()

    # ------------------------------------------------------------- frames
    def on_frame(self, stamp_ns: int, frame_id: str, rgb: np.ndarray, K: np.ndarray) -> bool:
        """Offer a camera frame for training. False (not added) while extrinsics are unknown."""
        if self.camera_frame != frame_id:
            self.camera_frame = frame_id
            self._update_extrinsics()
        if not self.have_extrinsics:
            return False
        self.engine.add_frame(stamp_ns, rgb, K)
        return True

    def step(self):
        return self.engine.step()

    def stats(self) -> dict:
        out = self.engine.stats()
        counters = self.provider.counters
        used = {k.removeprefix("query_ok_"): v for k, v in counters.items() if k.startswith("query_ok_")}
        out["egomotion_source"] = max(used, key=used.get) if used else "none"
        out["egomotion_resets"] = counters.get("resets", 0)
        out["egomotion_time_jumps"] = counters.get("time_jumps", 0)
        # Every sample kept out of the buffers, by kind (e.g. odom_rejected_bad_pose, imu_rejected_gyro_spike,
        # gps_ignored_no_fix, odom_pose_duplicate): what diagnostics show for bad ego-motion input.
        refused = {k: v for k, v in counters.items()
                   if any(w in k for w in ("_rejected", "_ignored_no_fix", "_duplicate", "_too_old"))}
        out["egomotion_rejected"] = sum(v for k, v in refused.items() if "_rejected" in k)
        out["egomotion_out_of_order"] = sum(v for k, v in counters.items() if k.endswith("_out_of_order"))
        out.update({f"egomotion_{k}": v for k, v in sorted(refused.items())})
        return out
