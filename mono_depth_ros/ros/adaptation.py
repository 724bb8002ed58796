"""The node's adaptation wiring: ego-motion subscriptions, the adaptation thread, checkpoints, services.

The learning itself is :class:`~mono_depth_ros.adapt.feed.AdaptationFeed` (the
same object ``mono-depth adapt`` drives from a bag). This module only moves
messages into it, runs its steps on a thread of their own (with their own torch
thread count, so inference keeps its core), swaps verified weights into the
serving network, and persists them.
"""
from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque

import numpy as np
import torch
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from nav_msgs.msg import Odometry
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, Imu, NavSatFix
from std_srvs.srv import SetBool, Trigger

from mono_depth_ros.adapt import AdaptConfig, CheckpointStore
from mono_depth_ros.adapt.anchors import load_anchor_images, resolve_anchor
from mono_depth_ros.adapt.feed import AdaptationFeed
from mono_depth_ros.checkpoint import CheckpointError
from mono_depth_ros.conventions import Topics
from mono_depth_ros.egomotion import EgoMotionConfig, GatingConfig
from mono_depth_ros.egomotion.samples import stamp_to_ns
from mono_depth_ros.metrics import compute_depth_metrics
from mono_depth_ros.memory import HeapTrimPolicy
from mono_depth_ros.tf_buffer import TfError

from .tf import TF_QOS

__all__ = ["NodeAdaptation", "resume_state"]


def resume_state(cfg, logger):
    """(model, meta, description) of the newest good adapted checkpoint, or None."""
    if not cfg.resume:
        return None
    store = CheckpointStore(cfg.checkpoint_dir)
    removed = store.cleanup_temp()
    if removed:
        logger.warning(f"removed {removed} unfinished checkpoint file(s) in {store.dir} (a save was interrupted)")
    rejected = []

    def report(text: str) -> None:
        rejected.append(text)
        logger.error(text)

    got = store.load_latest(report=report)  # names every file it rejects
    if got is None:
        if rejected:
            logger.error(f"no usable adapted checkpoint in {store.dir}: starting from the configured weights "
                         f"({cfg.checkpoint or 'shipped weights'})")
        return None
    model, meta, path = got
    logger.info(f"resuming from adapted checkpoint {path} ({meta.get('training', {}).get('steps', 0)} steps)")
    return model, meta, f"{path} (resumed)"


class NodeAdaptation:
    """Adaptation attached to a running :class:`~mono_depth_ros.ros.depth_node.DepthNode`."""

    def __init__(self, node, predictor, initial_state: "OrderedDict[str, torch.Tensor]"):
        self.node = node
        cfg = node.cfg
        self.predictor = predictor
        h, w = predictor.input_size
        mult = type(predictor.model).size_multiple  # 14 for Depth Anything V2: crops rounded down
        th = cfg.adapt_train_height or h
        tw = cfg.adapt_train_width or w
        self.input_size = (h, w)
        anchors = None
        if cfg.adapt and cfg.adapt_anchor_weight > 0:
            anchor, why = resolve_anchor(cfg.adapt_anchor, cfg.checkpoint)
            node.get_logger().info(f"adaptation anchor: {anchor} ({why})")
            try:
                anchors = load_anchor_images(anchor)
            except ValueError as exc:
                raise ValueError(f"parameter 'adapt_anchor': {exc}") from None
        self.feed = AdaptationFeed(
            predictor.model,
            AdaptConfig(lr=cfg.adapt_lr, train_height=th, train_width=tw, replay_per_step=cfg.adapt_replay_per_step,
                        anchor_weight=cfg.adapt_anchor_weight, step=cfg.adapt_step,
                        crop_width=cfg.adapt_crop_width // mult * mult, crop_height=cfg.adapt_crop_height // mult * mult,
                        size_multiple=mult),
            EgoMotionConfig(priority=tuple(s.strip() for s in cfg.egomotion_sources.split(",") if s.strip()),
                            odom_frame=cfg.odom_frame, base_frame=cfg.base_frame),
            GatingConfig(min_translation_m=cfg.adapt_min_translation,
                         max_rotation_rad=math.radians(cfg.adapt_max_rotation)),
            on_weights=predictor.swap_state, anchors=anchors)
        self.engine = self.feed.engine
        self.engine.initial = initial_state  # "reset" goes back to the configured weights, not a resumed state
        self.engine.enabled = cfg.adapt
        self.store = CheckpointStore(cfg.checkpoint_dir)
        self._credits = 0.0
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._last_save = time.monotonic()
        self._heap = HeapTrimPolicy()   # bounds the resident set without re-faulting it every few steps
        self._steps_at_save = 0
        self.last_save_path = ""
        self.last_error = ""
        self._step_times: deque[float] = deque(maxlen=50)
        self._preds: OrderedDict[int, np.ndarray] = OrderedDict()
        self._gts: OrderedDict[int, object] = OrderedDict()
        self.preq = {"frames": 0, "abs_rel": 0.0, "a1": 0.0, "scale_ratio": 0.0}

        group = MutuallyExclusiveCallbackGroup()
        node.create_subscription(Odometry, Topics.ODOM, self.feed.on_odometry, 50, callback_group=group)
        node.create_subscription(Imu, Topics.IMU, self.feed.on_imu, qos_profile_sensor_data, callback_group=group)
        node.create_subscription(NavSatFix, Topics.GPS, self.feed.on_gps, 10, callback_group=group)
        from tf2_msgs.msg import TFMessage
        node.create_subscription(TFMessage, "/tf", self.feed.on_tf, TF_QOS, callback_group=group)
        node.create_service(Trigger, "~/save_checkpoint", self._srv_save, callback_group=group)
        node.create_service(SetBool, "~/set_adaptation", self._srv_enable, callback_group=group)
        node.create_service(Trigger, "~/reset_weights", self._srv_reset, callback_group=group)
        if cfg.evaluate_gt:
            node.create_subscription(Image, "depth_gt", self._on_gt, 10, callback_group=group)
            self.pub_metrics = node.create_publisher(DiagnosticArray, "depth/metrics", 10)
        self._thread = threading.Thread(target=self._run, name="mono_depth_adaptation", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ frames
    def on_frame(self, header, rgb: np.ndarray, K: np.ndarray, depth: np.ndarray) -> None:
        """Called by the inference worker after each published depth image."""
        stamp = stamp_to_ns(header.stamp)
        if self.node.cfg.evaluate_gt:
            self._preds[stamp] = depth
            while len(self._preds) > 30:
                self._preds.popitem(last=False)
            gt = self._gts.pop(stamp, None)
            if gt is not None:  # ground truth arrived before inference finished
                self._score(gt)
        if not self.engine.enabled:
            return
        if not self.feed.have_extrinsics:
            self._lookup_extrinsics(header.frame_id)
        if self.feed.on_frame(stamp, header.frame_id, rgb, K):
            with self._cv:
                self._credits = min(self._credits + self.node.cfg.adapt_steps_per_frame,
                                    4 * max(1, self.node.cfg.adapt_steps_per_frame))
                self._cv.notify()

    def _lookup_extrinsics(self, camera_frame: str) -> None:
        try:
            T = self.node.tf.lookup(self.node.cfg.base_frame, camera_frame, 0, 0.0)
        except TfError as exc:
            self.node.report("extrinsics", f"adaptation waits for the transform {self.node.cfg.base_frame} <- "
                                            f"{camera_frame} (camera extrinsics): {exc}", warn=True)
            return
        self.feed.set_extrinsics(T)
        self.node.get_logger().info(f"adaptation: camera extrinsics {self.node.cfg.base_frame} <- {camera_frame} "
                                    f"from TF, t = {np.round(T[:3, 3], 3).tolist()}")

    def _on_gt(self, msg) -> None:
        if msg.encoding != "32FC1":
            return
        stamp = stamp_to_ns(msg.header.stamp)
        if stamp in self._preds:
            self._score(msg)
        else:
            self._gts[stamp] = msg
            while len(self._gts) > 30:
                self._gts.popitem(last=False)

    def _score(self, msg) -> None:
        """Metrics of the depth published for this stamp (before any step learned from the frame)."""
        pred = self._preds.pop(stamp_to_ns(msg.header.stamp))
        import cv2
        gt = np.frombuffer(bytes(msg.data), np.float32).reshape(msg.height, msg.width)
        if gt.shape != pred.shape:
            gt = cv2.resize(gt, (pred.shape[1], pred.shape[0]), interpolation=cv2.INTER_NEAREST)
        m = compute_depth_metrics(gt, pred)
        if m is None:
            return
        n = self.preq["frames"] = self.preq["frames"] + 1
        for k in ("abs_rel", "a1", "scale_ratio"):
            self.preq[k] += (m[k] - self.preq[k]) / n
        arr = DiagnosticArray()
        arr.header = msg.header
        st = DiagnosticStatus(name=f"{self.node.get_name()}: prequential depth metrics (before learning the frame)")
        st.values = [KeyValue(key=k, value=f"{m[k]:.5f}") for k in ("abs_rel", "sq_rel", "rmse", "a1",
                                                                    "scale_ratio")]
        st.values.append(KeyValue(key="adapt_steps", value=str(self.engine.counters.steps)))
        arr.status = [st]
        self.pub_metrics.publish(arr)
        if n % 50 == 0:
            self.node.get_logger().info(f"prequential over {n} frames: AbsRel {self.preq['abs_rel']:.3f}, "
                                        f"d<1.25 {self.preq['a1']:.3f}, scale {self.preq['scale_ratio']:.3f}")

    # ------------------------------------------------------------ thread
    def _run(self) -> None:
        torch.set_num_threads(self.node.cfg.adapt_threads)
        while not self._stop.is_set():
            with self._cv:
                if self._credits < 1.0:
                    self._cv.wait(timeout=0.2)
                has = self._credits >= 1.0
                if has:
                    self._credits -= 1.0
            if has and self.engine.enabled:
                try:
                    rep = self.feed.step()
                    if rep is None:
                        with self._cv:
                            self._credits = 0.0  # nothing trainable yet: wait for the next frame
                    else:
                        self._step_times.append(time.monotonic())
                        self._heap.after_step()
                        if rep.status.startswith("rollback"):
                            self.node.get_logger().warning(
                                f"adaptation rolled back ({rep.status.removeprefix('rollback_')}); "
                                f"rollbacks: {self.engine.counters.rollbacks}, lr now {self.engine.lr:.2g}")
                except Exception as exc:  # keep adapting / serving whatever one step did
                    self.node.report("adapt_step", f"adaptation step failed: {type(exc).__name__}: {exc}")
            period = self.node.cfg.checkpoint_period
            if period > 0 and time.monotonic() - self._last_save >= period:
                self.save(reason="periodic")

    # ------------------------------------------------------- persistence
    def save(self, reason: str = "requested", name: str | None = None) -> str | None:
        """Write the last verified weights. Returns the path, or None (error logged, node keeps serving)."""
        self._last_save = time.monotonic()
        steps = self.engine.counters.steps
        if name is None and steps == self._steps_at_save and reason != "requested":
            return None  # nothing new learned since the last save
        try:
            state = self.engine.good_state()
            path = self.store.save(self.engine.model, state, self.input_size, steps, self.engine.counters.frames,
                                   meta={"reason": reason, "stats": {k: v for k, v in self.engine.stats().items()
                                                                     if k != "rollback_reasons"}}, name=name)
        except Exception as exc:  # CheckpointError names the file and the cause; anything else must not kill us
            self.last_error = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
            self.node.report("checkpoint", f"checkpoint not saved ({reason}): {self.last_error}")
            return None
        if self.last_error:
            self.node.get_logger().info(f"checkpoints are written again (last error: {self.last_error})")
            self.last_error = ""
            self.node.clear_problem("checkpoint")
        self._steps_at_save = steps
        self.last_save_path = str(path)
        self.node.get_logger().info(f"checkpoint saved ({reason}): {path}")
        return str(path)

    def _srv_save(self, request, response):
        path = self.save(reason="requested")
        response.success = path is not None
        response.message = path or f"checkpoint not saved: {self.last_error}"
        return response

    def _srv_enable(self, request, response):
        self.engine.enabled = bool(request.data)
        response.success = True
        response.message = f"adaptation {'enabled' if request.data else 'disabled'}"
        self.node.get_logger().info(response.message)
        return response

    def _srv_reset(self, request, response):
        self.engine.reset_to_initial()
        response.success = True
        response.message = "weights reset to the configured starting checkpoint"
        self.node.get_logger().warning(response.message)
        return response

    def reset_time(self, reason: str) -> None:
        """Time jumped: forget buffered ego-motion and frame history (see AdaptationFeed.reset_time)."""
        self.feed.reset_time(reason)
        self._preds.clear()
        self._gts.clear()

    # ------------------------------------------------------- diagnostics
    def diagnostics(self) -> dict[str, str]:
        s = self.feed.stats()
        t = self._step_times
        rate = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0
        out = {k: (f"{v:.5f}" if isinstance(v, float) else str(v)) for k, v in s.items()}
        out["adapt_steps_per_s"] = f"{rate:.2f}"
        out["heap_trims"] = str(self._heap.trims)
        out["checkpoint_saves"] = str(self.store.saves)
        out["checkpoint_errors"] = str(self.store.errors)
        out["checkpoint_last"] = self.last_save_path
        out["checkpoint_last_error"] = self.last_error
        if self.preq["frames"]:
            out.update({f"prequential_{k}": f"{v:.4f}" for k, v in self.preq.items()})
        return out

    def shutdown(self) -> None:
        self._stop.set()
        with self._cv:
            self._cv.notify()
        self._thread.join(timeout=30.0)
        self.save(reason="shutdown")
