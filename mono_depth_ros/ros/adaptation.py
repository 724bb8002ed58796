"""The node's adaptation room: ego-motion subscriptions, the adaptation thread, checkpoints, services.

The learning itself is :class:`~mono_depth_ros.adapt.session.AdaptationSession` (the
same object ``mono-depth adapt`` drives from a bag). This module only moves
messages into it, runs its steps on a thread of their own (with their own torch
thread count, so inference keeps its core), and persists the verified weights.
The node hands it what it needs (its settings, a problem reporter, a transform
lookup, the serving predictor); it reads nothing else of the node.
"""
from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict, deque
from functools import partial

import numpy as np
import torch
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import SetBool, Trigger

from mono_depth_ros.adapt import CheckpointStore
from mono_depth_ros.adapt.anchors import load_anchor_images, resolve_anchor
from mono_depth_ros.adapt.session import AdaptationSession, fit_to_model
from mono_depth_ros.checkpoint import CheckpointError
from mono_depth_ros.egomotion.provider import SOURCE_INPUTS
from mono_depth_ros.egomotion.samples import MOTION_INPUTS, stamp_to_ns
from mono_depth_ros.memory import HeapTrimPolicy

from .conversions import InputError, image_to_rgb, message_class, scaled_camera_info

__all__ = ["NodeAdaptation", "resume_state"]

#: Subscription queue depth per ego-motion input (IMU: the sensor-data profile).
_QUEUE = {"odometry": 50, "gps": 10, "pose": 10}


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
    """Adaptation attached to a running depth node.

    Threads:
        * executor (the node's one callback thread): the ego-motion subscriptions' callbacks
          (into the session, which locks what it shares), the services, :meth:`apply`;
        * inference worker: :meth:`on_frame`, :meth:`reset_time`;
        * the adaptation thread (:meth:`_run`): steps, heap policy, periodic checkpoints;
        * any: :meth:`diagnostics`, :meth:`save` (the store and the engine lock what they share).

    Args:
        node: the rclpy node, used only to create this room's subscriptions, services and logger.
        cfg: the node's settings (:class:`~mono_depth_ros.ros.params.NodeConfig`); :meth:`apply`
            takes new ones.
        predictor: the serving :class:`~mono_depth_ros.inference.DepthPredictor` (its network is
            where training starts; verified weights go to its ``swap_state``).
        initial_state: the configured weights ("reset" returns to them, not to a resumed state).
        reporter: a :class:`~mono_depth_ros.ros.problems.ProblemReporter`.
        transforms: the node's transform lookup (camera extrinsics).
        start_thread: False runs no adaptation thread; the owner calls :meth:`run_due_steps`
            (tests: a deterministic step schedule).
    """

    def __init__(self, node, cfg, predictor, initial_state: "OrderedDict[str, torch.Tensor]", reporter,
                 transforms, start_thread: bool = True):
        self.cfg = cfg
        self.reporter = reporter
        self._log = node.get_logger()
        self._node = node
        self.predictor = predictor
        h, w = predictor.input_size
        self.input_size = (h, w)
        anchors = None
        if cfg.adapt_anchor_weight > 0:
            anchor, why = resolve_anchor(cfg.adapt_anchor, cfg.checkpoint)
            self._log.info(f"adaptation anchor: {anchor} ({why})")
            try:
                anchors = load_anchor_images(anchor)
            except ValueError as exc:
                raise ValueError(f"parameter 'adapt_anchor': {exc}") from None
        # What switching adaptation on later could not undo (the `adapt` parameter / ~/set_adaptation refuse it).
        self._cannot_enable = ""
        if not cfg.adapt and getattr(predictor, "canonical", None) is not None:
            self._cannot_enable = ("parameter 'adapt': the node started with adapt: false, so depth is served through "
                                   "the canonical-camera conversion; restart it with adapt: true to adapt")
        model = predictor.model
        settings = cfg.settings()   # parameters -> AdaptConfig, EgoMotionConfig, GatingConfig (mono_depth_ros.settings)
        self.session = AdaptationSession(
            model,
            fit_to_model(model, settings.adapt, train_height=cfg.adapt_train_height or h,
                         train_width=cfg.adapt_train_width or w),
            settings.egomotion, settings.gating,
            steps_per_frame=cfg.adapt_steps_per_frame, on_weights=self._offer_weights, anchors=anchors,
            transforms=transforms, report=lambda key, text: reporter.warn(key, text),
            process=cfg.adapt_process, threads=cfg.adapt_threads)
        self.engine = self.session.engine
        # Training's allocations live in the training process (its own heap policy) with adapt_process.
        self._heap = HeapTrimPolicy() if not cfg.adapt_process else None
        self.engine.set_initial(initial_state)
        self.store = CheckpointStore(cfg.checkpoint_dir)
        self._stop = threading.Event()
        self._last_save = time.monotonic()
        self._steps_at_save = 0
        self.last_save_path = ""
        self.last_error = ""
        self._step_times: deque[float] = deque(maxlen=50)
        self._weights_lock = threading.Lock()
        self._pending_weights = None     # verified weights waiting for the inference worker (apply_weights)
        self._group = MutuallyExclusiveCallbackGroup()
        self._subs: list = []
        self._stereo_subs: list = []
        self._right_info = None    # (K, P, (width, height)) of the right camera, from its camera_info (executor)
        # Right images wait here for the inference worker to convert them between two frames, as the left
        # images do, so the executor only hands messages over. (Moving the conversion off the executor did not
        # change stereo's serving p95: BENCHMARKS.md.) A few are enough: pairs are made by stamp.
        self._right_msgs: deque = deque(maxlen=4)
        self._egomotion_wanted = False  # H4: another part (the metric scale) needs the poses, adapting or not
        # Learned intrinsics (adapt_intrinsics): the K served with the weights, published on its own topic.
        self._pub_calibrated = None
        self._K_served: np.ndarray | None = None
        self._K_reported: np.ndarray | None = None
        if self.engine.learns_intrinsics:
            from mono_depth_ros.conventions import Topics
            self._pub_calibrated = node.create_publisher(CameraInfo, Topics.CAMERA_INFO_CALIBRATED, 10)
        node.create_service(Trigger, "~/save_checkpoint", self._srv_save, callback_group=self._group)
        node.create_service(SetBool, "~/set_adaptation", self._srv_enable, callback_group=self._group)
        node.create_service(Trigger, "~/reset_weights", self._srv_reset, callback_group=self._group)
        self.session.set_enabled(False)
        if cfg.adapt:
            self.set_enabled(True)
        self._thread = None
        if start_thread:
            self._thread = threading.Thread(target=self._run, name="mono_depth_adaptation", daemon=True)
            self._thread.start()

    # ------------------------------------------------------------ control
    def set_enabled(self, on: bool) -> None:
        """Adapt (True) or only serve (False): the ``adapt`` parameter at runtime (executor). The ego-motion
        subscriptions exist only while adapting (or while the metric scale needs them). ValueError (the change is refused) when the node started
        without adaptation and cannot add it."""
        on = bool(on)
        if on and self._cannot_enable:
            raise ValueError(self._cannot_enable)
        self.session.set_enabled(on)
        self._subscribe(on or self._egomotion_wanted)  # H4
        self._subscribe_stereo(on and self.cfg.adapt_stereo)

    def want_egomotion(self, on: bool) -> None:
        """H4: keep the ego-motion subscriptions while another part (the metric scale) needs the
        poses, adapting or not (executor, or the constructor's thread)."""
        self._egomotion_wanted = bool(on)
        self._subscribe(self.engine.enabled or self._egomotion_wanted)

    def _subscribe(self, on: bool) -> None:
        """The ego-motion subscriptions into the session: made (on) or destroyed (off). One per input the
        configured sources read (``egomotion.samples.MOTION_INPUTS``); TF is not among them: the "tf"
        source and the extrinsics read the node's one transform lookup."""
        if on and not self._subs:
            n, g = self._node, self._group
            wanted = {k for src in self.session.provider.config.priority for k in SOURCE_INPUTS[src]} - {"tf"}
            for kind in sorted(wanted):
                spec = MOTION_INPUTS[kind]
                qos = qos_profile_sensor_data if kind == "imu" else _QUEUE.get(kind, 10)
                self._subs.append(n.create_subscription(message_class(spec.msg_types[0]), spec.topic,
                                                        partial(self.session.on_message, kind), qos, callback_group=g))
        elif not on and self._subs:
            for sub in self._subs:
                self._node.destroy_subscription(sub)
            self._subs = []

    def _subscribe_stereo(self, on: bool) -> None:
        """The right camera's image and camera_info subscriptions (adapt_stereo), made while adapting."""
        if on and not self._stereo_subs:
            c = self.cfg
            qos = QoSProfile(depth=c.qos_depth, history=HistoryPolicy.KEEP_LAST,
                             reliability=(ReliabilityPolicy.BEST_EFFORT if c.qos_reliability == "best_effort"
                                          else ReliabilityPolicy.RELIABLE),
                             durability=qos_profile_sensor_data.durability)
            n, g = self._node, self._group
            self._stereo_subs = [
                n.create_subscription(CameraInfo, c.adapt_right_camera_info_topic, self._on_right_info, qos,
                                      callback_group=g),
                n.create_subscription(Image, c.adapt_right_image_topic, self._on_right_image, qos, callback_group=g),
            ]
        elif not on and self._stereo_subs:
            for sub in self._stereo_subs:
                self._node.destroy_subscription(sub)
            self._stereo_subs = []

    def _on_right_info(self, msg) -> None:
        self._right_info = (np.asarray(msg.k, dtype=np.float64).reshape(3, 3),
                            np.asarray(msg.p, dtype=np.float64).reshape(3, 4), (int(msg.width), int(msg.height)))

    def _on_right_image(self, msg) -> None:
        """Executor: queue the right image of the pair (converted by :meth:`take_right_frames`)."""
        self._right_msgs.append(msg)

    def take_right_frames(self) -> int:
        """Inference worker, after a frame is published: the queued right images into the session (paired
        with the left frames by stamp). Returns how many were taken."""
        n = 0
        while self._right_msgs:
            n += int(self._take_right(self._right_msgs.popleft()))   # the worker is the only consumer
        return n

    def _take_right(self, msg) -> bool:
        if self._right_info is None:
            self.reporter.warn("stereo_info", "stereo: waiting for the right camera_info "
                                              f"({self.cfg.adapt_right_camera_info_topic})")
            return False
        K_right, P_right, (w, h) = self._right_info    # one tuple: replaced whole by the executor
        if (msg.width, msg.height) != (w, h):
            self.reporter.warn("stereo_image", f"stereo: right image ignored: its size {msg.width}x{msg.height} "
                                               f"differs from the right camera_info's {w}x{h}")
            return False
        try:
            rgb = image_to_rgb(msg)
        except InputError as exc:
            self.reporter.warn("stereo_image", f"stereo: right image ignored: {exc}")
            return False
        if self.session.on_right_frame(stamp_to_ns(msg.header.stamp), msg.header.frame_id, rgb, K_right, P_right):
            self.reporter.recovered(("stereo_info", "stereo_image", "stereo_baseline", "stereo_rectified"))
            return True
        return False

    @property
    def enabled(self) -> bool:
        return self.engine.enabled

    def set_lr(self, lr: float) -> None:
        """New base learning rate (the node's ``adapt_lr`` at runtime); ValueError outside (0, 1]."""
        self.engine.set_lr(lr)

    def apply(self, cfg) -> None:
        """New settings at runtime (executor, after ``set_enabled`` / ``set_lr`` accepted theirs)."""
        self.cfg = cfg
        self.session.pacer.steps_per_frame = float(cfg.adapt_steps_per_frame)

    # ------------------------------------------------------------ frames
    def _offer_weights(self, state) -> None:
        """Training side: newly verified weights. The inference worker swaps them in between two frames
        (:meth:`apply_weights`): with ONNX Runtime a swap builds a new session (~15 ms of CPU and some GIL),
        which must not land in the middle of a frame."""
        with self._weights_lock:
            self._pending_weights = state

    def apply_weights(self) -> bool:
        """Inference worker, after a frame is published: swap in the newest verified weights, if any."""
        with self._weights_lock:
            state, self._pending_weights = self._pending_weights, None
        if state is None:
            return False
        self.predictor.swap_state(state)
        return True

    def serving_frame(self):
        """Inference worker: ``with`` around serving one frame. With ``adapt_process`` and ``adapt_yield`` the
        training process is paused meanwhile (serving has the CPU to itself); otherwise nothing."""
        if self.cfg.adapt_yield and self.engine.enabled:
            return self.engine.hold()
        return contextlib.nullcontext()

    def serving_K(self, K: np.ndarray, width: int, height: int) -> np.ndarray:
        """Inference worker: the K to serve a frame with: the reported (or guessed) K corrected by the
        learned intrinsics verified with the served weights (K itself while adapt_intrinsics is off)."""
        if not self.engine.learns_intrinsics:
            return K
        self._K_reported = np.asarray(K, dtype=np.float64)
        self._K_served = self.engine.served_K(K, width, height)
        return self._K_served

    def publish_calibrated(self, header, width: int, height: int) -> None:
        """Inference worker: the corrected camera_info (``camera_info_calibrated``) of the frame just served."""
        if self._pub_calibrated is not None and self._K_served is not None:
            self._pub_calibrated.publish(scaled_camera_info(self._K_served, width, height, header))

    def on_frame(self, header, rgb, K) -> None:
        """Inference worker, after each published depth image: offer the frame for training."""
        if self.session.on_frame(stamp_to_ns(header.stamp), header.frame_id, rgb, K):
            self.reporter.recovered(("extrinsics",))

    def reset_time(self, reason: str) -> None:
        """Time jumped: forget buffered ego-motion and frame history (see AdaptationSession.reset_time)."""
        self.session.reset_time(reason)

    # ------------------------------------------------------------ thread
    def run_due_steps(self, limit: int | None = None) -> int:
        """Take the steps the pacing allows (adaptation thread; tests call it directly)."""
        try:
            return self.session.run_due(limit, on_report=self._after_step)
        except Exception as exc:  # keep adapting / serving whatever one step did
            self.reporter.report("adapt_step", f"adaptation step failed: {type(exc).__name__}: {exc}")
            return 0

    def _after_step(self, rep) -> None:
        self._step_times.append(time.monotonic())
        if self._heap is not None:
            self._heap.after_step()
        if rep.status.startswith("rollback"):
            self._log.warning(f"adaptation rolled back ({rep.status.removeprefix('rollback_')}); "
                              f"rollbacks: {self.engine.counters.rollbacks}, lr now {self.engine.lr:.2g}")

    def _run(self) -> None:
        if not self.cfg.adapt_process:   # else the training process has its own (adapt/worker.py)
            torch.set_num_threads(self.cfg.adapt_threads)
        self._wait_ready()
        while not self._stop.is_set():
            if self.session.pacer.wait(timeout=0.2) and self.engine.enabled:
                self.run_due_steps(limit=1)
            period = self.cfg.checkpoint_period
            if period > 0 and time.monotonic() - self._last_save >= period:
                self.save(reason="periodic")

    def _wait_ready(self) -> None:
        """Adaptation thread, at its start: wait for the training process to be up (it takes seconds: a
        fresh interpreter imports torch and builds its engine) and say so in the log, so that users and
        tests know when frames begin to be learned from (they are kept and paced meanwhile)."""
        from mono_depth_ros.adapt.worker import START_TIMEOUT_S
        t0 = time.monotonic()
        poll = getattr(self.engine, "poll_ready", None)
        if poll is not None:
            try:
                while not poll(0.5):
                    if self._stop.is_set():
                        return
                    if time.monotonic() - t0 > START_TIMEOUT_S:
                        self.engine.wait_ready(0.1)    # raises: the process is restarted, the cause reported
            except Exception as exc:   # reported; the first step waits for the restarted process
                self.reporter.report("adapt_step", f"adaptation's training process did not start: "
                                                   f"{type(exc).__name__}: {exc}")
                return
        where = "training process" if poll is not None else "training thread"
        self._log.info(f"adaptation ready ({where}, {time.monotonic() - t0:.1f} s)")

    # ------------------------------------------------------- persistence
    def save(self, reason: str = "requested", name: str | None = None) -> str | None:
        """Write the last verified weights. Returns the path, or None (error logged, node keeps serving)."""
        self._last_save = time.monotonic()
        steps = self.engine.counters.steps
        if name is None and steps == self._steps_at_save and reason != "requested":
            return None  # nothing new learned since the last save
        try:
            state = self.engine.good_state()
            stats = self.session.stats()
            path = self.store.save(self.engine.model, state, self.input_size, steps, stats["adapt_frames"],
                                   meta={"reason": reason, "stats": {k: v for k, v in stats.items()
                                                                     if k != "rollback_reasons"}}, name=name)
        except Exception as exc:  # CheckpointError names the file and the cause; anything else must not kill us
            self.last_error = str(exc) if isinstance(exc, CheckpointError) else f"{type(exc).__name__}: {exc}"
            self.reporter.report("checkpoint", f"checkpoint not saved ({reason}): {self.last_error}")
            return None
        if self.last_error:
            self._log.info(f"checkpoints are written again (last error: {self.last_error})")
            self.last_error = ""
            self.reporter.clear("checkpoint")
        self._steps_at_save = steps
        self.last_save_path = str(path)
        self._log.info(f"checkpoint saved ({reason}): {path}")
        return str(path)

    def _srv_save(self, request, response):
        path = self.save(reason="requested")
        response.success = path is not None
        response.message = path or f"checkpoint not saved: {self.last_error}"
        return response

    def _srv_enable(self, request, response):
        # Through the `adapt` parameter (DepthNode._set_cfg calls set_enabled), so the two never disagree.
        from rclpy.parameter import Parameter
        result = self._node.set_parameters([Parameter("adapt", value=bool(request.data))])[0]
        response.success = result.successful
        response.message = (f"adaptation {'enabled' if request.data else 'disabled'}" if result.successful
                            else result.reason)
        self._log.info(response.message)
        return response

    def _srv_reset(self, request, response):
        self.engine.reset_to_initial()
        response.success = True
        response.message = "weights reset to the configured starting checkpoint"
        self._log.warning(response.message)
        return response

    # ------------------------------------------------------- diagnostics
    def diagnostics(self) -> dict[str, str]:
        s = self.session.stats()
        t = list(self._step_times)
        rate = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0
        out = {k: (f"{v:.5f}" if isinstance(v, float) else str(v)) for k, v in s.items()}
        out["adapt_steps_per_s"] = f"{rate:.2f}"
        out["heap_trims"] = str(self._heap.trims if self._heap is not None else 0)
        out["checkpoint_saves"] = str(self.store.saves)
        out["checkpoint_errors"] = str(self.store.errors)
        out["checkpoint_last"] = self.last_save_path
        out["checkpoint_last_error"] = self.last_error
        K, K0 = self._K_served, self._K_reported
        if K is not None and K0 is not None:   # the learned intrinsics and their change from the reported K
            for name, (i, j) in {"fx": (0, 0), "fy": (1, 1), "cx": (0, 2), "cy": (1, 2)}.items():
                out[f"intrinsics_{name}"] = f"{K[i, j]:.3f}"
                out[f"intrinsics_{name}_change"] = f"{K[i, j] - K0[i, j]:+.3f}"
        return out

    def shutdown(self) -> None:
        self._stop.set()
        self.session.pacer.wake()
        if self._thread is not None:
            self._thread.join(timeout=30.0)
        self.save(reason="shutdown")    # the parent's copy of the verified weights: needs no training process
        self.session.close()
