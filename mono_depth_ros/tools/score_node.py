"""``depth_scorer``: scores the depth node's output against a ground-truth depth topic.

A tool, not part of the vehicle's node: synthetic drives and datasets carry ``depth_gt``, a vehicle
does not. Subscribes to ``depth`` (32FC1, as the node publishes it) and ``depth_gt`` (32FC1 metres
or 16UC1 millimetres), pairs them by header stamp (:class:`mono_depth_ros.metrics.PrequentialScorer`, the scorer ``mono-depth adapt`` uses)
and publishes one ``diagnostic_msgs/DiagnosticArray`` per scored frame on ``depth/metrics`` with the
keys ``abs_rel``, ``sq_rel``, ``rmse``, ``a1``, ``scale_ratio`` (metric: no median scaling) and
``frames`` (frames scored so far); its header is that of the message that completed the pair
(same stamp on both). A bag loop or seek needs no reset: pairs are matched by exact stamp and at
most ``max_pending`` unmatched images wait per topic. The running (prequential) mean
is logged every ``log_every`` frames and at shutdown. The node publishes a frame's depth before
adaptation learns from the frame, so the figures are prequential.

Threads: everything runs on the executor's one thread.

Run: ``ros2 run mono_depth_ros depth_scorer --ros-args -r depth_gt:=/camera/depth_gt`` or
``python -m mono_depth_ros.tools.score_node --ros-args ...``.
"""
from __future__ import annotations

import sys

import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from mono_depth_ros.msgconv import depth_image_to_metres, stamp_to_ns
from mono_depth_ros.metrics import PrequentialScorer

__all__ = ["DepthScorer", "main"]

#: Matches the node's reliable depth output; ground truth as the bag replays it.
_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


class DepthScorer(Node):
    """Pairs ``depth`` with ``depth_gt`` by stamp and publishes per-frame metrics on ``depth/metrics``."""

    def __init__(self, **kwargs):
        super().__init__("depth_scorer", **kwargs)
        self.log_every = int(self.declare_parameter("log_every", 50).value)
        self.scorer = PrequentialScorer(keep=int(self.declare_parameter("max_pending", 30).value))
        self.pub = self.create_publisher(DiagnosticArray, "depth/metrics", 10)
        self.create_subscription(Image, "depth", self._on_depth, _QOS)
        self.create_subscription(Image, "depth_gt", self._on_gt, _QOS)
        self.get_logger().info("depth scorer ready: depth + depth_gt -> depth/metrics")

    def _decode(self, msg):
        try:
            return depth_image_to_metres(msg)
        except ValueError as exc:
            self.get_logger().warning(str(exc), throttle_duration_sec=5.0)
            return None

    def _on_depth(self, msg: Image) -> None:
        depth = self._decode(msg)
        if depth is not None:
            self._publish(msg.header, self.scorer.add_prediction(stamp_to_ns(msg.header.stamp), depth))

    def _on_gt(self, msg: Image) -> None:
        depth = self._decode(msg)
        if depth is not None:
            self._publish(msg.header, self.scorer.add_ground_truth(stamp_to_ns(msg.header.stamp), depth))

    def _publish(self, header, m) -> None:
        if m is None:
            return
        arr = DiagnosticArray()
        arr.header = header
        st = DiagnosticStatus(name=f"{self.get_name()}: depth metrics against depth_gt "
                                   "(prequential: scored as published, before learning the frame)")
        st.values = [KeyValue(key=k, value=f"{m[k]:.5f}") for k in PrequentialScorer.KEYS]
        st.values.append(KeyValue(key="frames", value=str(self.scorer.frames)))
        arr.status = [st]
        self.pub.publish(arr)
        if self.log_every > 0 and self.scorer.frames % self.log_every == 0:
            self.log_mean()

    def log_mean(self) -> None:
        s = self.scorer
        if s.frames:
            self.get_logger().info(f"prequential over {s.frames} frames: AbsRel {s.mean['abs_rel']:.3f}, "
                                   f"d<1.25 {s.mean['a1']:.3f}, scale {s.mean['scale_ratio']:.3f}")


def main(args: list[str] | None = None) -> int:
    from mono_depth_ros.ros.domain import exit_if_invalid_domain_id
    exit_if_invalid_domain_id("depth_scorer")
    rclpy.init(args=args)
    node = DepthScorer()
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.log_mean()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
