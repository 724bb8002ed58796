"""Messages in, gated relative camera poses out: the one dispatch from odometry/TF/IMU/GPS messages
to an :class:`EgoMotionProvider` and its :class:`FrameSelector`.

Used by the live node and ``mono-depth adapt`` (through
:class:`mono_depth_ros.adapt.session.AdaptationSession`, which adds the adaptation
engine) and by offline training (:mod:`mono_depth_ros.learning.egoposes`), so
that every tool gets its training poses from the same code. Callers hand it
messages (rclpy or rosbags objects: the converters are duck-typed).

Transforms have one home per process, a :class:`~mono_depth_ros.tf_buffer.TransformLookup`: the node
passes its own (``transforms=node_tf``, fed by its one ``/tf`` subscription); without one the feed's
provider owns a :class:`~mono_depth_ros.tf_buffer.TfBuffer` that :meth:`EgoMotionFeed.on_tf` and
:meth:`EgoMotionFeed.on_tf_static` fill (the bag path). The ``tf`` ego-motion source and the camera
extrinsics ``T_base_camera`` (base frame <- the image's ``header.frame_id``) both come from that lookup,
unless :meth:`EgoMotionFeed.set_extrinsics` sets them.
"""
from __future__ import annotations

import logging
from functools import partial

import numpy as np

from .. import tf_buffer as _tf
from ..conventions import BASE_FRAME, Topics
from .provider import EgoMotionConfig, EgoMotionProvider
from .samples import MOTION_INPUTS, from_tf_message
from .selector import FrameSelector, GatingConfig

__all__ = ["EgoMotionFeed"]

log = logging.getLogger(__name__)


class EgoMotionFeed:
    """Owns an :class:`EgoMotionProvider` and a :class:`FrameSelector`; dispatches messages to them.

    Args:
        ego: provider configuration (source priority, buffers, ...).
        gating: the selector's motion thresholds.
        transforms: the process's transform lookup (the node's ``TfSource``); None: the provider owns a
            ``TfBuffer`` filled by :meth:`on_tf` / :meth:`on_tf_static`.
    """

    def __init__(self, ego: EgoMotionConfig | None = None, gating: GatingConfig | None = None,
                 transforms: "_tf.TransformLookup | None" = None):
        self.provider = EgoMotionProvider(ego or EgoMotionConfig(), transforms=transforms)
        self.selector = FrameSelector(self.provider, gating or GatingConfig())
        self.camera_frame: str | None = None
        self.have_extrinsics = False
        self.extrinsics_error = ""          # why the last extrinsics lookup failed

    # ------------------------------------------------------------- motion
    def on_message(self, kind: str, msg) -> None:
        """One ego-motion message of ``kind`` (a key of :data:`~mono_depth_ros.egomotion.samples.MOTION_INPUTS`)."""
        spec = MOTION_INPUTS[kind]
        add = getattr(self.provider, spec.add)
        for sample in spec.convert(msg):
            add(sample)

    def on_odometry(self, msg) -> None:
        self.on_message("odometry", msg)

    def on_imu(self, msg) -> None:
        self.on_message("imu", msg)

    def on_gps(self, msg) -> None:
        self.on_message("gps", msg)

    def bag_handlers(self) -> dict:
        """Bag topic -> handler for every ego-motion input and ``/tf_static``: what a bag feeder dispatches."""
        out = {spec.bag_topic: partial(self.on_message, kind) for kind, spec in MOTION_INPUTS.items()}
        out[Topics.BAG_TF_STATIC] = self.on_tf_static
        return out

    @property
    def transforms(self) -> "_tf.TransformLookup":
        """The transform lookup the ``tf`` source and the extrinsics come from."""
        return self.provider.transforms

    def on_tf(self, msg) -> None:
        self.on_message("tf", msg)

    def on_tf_static(self, msg) -> None:
        for t in from_tf_message(msg):
            self.provider.add_transform(t, static=True)
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
            self.set_extrinsics(self.transforms.lookup(base, self.camera_frame, 0))
            log.info("camera extrinsics %s <- %s from the transform lookup", base, self.camera_frame)
            self.extrinsics_error = ""
        except Exception as exc:  # TfError, or tf2_ros's exceptions: the text names the missing link
            self.extrinsics_error = f"no transform {base} <- {self.camera_frame} (camera extrinsics): {exc}"

    def reset_time(self, reason: str) -> None:
        """Time jumped: forget buffered motion, the dynamic transforms of an owned lookup (a shared one is
        cleared by its owner) and the selector's frame history."""
        self.provider.reset(reason)   # bumps the epoch: the selector forgets its stamps

    # ------------------------------------------------------------- frames
    def camera_ready(self, frame_id: str) -> bool:
        """Note the camera's frame id (looks its extrinsics up in the transform lookup); True once known."""
        if self.camera_frame != frame_id:
            self.camera_frame = frame_id
            self._update_extrinsics()
        elif not self.have_extrinsics and not self.provider.owns_transforms:
            self._update_extrinsics()     # a shared lookup is filled elsewhere: ask again
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
