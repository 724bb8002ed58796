"""The node's relative -> metric wiring: :class:`~mono_depth_ros.adapt.scale.OnlineMetricScale` on the
depth node's inference worker.

Parameter ``metric_scale`` (runtime-changeable): ``auto`` (default) = on for networks whose
``output_kind`` is relative (monocular monodepth2, Depth Anything V2 relative); ``online`` = also
for metric networks (a scale correction); ``off`` = never. The metric poses come from the
adaptation session's ego-motion provider (the same odometry/TF/IMU path that training uses); while
the scale is on, the adaptation keeps its ego-motion subscriptions (``NodeAdaptation.want_egomotion``),
so this works whether or not ``adapt`` is on.

Threads: :meth:`NodeMetricScale.apply` and :meth:`NodeMetricScale.on_frame` run on the node's one
inference worker; :meth:`NodeMetricScale.update` on the executor (runtime parameter changes);
:meth:`NodeMetricScale.diagnostics` on the diagnostics timer (the estimator's own lock guards what
the worker and the timer both touch).
"""
from __future__ import annotations

import dataclasses

from mono_depth_ros.adapt.scale import OnlineMetricScale, wants_online_scale
from mono_depth_ros.msgconv import stamp_to_ns

__all__ = ["NodeMetricScale"]


class NodeMetricScale:
    """Scale (and shift) of a relative network's depth, estimated online and applied before publishing.

    Args:
        node: the :class:`~mono_depth_ros.ros.depth_node.DepthNode` (``cfg``, ``tf``, ``report``, logger).
        predictor: the serving :class:`~mono_depth_ros.inference.DepthPredictor` (its ``output_kind``).
        adaptation: the node's :class:`~mono_depth_ros.ros.adaptation.NodeAdaptation`: its session is the
            ego-motion feed (provider, extrinsics); it keeps the ego-motion subscribed while this is on.
    """

    def __init__(self, node, predictor, adaptation):
        self.node = node
        self.adaptation = adaptation
        self.feed = adaptation.session
        self.output_kind = predictor.output_kind
        self.online = OnlineMetricScale(self.feed.provider, self.output_kind)
        self._announced = False
        self.update()
        if self.active:
            node.get_logger().info(f"metric_scale {node.cfg.metric_scale}: the {self.output_kind} depth gets a "
                                   f"scale{' and shift' if self.online.affine else ''} estimated online from "
                                   f"the metric ego-motion (published unscaled until then)")

    def update(self) -> None:
        """After a parameter change: ego-motion subscribed while the scale is on."""
        self.adaptation.want_egomotion(self.active)

    @property
    def active(self) -> bool:
        return wants_online_scale(self.node.cfg.metric_scale, self.output_kind)

    def apply(self, pred):
        """The :class:`~mono_depth_ros.inference.Prediction` with metric depth (unchanged when inactive or
        before the first estimates)."""
        if not self.active:
            return pred
        depth = self.online.apply(pred.depth)
        return pred if depth is None else dataclasses.replace(pred, depth=depth)

    def on_frame(self, header, raw) -> None:
        """Estimate from the network's raw output of this frame (after publishing)."""
        if not self.active:
            return
        if not self.feed.camera_ready(header.frame_id):   # extrinsics from the node's transform lookup
            self.node.report("extrinsics", f"metric scale waits: {self.feed.extrinsics_error}", warn=True)
            return
        self.online.on_frame(stamp_to_ns(header.stamp), raw.rgb, raw.depth, raw.K)
        if not self._announced and self.online.ready:
            self._announced = True
            s = self.online.stats()
            self.node.get_logger().info(f"depth is metric from now on: scale {s['metric_scale']} "
                                        f"(+-{s['metric_scale_std']}), shift {s['metric_shift']}, from "
                                        f"{s['metric_scale_frames']} frame pairs")

    def diagnostics(self) -> dict[str, str]:
        out = {"metric_scale_mode": self.node.cfg.metric_scale, "output_kind": self.output_kind}
        if self.active:
            out.update(self.online.stats())
        return out
