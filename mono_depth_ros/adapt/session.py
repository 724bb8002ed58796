"""One adaptation session, driven by the live node and by ``mono-depth adapt`` alike.

:class:`AdaptationSession` is the one feeder of the :class:`~.engine.AdaptationEngine`: it
dispatches ego-motion messages (odometry, TF, IMU, GPS: through
:class:`~mono_depth_ros.egomotion.feed.EgoMotionFeed`, the path offline training shares), takes
camera frames, knows the camera extrinsics, fits the settings to the network, and paces the
training steps (:class:`StepPacer`: ``steps_per_frame`` credits per frame). The node runs
:meth:`AdaptationSession.run_due` on its adaptation thread; the bag tool runs it after every
frame, inline. Same frames, poses and schedule in -> bit-identical weights out
(``test/test_session.py``).
"""
from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from typing import Callable

import numpy as np
import torch

from mono_depth_ros.egomotion import EgoMotionConfig, GatingConfig
from mono_depth_ros.egomotion.feed import EgoMotionFeed

from .engine import AdaptationEngine, AdaptConfig, StepReport

__all__ = ["AdaptationSession", "StepPacer", "fit_to_model"]

log = logging.getLogger(__name__)


def fit_to_model(model, base: AdaptConfig | None = None, **overrides) -> AdaptConfig:
    """``base`` (default settings if None) with ``overrides`` (field names), fitted to the network: its
    size multiple (``model.size_multiple``: 32 for the U-Nets, 14 for Depth Anything V2) and crops
    rounded down to it (the node's and the CLI's crop settings are plain pixels)."""
    m = int(model.size_multiple)
    values = {**asdict(base or AdaptConfig()), **overrides}
    values.update(size_multiple=m, crop_width=int(values["crop_width"]) // m * m,
                  crop_height=int(values["crop_height"]) // m * m)
    return AdaptConfig(**values)


class StepPacer:
    """Step credits: ``steps_per_frame`` per learnable frame, at most ``4 x max(1, steps_per_frame)``
    banked. Thread-safe: frames credit on the feeding thread, steps take on the training thread."""

    def __init__(self, steps_per_frame: float = 1.0):
        if not steps_per_frame > 0:
            raise ValueError(f"steps per frame must be > 0, got {steps_per_frame}")
        self.steps_per_frame = float(steps_per_frame)
        self._credits = 0.0
        self._frames = 0                 # frames credited so far (``mark`` / ``clear(since=...)``)
        self._cv = threading.Condition()

    def credit(self) -> None:
        with self._cv:
            self._credits = min(self._credits + self.steps_per_frame, 4 * max(1.0, self.steps_per_frame))
            self._frames += 1
            self._cv.notify()

    def take(self) -> bool:
        """Use one credit; False when less than one is banked."""
        with self._cv:
            if self._credits >= 1.0:
                self._credits -= 1.0
                return True
            return False

    def mark(self) -> int:
        """How many frames have been credited so far (for :meth:`clear`'s ``since``)."""
        with self._cv:
            return self._frames

    def clear(self, since: int | None = None) -> None:
        """Nothing trainable yet: drop the credits (wait for the next frame). With ``since`` (a
        :meth:`mark`), the credits of frames that came after it are kept: a step that found nothing
        may have taken seconds (the training process starting), and the frames that arrived meanwhile
        are new chances to train."""
        with self._cv:
            if since is None:
                self._credits = 0.0
            else:
                newer = (self._frames - since) * self.steps_per_frame
                self._credits = min(self._credits, newer)

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` s for a credit (training thread). True when one is banked."""
        with self._cv:
            if self._credits < 1.0:
                self._cv.wait(timeout)
            return self._credits >= 1.0

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()


class AdaptationSession(EgoMotionFeed):
    """Messages and frames in, paced training steps out (see module docstring).

    Threads: the ``on_*`` message methods and :meth:`on_frame` run on the feeding thread (the
    node's executor / inference worker, or the bag loop); :meth:`run_due` on the training thread;
    :meth:`reset_time` on the feeding thread; :meth:`stats` anywhere.

    Args:
        model: the network to adapt (the engine trains a private copy).
        adapt, ego, gating: the engine's, the ego-motion provider's and the frame gating's settings.
        steps_per_frame: training steps per learnable frame (fractions spread steps over frames).
        on_weights: receives verified weights for serving.
        anchors: (N,H,W,3) uint8 source-domain images, or None.
        transforms: the process's transform lookup (``tf_buffer.TransformLookup``: the node's TfSource) for the
            ``tf`` ego-motion source and the camera extrinsics; None = the provider's own buffer, filled
            by :meth:`on_tf` / :meth:`on_tf_static` (the bag path).
        report: ``report(key, text)`` for problems worth a throttled log line (extrinsics missing).
        process: train in a child process (:class:`~.worker.ProcessEngine`; the node's ``adapt_process``),
            with ``threads`` torch threads; False: here, on the caller's thread.
    """

    def __init__(self, model, adapt: AdaptConfig | None = None, ego: EgoMotionConfig | None = None,
                 gating: GatingConfig | None = None, steps_per_frame: float = 1.0,
                 on_weights: Callable[[dict], None] | None = None, anchors: np.ndarray | None = None,
                 transforms=None, report: Callable[[str, str], None] | None = None, process: bool = False,
                 threads: int = 1):
        super().__init__(ego, gating, transforms)   # the tf source and the extrinsics ask the same lookup
        adapt = adapt or fit_to_model(model)
        if adapt.size_multiple != int(model.size_multiple):
            raise ValueError(f"adaptation settings are for a size multiple of {adapt.size_multiple}, the network "
                             f"needs {model.size_multiple}: build them with fit_to_model()")
        if process:   # the training room in a child process (adapt/worker.py says why)
            from .worker import ProcessEngine
            self.engine = ProcessEngine(model, self.selector, adapt, on_weights, anchors, threads=threads)
        else:
            self.engine = AdaptationEngine(model, self.selector, adapt, on_weights, anchors)
        self.pacer = StepPacer(steps_per_frame)
        self._report = report or (lambda key, text: log.warning(text))
        self.T_right_left: np.ndarray | None = None    # stereo: the known baseline, once found
        self._K_left: np.ndarray | None = None
        self._left_size: tuple[int, int] | None = None   # (H, W) of the last left frame

    # ------------------------------------------------------------- frames
    def on_frame(self, stamp_ns: int, frame_id: str, rgb: np.ndarray, K: np.ndarray) -> bool:
        """Offer a camera frame (H,W,3) uint8 + its (3,3) K; earns ``steps_per_frame`` credits.
        False (not added) while adaptation is off or the extrinsics are unknown."""
        if not self.engine.enabled:
            return False
        if not self.camera_ready(frame_id):
            if self.extrinsics_error:
                self._report("extrinsics", f"adaptation waits: {self.extrinsics_error}")
            return False
        self._K_left = K
        self._left_size = tuple(rgb.shape[:2])
        self.engine.add_frame(stamp_ns, rgb, K)
        self.pacer.credit()
        return True

    def on_right_frame(self, stamp_ns: int, frame_id: str, rgb: np.ndarray, K_right: np.ndarray,
                       P_right: np.ndarray | None = None) -> bool:
        """Offer the right image of a rectified stereo pair (H,W,3) uint8 (paired with the left frame of
        the same stamp, within ``AdaptConfig.stereo_sync_tolerance``), its (3,3) K and its camera_info's
        (3,4) P. The baseline comes from P (``Tx = -fx * B``), else from the transform lookup (the
        node's TF; ``/tf_static`` in a bag): ``T_right_left`` = right frame <- left frame.
        False (not added) while stereo or adaptation is off, the left camera or the baseline is not
        known yet, or the pair is not rectified (K differs from the left's)."""
        if not (self.engine.enabled and self.engine.cfg.stereo) or self.camera_frame is None:
            return False
        if self.T_right_left is None:
            self.T_right_left = self._stereo_baseline(frame_id, P_right)
            if self.T_right_left is None:
                return False
        if self._left_size is not None and tuple(rgb.shape[:2]) != self._left_size:
            self._report("stereo_rectified", f"stereo: the right image is {rgb.shape[1]}x{rgb.shape[0]} but the "
                                              f"left is {self._left_size[1]}x{self._left_size[0]}: a rectified pair "
                                              "has one size; right frames are ignored")
            return False
        if self._K_left is not None:
            Kl, Kr = np.asarray(self._K_left, float), np.asarray(K_right, float)
            if rgb.shape[1] > 0 and not np.allclose(Kl, Kr, rtol=0.01, atol=0.01 * rgb.shape[1]):
                self._report("stereo_rectified", f"stereo: the right camera's K {np.round(Kr, 1).tolist()} differs "
                                                  f"from the left's {np.round(Kl, 1).tolist()}: the pair must be "
                                                  "rectified (image_proc's rectify); right frames are ignored")
                return False
        return self.engine.add_right_frame(stamp_ns, rgb, self.T_right_left)

    def _stereo_baseline(self, right_frame: str, P_right: np.ndarray | None) -> np.ndarray | None:
        """(4,4) ``T_right_left`` from the right camera_info's P, or from TF; None (reported) when unknown."""
        from mono_depth_ros.geometry import stereo_T_source_target
        if P_right is not None:
            P = np.asarray(P_right, dtype=np.float64).reshape(3, 4)
            if P[0, 0] > 0 and P[0, 3] != 0:
                baseline = -P[0, 3] / P[0, 0]
                log.info("adaptation: stereo baseline %.4f m from the right camera_info's P", baseline)
                return stereo_T_source_target(baseline, dtype=torch.float64)[0].numpy()
        left = self.camera_frame
        try:
            T = np.asarray(self.transforms.lookup(right_frame, left, 0), dtype=np.float64)
        except Exception as exc:  # TfError / LookupError / tf2's: the text says which transform is missing
            self._report("stereo_baseline", f"stereo: the right camera_info's P has no baseline (Tx = 0) and the "
                                            f"transform {right_frame} <- {left} is unknown: {exc}")
            return None
        log.info("adaptation: stereo T_right_left from TF, t = %s", np.round(T[:3, 3], 4).tolist())
        return T

    # -------------------------------------------------------------- steps
    def run_due(self, limit: int | None = None, on_report: Callable[[StepReport], None] | None = None) -> int:
        """Take the steps the credits allow (at most ``limit``). Returns how many ran."""
        n = 0
        while (limit is None or n < limit) and self.pacer.take():
            mark = self.pacer.mark()
            rep = self.engine.step()
            if rep is None:
                self.pacer.clear(since=mark)  # nothing trainable yet: wait for the next frame
                break
            n += 1
            if on_report is not None:
                on_report(rep)
        return n

    def step(self) -> StepReport | None:
        """One step now, regardless of credits (tools, tests)."""
        return self.engine.step()

    # -------------------------------------------------------------- control
    def set_enabled(self, on: bool) -> None:
        self.engine.enabled = bool(on)
        if not on:
            self.pacer.clear()

    def reset_time(self, reason: str) -> None:
        """Time jumped (``/clock`` or stamps going backwards, or far forwards): forget buffered
        motion and the frame history, so no pose and no frame pair spans the jump."""
        super().reset_time(reason)
        self.engine.clear_frames()
        self.pacer.clear()
        self.T_right_left = None   # looked up again (TF was cleared too)

    def close(self) -> None:
        """Release the engine (stops its training process, if it has one)."""
        self.engine.close()

    def stats(self) -> dict:
        out = self.engine.stats()
        out.update(self.egomotion_stats())
        return out
