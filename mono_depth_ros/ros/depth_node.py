"""``depth_node``: metric depth images and TF-projected point clouds from one camera.

Wiring only; the work lives in the ROS-free core (inference, pointcloud) and
in :mod:`.conversions`. Threads:

* the executor runs subscription callbacks; the image callback only drops the
  message into a one-element slot (latest frame wins, overwritten frames are
  counted as dropped), so a slow network never builds a backlog;
* one worker thread takes the newest frame, runs the network and publishes;
  its bounded TF wait never blocks the executor.

Run: ``ros2 run mono_depth_ros depth_node --ros-args --params-file config/mono_depth.yaml``
or ``python -m mono_depth_ros.ros.depth_node --ros-args ...``.
"""
from __future__ import annotations

import sys
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.clock import Clock, ClockType, JumpThreshold
from rclpy.duration import Duration
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image, PointCloud2

from mono_depth_ros.adapt.intrinsics import K_from_hfov
from mono_depth_ros.conventions import Topics
from mono_depth_ros.inference import node_predictor
from mono_depth_ros.pointcloud import RayGrid, colorize_depth, depth_to_points, voxel_downsample
from mono_depth_ros.tf_buffer import TfError

from . import params as P
from .conversions import (InputError, camera_info_to_K, compressed_to_rgb, depth_to_msg, image_to_rgb,
                          points_to_cloud, rgb_to_msg, scaled_camera_info, stamp_to_ns)
from .adaptation import NodeAdaptation, resume_state
from .metric_scale import NodeMetricScale  # H4: relative -> metric online
from .problems import ProblemReporter
from .tf import TfSource

__all__ = ["DepthNode", "LatestSlot", "main"]

OUTPUT_QOS = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


class LatestSlot:
    """A one-element mailbox: ``put`` replaces an unconsumed item (and reports it as dropped)."""

    def __init__(self):
        self._item = None
        self._cv = threading.Condition()

    def put(self, item) -> bool:
        """Store ``item``; return True when an older unconsumed item was dropped."""
        with self._cv:
            dropped = self._item is not None
            self._item = item
            self._cv.notify()
        return dropped

    def get(self, timeout: float):
        with self._cv:
            if self._item is None:
                self._cv.wait(timeout)
            item, self._item = self._item, None
        return item


@dataclass
class _Frame:
    msg: object            # Image or CompressedImage
    received: float        # time.monotonic() at arrival


class _Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.received = 0
        self.processed = 0
        self.dropped = 0
        self.input_errors = 0
        self.clouds_dropped = 0
        self.infer_ms: deque[float] = deque(maxlen=50)
        self.done_times: deque[float] = deque(maxlen=50)

    def rate_hz(self) -> float:
        t = list(self.done_times)
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0


class DepthNode(Node):
    """Subscribes to a camera, publishes depth, depth/camera_info, depth/colorized and points."""

    def __init__(self, node_name: str = "mono_depth", **kwargs):
        super().__init__(node_name, **kwargs)
        self.cfg = P.declare(self)  # ConfigError propagates: refuse to start with bad values
        P.install_runtime_validation(self, lambda: self.cfg, self._set_cfg)
        self.stats = _Stats()
        self.problems = ProblemReporter(self.get_logger(), lambda: self.cfg.error_throttle)
        self._info: CameraInfo | None = None
        self._rays = RayGrid()

        configured, weights = node_predictor(self.cfg)
        self.predictor = configured
        resumed = resume_state(self.cfg, self.get_logger())
        if resumed is not None:
            self.predictor, weights = node_predictor(self.cfg, resumed, configured.input_size)
        self.weights_desc = weights

        sensor_group = MutuallyExclusiveCallbackGroup()
        qos = QoSProfile(depth=self.cfg.qos_depth, history=HistoryPolicy.KEEP_LAST,
                         reliability=(ReliabilityPolicy.BEST_EFFORT if self.cfg.qos_reliability == "best_effort"
                                      else ReliabilityPolicy.RELIABLE),
                         durability=qos_profile_sensor_data.durability)
        if self.cfg.use_compressed:
            self.image_topic = self.resolve_topic_name(Topics.IMAGE_COMPRESSED)
            self.create_subscription(CompressedImage, Topics.IMAGE_COMPRESSED, self._on_image, qos,
                                     callback_group=sensor_group)
        else:
            self.image_topic = self.resolve_topic_name(Topics.IMAGE)
            self.create_subscription(Image, Topics.IMAGE, self._on_image, qos, callback_group=sensor_group)
        self.info_topic = self.resolve_topic_name(Topics.CAMERA_INFO)
        self.create_subscription(CameraInfo, Topics.CAMERA_INFO, self._on_info, qos, callback_group=sensor_group)

        self.pub_depth = self.create_publisher(Image, Topics.DEPTH, OUTPUT_QOS)
        self.pub_info = self.create_publisher(CameraInfo, Topics.DEPTH_INFO, OUTPUT_QOS)
        self.pub_color = self.create_publisher(Image, Topics.DEPTH_COLORIZED, OUTPUT_QOS)
        self.pub_points = self.create_publisher(PointCloud2, Topics.POINTS, OUTPUT_QOS)
        self.pub_diag = self.create_publisher(DiagnosticArray, Topics.DIAGNOSTICS, 10)
        self.tf = TfSource(self, report=self.problems.warn)
        self.adaptation = NodeAdaptation(self, self.cfg, self.predictor, configured.model.state_dict(),
                                         self.problems, self.tf)
        self.metric_scale = NodeMetricScale(self, self.predictor, self.adaptation)  # H4: relative -> metric
        # Wall-clock timer: diagnostics keep coming when sim time stops (bag paused / ended).
        self.create_timer(1.0, self._publish_diagnostics, callback_group=MutuallyExclusiveCallbackGroup(),
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._last_stamp = None
        self.time_jumps = 0
        # /clock jumps (use_sim_time: bag loop, bag restarted, seek): reset what is buffered by time.
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=Duration(seconds=self.cfg.clock_jump_threshold),
                          min_backward=Duration(seconds=-self.cfg.clock_jump_threshold), on_clock_change=False),
            post_callback=self._on_clock_jump)

        self._slot = LatestSlot()
        self._stop = threading.Event()
        self._worker = threading.Thread(target=self._run, name="mono_depth_inference", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"depth node ready: {self.cfg.model} {self.predictor.input_size[1]}x{self.predictor.input_size[0]} on "
            f"{self.predictor.device}, weights: {weights}; image: {self.image_topic}, info: {self.info_topic}, "
            f"tf: {self.tf.backend}, target_frame: {self.cfg.target_frame or '(camera frame)'}, "
            f"checkpoints: {self.adaptation.store.dir}")

    # --------------------------------------------------------------- config
    def _set_cfg(self, cfg: P.NodeConfig) -> None:
        """Apply a validated runtime parameter change (executor thread).

        Read-only parameters never arrive here (rclpy refuses them, and their descriptions say why).
        The output, throttle and pacing parameters are read from ``self.cfg`` at each use; the
        adaptation's state is pushed to it. A ValueError refuses the change (``self.cfg`` unchanged).
        """
        old = self.cfg
        if cfg.adapt != old.adapt:
            self.adaptation.set_enabled(cfg.adapt)     # may refuse: first, so nothing else has changed yet
        if cfg.adapt_lr != old.adapt_lr:
            self.adaptation.set_lr(cfg.adapt_lr)
        self.cfg = cfg
        self.adaptation.apply(cfg)
        self.metric_scale.update()  # H4: metric_scale at runtime (keeps the ego-motion subscribed while on)

    # ------------------------------------------------------------ callbacks
    def _on_image(self, msg) -> None:
        with self.stats.lock:
            self.stats.received += 1
        if self._slot.put(_Frame(msg, time.monotonic())):
            with self.stats.lock:
                self.stats.dropped += 1

    def _on_info(self, msg: CameraInfo) -> None:
        self._info = msg

    # ------------------------------------------------------------- problems
    def report(self, key: str, text: str, warn: bool = False) -> None:
        """Log ``text`` at most once per ``error_throttle`` seconds for the same ``key`` (any thread)."""
        self.problems.report(key, text, warn)

    # --------------------------------------------------------------- worker
    def _run(self) -> None:
        while not self._stop.is_set():
            frame = self._slot.get(timeout=0.1)
            if frame is None:
                continue
            try:
                with self.adaptation.serving_frame():   # adapt_yield: the training process waits meanwhile
                    self._process(frame)
                    self.adaptation.apply_weights()     # newly verified weights, between two frames
                self.adaptation.take_right_frames()     # adapt_stereo: right images, off the frame's path
            except Exception as exc:  # never let one frame kill the worker
                self.report("internal", f"frame failed: {type(exc).__name__}: {exc}")

    def _process(self, frame: _Frame) -> None:
        msg = frame.msg
        try:
            rgb = compressed_to_rgb(msg) if self.cfg.use_compressed else image_to_rgb(msg)
        except InputError as exc:
            with self.stats.lock:
                self.stats.input_errors += 1
            self.report(f"image_{exc.kind}", f"bad image on {self.image_topic}: {exc}")
            return
        info = self._info
        H, W = rgb.shape[:2]
        if self.cfg.adapt_intrinsics == "estimate":   # no camera_info used: the guess, corrected as it is learned
            info, K = None, K_from_hfov(W, H, self.cfg.camera_hfov_deg)
        elif info is None:
            with self.stats.lock:
                self.stats.input_errors += 1
            self.report("camera_info_missing", f"no camera_info received on {self.info_topic} yet; "
                                        f"dropping frames until it arrives")
            return
        else:
            try:
                K = camera_info_to_K(info)
            except InputError as exc:
                with self.stats.lock:
                    self.stats.input_errors += 1
                self.report("camera_info_invalid", f"bad camera_info on {self.info_topic}: {exc}")
                return
        if info is not None and (info.width, info.height) != (W, H):   # (estimate: no camera_info to check)
            with self.stats.lock:
                self.stats.input_errors += 1
            self.report("camera_info_size", f"camera_info size {info.width}x{info.height} differs from image size "
                                        f"{W}x{H} on {self.image_topic}; dropping frame")
            return
        self.problems.recovered(prefixes=("image", "camera_info"))

        self._check_time_jump(stamp_to_ns(msg.header.stamp))
        t0 = time.perf_counter()
        raw = self.predictor.predict(rgb, self.adaptation.serving_K(K, W, H))   # learned K (adapt_intrinsics)
        pred = self.metric_scale.apply(raw)  # H4: metric depth for relative networks (unchanged otherwise)
        infer_ms = (time.perf_counter() - t0) * 1e3
        header = msg.header
        h, w = pred.depth.shape
        self.pub_depth.publish(depth_to_msg(pred.depth, header))
        self.pub_info.publish(scaled_camera_info(pred.K, w, h, header))
        self.adaptation.publish_calibrated(header, W, H)
        if self.cfg.publish_colorized and self.pub_color.get_subscription_count() > 0:
            self.pub_color.publish(rgb_to_msg(colorize_depth(pred.depth), header))
        if self.cfg.publish_points and self.pub_points.get_subscription_count() > 0:
            self._publish_cloud(pred, header)
        self.adaptation.on_frame(header, rgb, K)
        self.metric_scale.on_frame(header, raw)  # H4: estimate the scale from this frame's raw output
        with self.stats.lock:
            self.stats.processed += 1
            self.stats.infer_ms.append(infer_ms)
            self.stats.done_times.append(time.monotonic())

    def _check_time_jump(self, stamp_ns: int) -> None:
        """Image time going backwards (bag loop, sim-time reset) without a /clock jump: reset time buffers."""
        last, self._last_stamp = self._last_stamp, stamp_ns
        if last is not None and stamp_ns < last - 1_000_000_000:
            self._reset_time(f"image time jumped backwards by {(last - stamp_ns) / 1e9:.2f} s")

    def _on_clock_jump(self, jump) -> None:
        """Post-jump callback of the node's ROS clock (rclpy calls it when /clock jumps)."""
        delta_ns = jump.delta.nanoseconds
        if self.get_clock().now().nanoseconds - delta_ns <= 0:
            return  # the first /clock message: sim time starts, nothing to forget
        direction = "backwards" if delta_ns < 0 else "forwards"
        self._reset_time(f"/clock jumped {direction} by {abs(delta_ns) / 1e9:.2f} s")
        self._last_stamp = None

    def _reset_time(self, reason: str) -> None:
        """Forget dynamic TF, buffered ego-motion and the adaptation's frame history: nothing buffered
        before a time jump is paired with anything after it."""
        self.time_jumps += 1
        self.tf.clear()
        self.get_logger().warning(f"{reason}: clearing dynamic transforms ({self.tf.backend}), ego-motion buffers "
                                  f"and frame history (time jumps so far: {self.time_jumps})")
        self.adaptation.reset_time(reason)

    def _publish_cloud(self, pred, header) -> None:
        cfg = self.cfg
        T = None
        out_header = header
        if cfg.target_frame and cfg.target_frame != header.frame_id:
            try:
                T = self.tf.lookup(cfg.target_frame, header.frame_id, stamp_to_ns(header.stamp), cfg.tf_timeout)
            except TfError as exc:
                with self.stats.lock:
                    self.stats.clouds_dropped += 1
                self.report("tf", f"point cloud dropped: no transform {cfg.target_frame} <- {header.frame_id} "
                                   f"at the image stamp: {exc}", warn=True)
                return
            self.problems.recovered(("tf",))
            out_header = type(header)()
            out_header.stamp = header.stamp
            out_header.frame_id = cfg.target_frame
        stride = cfg.point_stride
        pts = depth_to_points(pred.depth, pred.K, stride, T, self._rays)
        colors = pred.rgb[::stride, ::stride]
        if cfg.voxel_size > 0:
            pts, colors = voxel_downsample(pts.reshape(-1, 3), colors.reshape(-1, 3), cfg.voxel_size)
        self.pub_points.publish(points_to_cloud(pts, colors, out_header))

    # ---------------------------------------------------------- diagnostics
    def diagnostics(self) -> dict[str, str]:
        s = self.stats
        with s.lock:
            ms = list(s.infer_ms)
            return {
                "frames_received": str(s.received),
                "frames_processed": str(s.processed),
                "frames_dropped": str(s.dropped),
                "input_errors": str(s.input_errors),
                "clouds_dropped": str(s.clouds_dropped),
                "time_jumps": str(self.time_jumps),
                "tf_parent_switches": str(self.tf.parent_switches),
                "inference_ms_mean": f"{np.mean(ms):.1f}" if ms else "nan",
                "inference_rate_hz": f"{s.rate_hz():.2f}",
                "weights": self.weights_desc,
                "tf_backend": self.tf.backend,
                "inference_backend": self.predictor.backend,
                "weights_version": str(self.predictor.version),
            } | self.adaptation.diagnostics() | self.metric_scale.diagnostics()  # H4: metric_scale*

    def _publish_diagnostics(self) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        st = DiagnosticStatus(name=f"{self.get_name()}: depth inference", hardware_id=str(self.predictor.device))
        problems = self.problems.active()
        st.level = DiagnosticStatus.WARN if problems else DiagnosticStatus.OK
        st.message = ("input problems: " + ", ".join(problems)) if problems else "OK"
        st.values = [KeyValue(key=k, value=v) for k, v in self.diagnostics().items()]
        arr.status = [st]
        self.pub_diag.publish(arr)

    def shutdown(self) -> None:
        """Stop the threads and write a final checkpoint of the last verified weights."""
        self._stop.set()
        self._worker.join(timeout=5.0)
        self.adaptation.shutdown()


def make_executor():
    """One callback thread: the node's callbacks only hand data over (inference and adaptation
    run on threads of their own), so what matters is the executor's own cost per message.

    rclpy's MultiThreadedExecutor spent a whole core here on its Python dispatch loop (IMU at
    200 Hz, odometry, TF, /clock) and starved inference. rclpy's experimental EventsExecutor
    (Kilted) kept the GIL while waiting, so the node's worker threads never ran; not used.
    """
    return SingleThreadedExecutor()


def main(args: list[str] | None = None) -> int:
    from .domain import exit_if_invalid_domain_id
    exit_if_invalid_domain_id("depth_node")
    # The adaptation thread dispatches thousands of small torch ops per step; with Python's default 5 ms
    # GIL switch interval a frame's pre/post-processing could wait that long behind it (p95 latency).
    sys.setswitchinterval(0.001)
    rclpy.init(args=args)
    try:
        node = DepthNode()
    except Exception as exc:  # bad parameters, unreadable checkpoint, no GPU, ...: say why, exit non-zero
        rclpy.logging.get_logger("mono_depth").fatal(f"cannot start: {exc}")
        rclpy.try_shutdown()
        return 2
    executor = make_executor()
    executor.add_node(node)
    try:
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except Exception:
        # SIGINT/SIGTERM can land while the executor builds its wait set; rclpy then raises
        # RCLError "context is not valid" instead of ExternalShutdownException. Still a shutdown.
        if rclpy.ok():
            raise
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
