"""Feeding the adaptation engine: one dispatch used by the live node and by the bag tools.

:class:`AdaptationFeed` is an :class:`~mono_depth_ros.egomotion.feed.EgoMotionFeed`
(the one message -> :class:`EgoMotionProvider` / :class:`FrameSelector` path,
shared with offline training) plus an :class:`AdaptationEngine`; callers hand
it messages (rclpy or rosbags objects: the converters are duck-typed) and
camera frames. Extrinsics come from static transforms (base frame <- camera
optical frame).
"""
from __future__ import annotations

import logging

import numpy as np

from mono_depth_ros.egomotion import EgoMotionConfig, GatingConfig
from mono_depth_ros.egomotion.feed import EgoMotionFeed

from .engine import AdaptationEngine, AdaptConfig

__all__ = ["AdaptationFeed"]

log = logging.getLogger(__name__)


class AdaptationFeed(EgoMotionFeed):
    """Messages in, training steps out. See module docstring."""

    def __init__(self, model, adapt: AdaptConfig | None = None, ego: EgoMotionConfig | None = None,
                 gating: GatingConfig | None = None, on_weights=None, anchors=None):
        super().__init__(ego, gating)
        self.engine = AdaptationEngine(model, self.selector, adapt, on_weights, anchors)

    def reset_time(self, reason: str) -> None:
        """Time jumped (``/clock`` or stamps going backwards, or far forwards): forget buffered
        motion and the frame history, so no pose and no frame pair spans the jump."""
        super().reset_time(reason)
        self.engine.clear_frames()

    # ------------------------------------------------------------- frames
    def on_frame(self, stamp_ns: int, frame_id: str, rgb: np.ndarray, K: np.ndarray) -> bool:
        """Offer a camera frame for training. False (not added) while extrinsics are unknown."""
        if not self.camera_ready(frame_id):
            return False
        self.engine.add_frame(stamp_ns, rgb, K)
        return True

    def step(self):
        return self.engine.step()

    def stats(self) -> dict:
        out = self.engine.stats()
        out.update(self.egomotion_stats())
        return out
