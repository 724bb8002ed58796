"""TF for the node: tf2_ros where importable, else the package's own buffer.

:class:`TfSource` is the process's one :class:`~mono_depth_ros.tf_buffer.TransformLookup`: it holds the
node's only ``/tf`` and ``/tf_static`` subscriptions, and both backends answer
:meth:`TfSource.lookup` (``T_target_source`` (4,4) at a stamp) and :meth:`TfSource.lookup_full`
(tf2's ``lookup_transform_full``: camera(t0) -> camera(t1) through ``odom``), or raise
:class:`~mono_depth_ros.tf_buffer.TfError`. Hand it to the ego-motion feed
(``EgoMotionFeed(ego, gating, transforms=tf_source)``) so the ``tf`` source and the camera extrinsics
come from it too. :meth:`TfSource.clear` forgets dynamic transforms of either backend; a time jump calls it
(through ``EgoMotionFeed.reset_time`` when adapting, directly otherwise).

Threads: the ``/tf`` callbacks run in the executor's reentrant group; lookups run on the node's worker or
adaptation thread (a bounded wait there never blocks the executor); both buffers lock internally.
"""
from __future__ import annotations

import time

import numpy as np
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from mono_depth_ros.conventions import to_sec
from mono_depth_ros.egomotion.samples import from_transform_stamped
from mono_depth_ros.tf_buffer import ExtrapolationError, TfBuffer, TfError, quat_to_matrix

__all__ = ["TfSource"]

try:  # A real ROS 2 installation.
    import tf2_ros  # type: ignore
    HAVE_TF2_ROS = True
except ImportError:  # PyPI wheels: no tf2_ros.
    tf2_ros = None
    HAVE_TF2_ROS = False

TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE,
                    history=HistoryPolicy.KEEP_LAST)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL, history=HistoryPolicy.KEEP_LAST)


class TfSource:
    """Uniform lookup over tf2_ros or :class:`TfBuffer` (a :class:`~mono_depth_ros.tf_buffer.TransformLookup`).

    Args:
        node: the node whose executor delivers ``/tf`` (own-buffer backend) or that tf2_ros listens on.
        use_tf2_ros: backend choice; None = tf2_ros where importable.
        cache_time_s: seconds of dynamic transforms kept.
        report: ``report(key, text)`` for problems worth a diagnostic (contradicting parents); None logs them.
    """

    def __init__(self, node: Node, use_tf2_ros: bool | None = None, cache_time_s: float = 10.0,
                 report=None):
        self.node = node
        self._report = report
        self.backend = "tf2_ros" if (HAVE_TF2_ROS if use_tf2_ros is None else use_tf2_ros) else "mono_depth_ros"
        group = ReentrantCallbackGroup()
        if self.backend == "tf2_ros":
            from rclpy.duration import Duration
            # Built without node= on purpose: with it, tf2_ros adds a jump hook of its own on the node's clock
            # (backwards only, fixed 1 s threshold), a second place that clears. Time jumps have one home: the
            # node's _reset_time (from /clock with clock_jump_threshold, or from image stamps) calls clear().
            self._buffer = tf2_ros.Buffer(cache_time=Duration(seconds=cache_time_s))
            self._listener = tf2_ros.TransformListener(self._buffer, node, spin_thread=False)
        else:
            from tf2_msgs.msg import TFMessage
            self.buffer = TfBuffer(cache_time_s=cache_time_s)
            node.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False), TF_QOS, callback_group=group)
            node.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True), TF_STATIC_QOS,
                                     callback_group=group)

    def clear(self) -> None:
        """Forget dynamic transforms, whichever the backend; static ones stay (tf2's BufferCore.clear leaves
        its static caches alone, TfBuffer.clear keeps statics). Called from the node's executor thread on a
        time jump; both buffers lock internally, so the worker's concurrent lookup sees before or after."""
        if self.backend == "tf2_ros":
            self._buffer.clear()
        else:
            self.buffer.clear()

    @property
    def parent_switches(self) -> int:
        """How often a frame was published with another parent than before (own buffer only)."""
        return self.buffer.counters["parent_switches"] if self.backend != "tf2_ros" else 0

    def _on_tf(self, msg, static: bool) -> None:
        switches = self.buffer.counters["parent_switches"]
        for ts in msg.transforms:
            self.buffer.set_transform(from_transform_stamped(ts), static=static)
        if self.buffer.counters["parent_switches"] != switches and self.buffer.last_parent_switch:
            child, old, new = self.buffer.last_parent_switch
            text = (f"TF frame {child!r} is published with contradicting parents {old!r} and {new!r} "
                    f"(two /tf publishers disagree?); using the latest, now {new!r}")
            report = self._report
            if report is not None:
                report("tf_parent", text)
            else:
                self.node.get_logger().error(text, throttle_duration_sec=5.0)

    def lookup(self, target: str, source: str, stamp_ns: int = 0, timeout_s: float = 0.0) -> np.ndarray:
        """T_target_source at ``stamp_ns`` (0: latest), waiting at most ``timeout_s`` for data to arrive."""
        if self.backend == "tf2_ros":
            return self._lookup_tf2(target, source, stamp_ns, timeout_s)
        return self._wait(lambda: self.buffer.lookup(target, source, stamp_ns), timeout_s)

    def lookup_full(self, target: str, target_ns: int, source: str, source_ns: int, fixed: str,
                    timeout_s: float = 0.0) -> np.ndarray:
        """(4,4) T_target(target_ns)_source(source_ns) through ``fixed`` (tf2's ``lookup_transform_full``), waiting
        at most ``timeout_s``. Never extrapolates; an :class:`ExtrapolationError` says whether the time is newer
        (``future``) than the data."""
        if self.backend != "tf2_ros":
            return self._wait(lambda: self.buffer.lookup_full(target, target_ns, source, source_ns, fixed),
                              timeout_s)
        from rclpy.duration import Duration
        from rclpy.time import Time
        try:
            ts = self._buffer.lookup_transform_full(target, Time(nanoseconds=target_ns), source,
                                                    Time(nanoseconds=source_ns), fixed,
                                                    timeout=Duration(seconds=timeout_s))
        except tf2_ros.ExtrapolationException as exc:
            # tf2's text: "... extrapolation into the future/past ...". The only way it says which side.
            text = str(exc)
            future = True if "future" in text else (False if "past" in text else None)
            raise ExtrapolationError(f"no transform {target}({to_sec(target_ns):.3f}s) <- {source}"
                                     f"({to_sec(source_ns):.3f}s) via {fixed}: {text}", future=future) from None
        except (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.TransformException) as exc:
            raise TfError(f"no transform {target}({to_sec(target_ns):.3f}s) <- {source}({to_sec(source_ns):.3f}s) "
                          f"via {fixed}: {exc}") from None
        return _matrix_of(ts)

    @staticmethod
    def _wait(fn, timeout_s: float) -> np.ndarray:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return fn()
            except ExtrapolationError:
                # Data for this stamp may still be in flight: wait, bounded.
                if time.monotonic() >= deadline:
                    raise
            except TfError:
                if time.monotonic() >= deadline:
                    raise
            time.sleep(0.005)

    def _lookup_tf2(self, target, source, stamp_ns, timeout_s):
        from rclpy.duration import Duration
        from rclpy.time import Time
        try:
            ts = self._buffer.lookup_transform(target, source, Time(nanoseconds=stamp_ns),
                                               timeout=Duration(seconds=timeout_s))
        except (tf2_ros.LookupException, tf2_ros.ConnectivityException, tf2_ros.ExtrapolationException,
                tf2_ros.TransformException) as exc:
            raise TfError(f"no transform {target} <- {source} at t={to_sec(stamp_ns):.3f}s: {exc}") from None
        return _matrix_of(ts)


def _matrix_of(ts) -> np.ndarray:
    """geometry_msgs/TransformStamped -> (4,4) T_parent_child."""
    t, q = ts.transform.translation, ts.transform.rotation
    return quat_to_matrix((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
