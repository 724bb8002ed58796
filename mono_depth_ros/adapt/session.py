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
        self._cv = threading.Condition()

    def credit(self) -> None:
        with self._cv:
            self._credits = min(self._credits + self.steps_per_frame, 4 * max(1.0, self.steps_per_frame))
            self._cv.notify()

    def take(self) -> bool:
        """Use one credit; False when less than one is banked."""
        with self._cv:
            if self._credits >= 1.0:
                self._credits -= 1.0
                return True
            return False

    def clear(self) -> None:
        """Nothing trainable yet: drop the credits (wait for the next frame)."""
        with self._cv:
            self._credits = 0.0

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
    """

    def __init__(self, model, adapt: AdaptConfig | None = None, ego: EgoMotionConfig | None = None,
                 gating: GatingConfig | None = None, steps_per_frame: float = 1.0,
                 on_weights: Callable[[dict], None] | None = None, anchors: np.ndarray | None = None,
                 transforms=None, report: Callable[[str, str], None] | None = None):
        super().__init__(ego, gating, transforms)   # the tf source and the extrinsics ask the same lookup
        adapt = adapt or fit_to_model(model)
        if adapt.size_multiple != int(model.size_multiple):
            raise ValueError(f"adaptation settings are for a size multiple of {adapt.size_multiple}, the network "
                             f"needs {model.size_multiple}: build them with fit_to_model()")
        self.engine = AdaptationEngine(model, self.selector, adapt, on_weights, anchors)
        self.pacer = StepPacer(steps_per_frame)
        self._report = report or (lambda key, text: log.warning(text))

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
        self.engine.add_frame(stamp_ns, rgb, K)
        self.pacer.credit()
        return True

    # -------------------------------------------------------------- steps
    def run_due(self, limit: int | None = None, on_report: Callable[[StepReport], None] | None = None) -> int:
        """Take the steps the credits allow (at most ``limit``). Returns how many ran."""
        n = 0
        while (limit is None or n < limit) and self.pacer.take():
            rep = self.engine.step()
            if rep is None:
                self.pacer.clear()  # nothing trainable yet: wait for the next frame
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

    def stats(self) -> dict:
        out = self.engine.stats()
        out.update(self.egomotion_stats())
        return out
