"""Online self-supervised adaptation: one engine, fed by the live node or straight from a bag.

The engine receives frames (image + K + stamp) and answers nothing itself
about motion: a :class:`~mono_depth_ros.egomotion.FrameSelector` (over an
:class:`~mono_depth_ros.egomotion.EgoMotionProvider`) picks, for a target
frame t, the source frames t-k / t+k by motion and gives their metric relative
poses. Each :meth:`AdaptationEngine.step` then takes one monodepth2 step
(known poses, per-pixel minimum reprojection, auto-masking, smoothness) on the
newest ready triplet plus ``replay_per_step`` triplets drawn from a reservoir
replay buffer (CoMoDA: 1 current + 3 replayed), with BatchNorm statistics
frozen and optional L2 regularisation toward the starting weights.

Guard: a non-finite step (skipped by :func:`guarded_step`) three times in a row,
a loss spike against its running average, a disparity map that collapses toward
a flat one, explodes, or saturates at the near limit, or a candidate that does
clearly worse than the served weights on the same batch rolls the training copy
back to the last good weights (and halves the learning rate). The serving
network only ever receives *verified* weights: weights whose own loss on a fresh
batch passed those checks and was no worse than the served weights' loss on
that same batch (a paired test, far less noisy than a running average). So
depth from a diverged network is never published.

``AdaptConfig.step``: "fast" (the node's default) trains on random whole-height crops with the
sources whole, scores each loss scale at its own resolution, batches the anchors into the training
pass and serves a moving average of the trained weights (verified the same way); "reference" is
release 0.2's step, kept for comparison (docs/learning.md, "Learning at camera pace").
"""
from __future__ import annotations

import contextlib
import copy
import logging
import random
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from mono_depth_ros.learning.step import StepStatus, guarded_step
from mono_depth_ros.losses import (SCALE_MODES, FastSelfSupervisedLoss, SelfSupervisedLoss, compile_photometric,
                                   full_res_depth)
from mono_depth_ros.preprocess import resize_rgb
from mono_depth_ros.models import DepthNet
from mono_depth_ros.options import option

from .calibration import IntrinsicsCalibrator
from .guard import Guard, Health, Verdict
from .intrinsics import INTRINSICS_MODES, IntrinsicsCorrection
from .motion import ObjectMotion
from .replay import ReplayBuffer
from .serving import ServingPolicy, state_copy
from .terms import (SMOOTHNESS_WEIGHT, AnchorTerm, LossTerm, ObjectMotionTerm, RegularisationTerm, ReprojectionTerm,
                    SmoothnessTerm, StepInputs, StereoTerm, TermContext)
from .triplets import Triplet, TripletBuilder

__all__ = ["AdaptConfig", "Triplet", "ReplayBuffer", "AdaptationEngine", "StepReport", "STEP_KINDS"]

#: ``AdaptConfig.step`` choices.
STEP_KINDS = ("fast", "reference")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptConfig:
    """Adaptation settings. Fields with an :func:`~mono_depth_ros.options.option` are node parameters
    (``adapt_*``) and ``mono-depth adapt`` options, derived in :mod:`mono_depth_ros.settings`."""

    lr: float = option(3e-4, "adapt_lr", "adaptation learning rate (Adam)", range=(1e-7, 1.0), cli="--lr")
    train_height: int = 96
    train_width: int = 320
    replay_capacity: int = 300
    replay_per_step: int = option(3, "adapt_replay_per_step", "replayed samples mixed into each step (CoMoDA: 3)",
                                  range=(0, 16), read_only="sets the training batch size", cli="--replay-per-step")
    regularization: float = 0.0          # L2 pull toward the starting weights (parameter space)
    # Keep the starting depth on source-domain anchor images (function space).
    anchor_weight: float = option(0.3, "adapt_anchor_weight", "weight of the anchor (distillation) term; 0 = off",
                                  range=(0.0, 100.0), read_only="anchor images are loaded (or not) at start",
                                  cli="--anchor-weight")
    anchor_per_step: int = 2             # anchor images per step
    swap_every: int = 5                  # serving weights refreshed every N healthy steps
    good_every: int = 5                  # last-good snapshot every N healthy steps
    spike_factor: float = 2.0            # loss > factor * running mean -> rollback (crops vary more than frames)
    max_near_fraction: float = 0.2       # > this share of pixels at < 2*min_depth = saturated (garbage)
    loss_ema: float = 0.95
    warmup_steps: int = 10               # no spike test before this many steps
    collapse_ratio: float = 0.3          # disparity std/mean outside [r, 1/r] x its running mean = degenerate
    min_disp_cv: float = 1e-3            # ... or below this absolute floor
    max_nonfinite_in_a_row: int = 3
    swap_tolerance: float = 0.02         # swap only if candidate loss <= served loss * (1 + this), same batch
    regress_factor: float = 1.25         # candidate loss > served loss * this on the same batch -> rollback
    rollback_lr_factor: float = 0.5      # learning rate multiplied by this after each rollback
    min_lr_fraction: float = 1 / 64      # ... but never below lr * this
    grad_clip: float = 5.0
    max_pending: int = 30                # targets waiting for motion / later frames
    seed: int = 0
    # The step (docs/learning.md, "Learning at camera pace"): "fast" trains on random crops of the
    # training frames with the sources whole, scores each scale at its own resolution and runs
    # the anchor images in the same forward pass; "reference" is the step of release 0.2 (whole
    # frames, every scale upsampled to full resolution, anchors in a forward of their own).
    # Crops keep the full height by default: a monocular network reads depth from a pixel's row
    # (the ground plane), and random vertical offsets taught it wrong rows (docs/learning.md).
    step: str = option("fast", "adapt_step", "training step: fast (random crops at full resolution, each loss "
                       "scale at its own resolution; docs/learning.md) or reference (release 0.2's step: whole "
                       "frames, every scale upsampled to full resolution, ~8x slower)", choices=STEP_KINDS,
                       read_only="the loss and the served weight average are built at start", cli="--step")
    crop_width: int = option(192, "adapt_crop_width", "fast step: width of the random training crop (multiple of 32; "
                             "Depth Anything V2: rounded down to 14s; 0 or >= the training width = whole width)",
                             range=(0, 2048), step=2, read_only="sets the training tensor shape")
    crop_height: int = option(0, "adapt_crop_height", "fast step: height of the random training crop (multiple of 32; "
                              "Depth Anything V2: rounded down to 14s; 0 or >= the training height = whole height, "
                              "the default: depth is read from a pixel's row)", range=(0, 2048), step=2,
                              read_only="sets the training tensor shape")
    scale_mode: str = option("native", None, "fast step: score each scale at its own resolution (native) or "
                             "upsampled (monodepth2)", choices=SCALE_MODES, cli="--scale-mode")
    num_scales: int = option(4, None, "loss scales used", choices=(1, 2, 3, 4), cli="--scales")
    size_multiple: int = 32              # the network's DepthNet.size_multiple (14 for Depth Anything V2)
    # Fast step: what is served (and saved) is an exponential moving average of the trained weights
    # (decay per step; 0 = the trained weights themselves, as the reference step does). Hundreds of
    # small steps on crops move the weights noisily; their average is the better network.
    ema_decay: float = 0.99
    # The fast step's SSIM+L1 kernels compiled by torch.compile (inductor, C++) in a background thread at
    # start; eager kernels until then, and for good if compiling fails (no C++ compiler, ...). Off by
    # default: ~7% faster steps, but ~37 s of the training core to compile on a cold inductor cache
    # (~3 s warm), a loss in a 2-minute drive; worth it for long drives (docs/learning.md).
    compile_loss: bool = option(False, "adapt_compile_loss", "fast step: compile the SSIM+L1 kernels with "
                                "torch.compile (needs a C++ compiler) in a background thread at start, eager "
                                "until ready or if it fails: ~7% faster steps after ~37 s of compiling (~3 s "
                                "with inductor's disk cache warm; docs/learning.md)", read_only="compiled once at start")
    # Stereo (docs/learning.md, "Stereo"): the right image of a rectified pair is one more source of the
    # minimum reprojection (its pose the known baseline) and monodepth's left-right term is added.
    stereo: bool = option(False, "adapt_stereo", "learn from a rectified stereo pair too: the right image (topic "
                          "adapt_right_image_topic) is a source with the known baseline (right camera_info P, or "
                          "TF), and monodepth's left-right consistency term is added; keeps the scale metric "
                          "while the vehicle stands still", read_only="the stereo subscriptions and the loss "
                          "terms are built at start")
    lr_consistency_weight: float = option(1.0, "adapt_lr_consistency_weight", "stereo: weight of the left-right "
                                          "disparity consistency (monodepth: 1.0) inside the stereo term",
                                          range=(0.0, 100.0), read_only="the loss terms are built at start",
                                          cli="--lr-consistency-weight")
    stereo_sync_tolerance: float = 0.005   # s: largest stamp difference of a left and a right image that pair
    # Intrinsics (docs/learning.md, "Intrinsics"): fx, fy, cx, cy learned from the photometric loss with the
    # known metric poses, as a correction of the reported K (log focal ratios, principal point offsets in
    # units of the image size: adapt/intrinsics.py), bounded per step and rolled back with the weights.
    intrinsics: str = option("off", "adapt_intrinsics", "learn the camera intrinsics online: off; refine = correct "
                             "the camera_info's K; estimate = no camera_info needed: start from camera_hfov_deg "
                             "(principal point at the centre) and serve with the learned K; the corrected K is "
                             "published on camera_info_calibrated", choices=INTRINSICS_MODES,
                             read_only="the learned intrinsics and their optimiser are built at start",
                             cli="--intrinsics")
    intrinsics_lr: float = option(2e-3, "adapt_intrinsics_lr", "learning rate (Adam) of the intrinsics: roughly "
                                  "the largest change per step of log(f) and of the principal point in units of "
                                  "the image size", range=(1e-6, 0.1), read_only="the intrinsics' optimiser is "
                                  "built at start", cli="--intrinsics-lr")
    camera_hfov_deg: float = option(90.0, "camera_hfov_deg", "adapt_intrinsics estimate: horizontal field of view "
                                    "of the first guess of K while no camera_info arrives [deg]", range=(10.0, 170.0),
                                    read_only="the first guess of K is made at start", cli="--camera-hfov-deg")
    intrinsics_focal_warmup: int = option(100, "adapt_intrinsics_focal_warmup", "adapt_intrinsics: healthy steps "
                                          "before the focal length learns (the principal point learns from the "
                                          "start): a network whose depth scale is still wrong pulls the focal "
                                          "length with it (docs/learning.md, Intrinsics)", range=(0, 100000),
                                          read_only="the intrinsics' schedule is set at start",
                                          cli="--intrinsics-focal-warmup")
    intrinsics_max_step_log_f: float = 0.005   # largest change of log(f) per step
    intrinsics_max_step_c: float = 0.002       # largest change of the principal point per step (image sizes)
    intrinsics_fixed_aspect: bool = True       # one focal scale for fx and fy (adapt/intrinsics.py says why)
    intrinsics_focal_from_x: bool = True       # that scale learns from fx's gradient only (adapt/intrinsics.py)
    intrinsics_average: float = 0.0            # > 0: serve an exponential average of the correction (this decay)
    intrinsics_calibration: bool = option(True, "adapt_intrinsics_calibration", "adapt_intrinsics: fit the focal "
                                          "length (and the principal point) on a buffer of turning frame pairs "
                                          "half a second apart instead of the training loss's gradient "
                                          "(adapt/calibration.py; docs/learning.md, Intrinsics)",
                                          read_only="the calibrator is built at start")
    intrinsics_calibration_every: int = 50     # healthy steps between two fits (after the focal warm-up)
    intrinsics_calibration_gap: float = 0.5    # s between the two frames of a calibration pair
    intrinsics_calibration_min_per_direction: int = 0   # pairs of each turn direction a fit needs (0: one is enough)
    intrinsics_calibration_max_change: float = 0.25     # largest change of log f per fit (the principal point: /10)
    intrinsics_calibration_iterations: int = 80         # Adam iterations per fit
    intrinsics_calibration_pairs: int = 8               # pairs kept per turn direction (the largest turns)
    intrinsics_calibration_far_m: float = 0.0           # > 0: the fit scores only pixels farther than this (m)
    intrinsics_calibration_shared_focal: bool = False   # the fit's fy follows fx (else fy is free: a nuisance)
    intrinsics_calibration_depth_grid: int = 8          # the fit frees the depth on cells this wide (px; 0: held)
    intrinsics_calibration_coarse: bool = True          # the fit starts at 1/8 and 1/4 of the training size
    intrinsics_calibration_point: bool = True           # after the first fit the principal point is the fits' only
    intrinsics_calibration_max_slack: int = 8           # settled fits double the interval up to this multiple (1: off)
    # Moving objects (docs/learning.md, "Moving objects"; Li et al. 2020): a small separate network predicts
    # a 3-D translation field per source that moves the target's pixels on top of the camera's motion in
    # the warp, with group smoothness + L1/2 sparsity; off for the first N steps (depth first).
    object_motion: bool = option(False, "adapt_object_motion", "learn a dense 3-D translation field of moving "
                                 "objects on top of the camera's motion (Li et al. 2020: a small separate "
                                 "network; group smoothness + L1/2 sparsity); fast step only",
                                 read_only="the motion network and the loss terms are built at start")
    object_motion_after_steps: int = option(100, "adapt_object_motion_after_steps", "adapt_object_motion: the "
                                            "field enters the warp after this many training steps (depth and "
                                            "camera motion first)", range=(0, 1000000),
                                            read_only="the loss terms are built at start",
                                            cli="--object-motion-after-steps")
    object_motion_smoothness: float = 0.05   # group smoothness of the field / |camera translation|
    object_motion_sparsity: float = 0.05     # L1/2 sparsity of the field / |camera translation|
    object_motion_lr: float = 1e-3           # Adam learning rate of the motion network
    object_motion_grad_clip: float = 1.0     # gradient norm limit of the motion network (its own)
    object_motion_zero_median: bool = True   # remove each field's median: no field shared by the image (motion.py)

    def __post_init__(self):
        m = self.size_multiple
        if self.train_height % m or self.train_width % m:
            raise ValueError(f"training size must be multiples of {m}, got {self.train_width}x{self.train_height}")
        if self.crop_height % m or self.crop_width % m or self.crop_height < 0 or self.crop_width < 0:
            raise ValueError(f"crop size must be multiples of {m} (0 = whole frame), "
                             f"got {self.crop_width}x{self.crop_height}")
        if self.step not in STEP_KINDS:
            raise ValueError(f"step must be one of {STEP_KINDS}, got {self.step!r}")
        if self.scale_mode not in SCALE_MODES:
            raise ValueError(f"scale_mode must be one of {SCALE_MODES}, got {self.scale_mode!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 1 <= self.num_scales <= 4:
            raise ValueError(f"num_scales must be in 1..4, got {self.num_scales}")
        if not (0 < self.lr <= 1.0):
            raise ValueError(f"lr must be in (0, 1], got {self.lr}")
        if self.stereo_sync_tolerance < 0 or self.lr_consistency_weight < 0:
            raise ValueError("stereo_sync_tolerance >= 0 and lr_consistency_weight >= 0 required")
        if self.intrinsics not in INTRINSICS_MODES:
            raise ValueError(f"intrinsics must be one of {INTRINSICS_MODES}, got {self.intrinsics!r}")
        if not (0 < self.intrinsics_lr <= 1.0) or not 0 < self.camera_hfov_deg < 180:
            raise ValueError("intrinsics_lr in (0, 1] and camera_hfov_deg in (0, 180) required")
        bad = [f"intrinsics_calibration_{name} {rule} required, got {value!r}" for name, value, ok, rule in (
            ("every", self.intrinsics_calibration_every, self.intrinsics_calibration_every >= 1, ">= 1"),
            ("max_slack", self.intrinsics_calibration_max_slack, self.intrinsics_calibration_max_slack >= 1, ">= 1"),
            ("gap", self.intrinsics_calibration_gap, self.intrinsics_calibration_gap > 0, "> 0"),
            ("max_change", self.intrinsics_calibration_max_change, self.intrinsics_calibration_max_change > 0, "> 0"),
            ("depth_grid", self.intrinsics_calibration_depth_grid, self.intrinsics_calibration_depth_grid >= 0,
             ">= 0")) if not ok]
        if bad:
            raise ValueError("; ".join(bad))
        if self.object_motion and self.step != "fast":
            raise ValueError("object_motion needs the fast step (its loss warps with the field)")
        if self.object_motion_after_steps < 0 or self.object_motion_grad_clip <= 0 or self.object_motion_lr <= 0:
            raise ValueError("object_motion_after_steps >= 0, object_motion_grad_clip > 0 and "
                             "object_motion_lr > 0 required")
        if self.replay_per_step < 0 or self.replay_capacity < 1:
            raise ValueError("replay_per_step >= 0 and replay_capacity >= 1 required")


@dataclass
class StepReport:
    status: str                      # ok | skipped_* | rollback_<Verdict value>
    loss: float | None = None
    target_ns: int | None = None
    batch: int = 0
    seconds: float = 0.0


def calibration_gap_ns(cfg: AdaptConfig) -> int | None:
    """The gap of the intrinsics calibrator's frame pairs (ns), or None when it is off."""
    if cfg.intrinsics == "off" or not cfg.intrinsics_calibration:
        return None
    return round(cfg.intrinsics_calibration_gap * 1e9)


def learned_share(frames, learned: int) -> float:
    """Share of the learnable frames (:class:`~.triplets.FrameCounters`: enough motion to pair, or a
    stereo pair) that a healthy step learned from (``learned``)."""
    moving = frames.frames - frames.no_motion + frames.stereo_only
    return learned / moving if moving > 0 else 0.0


def frame_stats(enabled: bool, f) -> dict:
    """What the feeding side knows: frames offered, paired, refused (:class:`~.triplets.FrameCounters`)."""
    return {"adapt_enabled": enabled, "adapt_frames": f.frames, "adapt_duplicate_frames": f.duplicate_frames,
            "adapt_time_resets": f.time_resets, "adapt_no_motion": f.no_motion,
            "adapt_right_frames": f.right_frames, "adapt_stereo_only": f.stereo_only}


@dataclass
class _Counters:
    steps: int = 0
    skipped: int = 0
    rollbacks: int = 0
    learned: int = 0                 # fresh targets trained on in a healthy step
    rollback_reasons: dict = field(default_factory=dict)


class AdaptationEngine:
    """One online-adaptation learner, assembled from its parts.

    * :class:`~.triplets.TripletBuilder`: frames in, the newest ready training triplet out;
    * :class:`~.replay.ReplayBuffer`: past triplets mixed into each step;
    * the loss: a list of weighted :mod:`~.terms` (photometric, smoothness, anchor, regularisation);
    * :class:`~.guard.Guard`: a :class:`~.guard.Verdict` on every step;
    * :class:`~.serving.ServingPolicy`: only verified weights reach ``on_weights``.

    Threads: :meth:`add_frame` / :meth:`clear_frames` on the feeding thread; :meth:`step`,
    :meth:`train_batch`, :meth:`set_lr`, :meth:`reset_to_initial` on the training thread or under
    its lock; :meth:`stats` and :meth:`good_state` from any thread.

    Args:
        model: the network to adapt (a private copy is trained).
        selector: motion-based source-frame selector (``select(stamp) -> FrameSelection``,
            ``add_frame(stamp)``, ``frames``).
        config: :class:`AdaptConfig`.
        on_weights: called with a verified state dict every ``swap_every`` healthy steps
            (and after a rollback / reset) — the serving network's atomic swap.
        anchors: (N,H,W,3) uint8 source-domain images for the anchor term, or None.
    """

    def __init__(self, model: DepthNet, selector, config: AdaptConfig | None = None,
                 on_weights: Callable[[dict], None] | None = None, anchors: np.ndarray | None = None):
        self.cfg = cfg = config or AdaptConfig()
        self.lr = cfg.lr
        self.model = copy.deepcopy(model).float().train()
        self.device = next(self.model.parameters()).device   # frames are kept on the CPU, batches moved here
        self.model.freeze_batchnorm(True)
        if cfg.step == "reference":
            loss_fn = SelfSupervisedLoss(self.model.min_depth, self.model.max_depth, smoothness_weight=0.0)
            self.crop: tuple[int, int] | None = None
            smooth_scales = None
        else:
            loss_fn = FastSelfSupervisedLoss(self.model.min_depth, self.model.max_depth, smoothness_weight=0.0,
                                             scale_mode=cfg.scale_mode, num_scales=cfg.num_scales)
            ch = cfg.crop_height if 0 < cfg.crop_height < cfg.train_height else cfg.train_height
            cw = cfg.crop_width if 0 < cfg.crop_width < cfg.train_width else cfg.train_width
            self.crop = None if (ch, cw) == (cfg.train_height, cfg.train_width) else (ch, cw)
            smooth_scales = cfg.num_scales
        self.loss_fn = loss_fn
        # The fast step feeds the network channels_last images: oneDNN's depthwise and 1x1 convolutions
        # (forward and backward) run ~1.4x faster on them than on NCHW at one thread. The parameters stay
        # NCHW (state dicts, checkpoints and serving unchanged); the disparities have one channel, so the
        # loss sees the same memory layout. Measured in docs/learning.md ("Learning at camera pace").
        self.net_memory_format = torch.channels_last if cfg.step == "fast" else torch.contiguous_format
        self.initial = state_copy(self.model)
        self.triplets = TripletBuilder(selector, (cfg.train_height, cfg.train_width), cfg.max_pending,
                                       round(cfg.stereo_sync_tolerance * 1e9) if cfg.stereo else None,
                                       calibration_gap_ns(cfg))
        self.replay = ReplayBuffer(cfg.replay_capacity, cfg.seed)
        self._rng = random.Random(cfg.seed + 1)
        self.guard = Guard(cfg)
        self.serving = ServingPolicy(self.model, cfg.swap_every, cfg.good_every, cfg.swap_tolerance,
                                     cfg.ema_decay if cfg.step == "fast" else 0.0, on_weights)
        self._shadow = copy.deepcopy(self.model).eval()   # evaluates served / averaged weights, no gradients
        with self._own_rng(0):   # the motion network's initial weights come from the seed
            self.object_motion = ObjectMotion(self.model.min_depth, self.model.max_depth,
                                              cfg.object_motion_after_steps, lambda: self.counters.steps,
                                              self.device, zero_median=cfg.object_motion_zero_median
                                              ) if cfg.object_motion else None
        self.terms: list[LossTerm] = [ReprojectionTerm(loss_fn, motion=self.object_motion),
                                      SmoothnessTerm(SMOOTHNESS_WEIGHT, smooth_scales)]
        self.anchor_term = self._anchor_term(anchors)
        if self.anchor_term is not None:
            self.terms.append(self.anchor_term)
        if cfg.stereo:
            self.terms.append(StereoTerm(self.model.min_depth, self.model.max_depth, cfg.lr_consistency_weight))
        if self.object_motion is not None:
            self.terms.append(ObjectMotionTerm(self.object_motion, cfg.object_motion_smoothness,
                                               cfg.object_motion_sparsity))
        if cfg.regularization > 0:
            self.terms.append(RegularisationTerm(self.model, cfg.regularization))
        # Learned intrinsics (off: None): snapshots at start, at the rollback point and as served.
        self.intrinsics: IntrinsicsCorrection | None = None
        if cfg.intrinsics != "off":
            self.intrinsics = IntrinsicsCorrection(cfg.intrinsics_max_step_log_f, cfg.intrinsics_max_step_c,
                                                   fixed_aspect=cfg.intrinsics_fixed_aspect,
                                                   focal_from_x=cfg.intrinsics_focal_from_x,
                                                   average_decay=cfg.intrinsics_average).to(self.device)
            self._intr_initial = self.intrinsics.snapshot()
            self._intr_good = self._intr_served = self.intrinsics.snapshot()
        # The focal length from turning pairs (adapt/calibration.py); the principal point learns from the
        # training loss until the first fit, then from the fits (intrinsics_calibration_point).
        self.calibrator = IntrinsicsCalibrator(
            per_direction=cfg.intrinsics_calibration_pairs,
            min_per_direction=cfg.intrinsics_calibration_min_per_direction,
            iterations=cfg.intrinsics_calibration_iterations, max_change_log_f=cfg.intrinsics_calibration_max_change,
            max_change_c=cfg.intrinsics_calibration_max_change / 10, far_m=cfg.intrinsics_calibration_far_m,
            shared_focal=cfg.intrinsics_calibration_shared_focal,
            depth_grid=cfg.intrinsics_calibration_depth_grid,
            coarse=(8, 4) if cfg.intrinsics_calibration_coarse else ()) if calibration_gap_ns(cfg) is not None else None
        self._last_fit_step = 0
        self._fit_slack = 1          # the interval's multiple (doubles while fits settle)
        self.optimizer = self._new_optimizer()
        self.counters = _Counters()
        self.enabled = True
        self.last_loss: float | None = None
        self._healthy = 0
        self._nonfinite_run = 0
        self._train_lock = threading.Lock()
        self._draws = 0
        self.loss_kernels = "eager"
        if cfg.step == "fast" and cfg.compile_loss:
            self._start_compiling()

    def _start_compiling(self) -> None:
        """Compile the SSIM+L1 kernels for this step's shapes (batch x crop at each scale) in a daemon
        thread; steps run the eager kernels meanwhile and pick the compiled ones up once all are ready
        (:func:`~mono_depth_ros.losses.compile_photometric`). torch's ``TORCH_COMPILE_DISABLE=1`` (the
        test suite) skips it."""
        import torch._dynamo.config as dynamo_config
        if dynamo_config.disable:
            self.loss_kernels = "eager (TORCH_COMPILE_DISABLE)"
            return
        cfg = self.cfg
        h, w = self.crop or (cfg.train_height, cfg.train_width)
        B = 1 + cfg.replay_per_step
        shapes = [(B, 3, h >> s, w >> s) for s in range(cfg.num_scales if cfg.scale_mode == "native" else 1)]
        self.loss_kernels = "compiling"

        def run():
            try:
                seconds = compile_photometric(shapes, device=self.device.type)
            except Exception as exc:  # noqa: BLE001 -- no C++ compiler, an inductor error, ...: eager stays
                self.loss_kernels = "eager (compiling failed)"
                log.warning("adaptation: compiling the SSIM+L1 kernels failed, the eager ones stay "
                            "(adapt_compile_loss: false skips trying): %s: %s", type(exc).__name__, exc)
                return
            self.loss_kernels = "compiled"
            log.info("adaptation: SSIM+L1 kernels compiled for %d shapes in %.1f s", len(shapes), seconds)
        threading.Thread(target=run, name="compile-loss", daemon=True).start()

    @contextlib.contextmanager
    def _own_rng(self, draw: int):
        """torch's random numbers (the loss's tie-breaking noise, initial weights) from the engine's seed
        and ``draw`` only, not from whatever the process drew before: the same triplets give the same
        weights in this process and in a training process of its own (adapt/worker.py)."""
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.cfg.seed * 1_000_003 + draw)
            yield

    # ------------------------------------------------------------ parts
    @property
    def selector(self):
        return self.triplets.selector

    @property
    def anchors(self):
        return None if self.anchor_term is None else self.anchor_term.images

    @property
    def anchor_logdepth(self):
        return None if self.anchor_term is None else self.anchor_term.logdepth

    @property
    def served(self):
        return self.serving.served

    @property
    def loss_avg(self) -> float | None:
        return self.guard.loss_avg

    @torch.no_grad()
    def _anchor_term(self, anchors: np.ndarray | None) -> AnchorTerm | None:
        """Source-domain anchor images (N,H,W,3) uint8 -> the anchor term: (M,3,h,w) uint8 + the
        starting network's log depth of them.

        Experience replay of the current drive alone cannot hold the domain the weights were
        trained on (CoMoDA replays past experience for that reason). Each step also asks the
        network to keep its *starting* depth on a couple of source-domain images. When the step
        trains on crops, the anchors are fixed crops (3 across, and 2 down when the crop is
        shorter than the frame, of every image) with the starting depth of that same crop, so the
        term compares like with like.
        """
        cfg = self.cfg
        if anchors is None or len(anchors) == 0 or cfg.anchor_weight <= 0:
            return None
        h, w = cfg.train_height, cfg.train_width
        imgs = np.stack([resize_rgb(a, (h, w)) for a in anchors])
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous().to(self.device)
        if self.crop is not None:
            ch, cw = self.crop
            ys = sorted({round(v) for v in np.linspace(0, h - ch, 2)})
            xs = sorted({round(v) for v in np.linspace(0, w - cw, 3)})
            x = torch.stack([img[:, y0:y0 + ch, x0:x0 + cw] for img in x for y0 in ys for x0 in xs])
        ref = []
        for i in range(0, len(x), 4):
            disp = self.model.predict_disps(x[i:i + 4].float() / 255.0)[0]
            ref.append(torch.log(self.model.disp_to_depth(disp)))
        return AnchorTerm(x, torch.cat(ref), cfg.anchor_weight, cfg.anchor_per_step, self._rng,
                          batched=cfg.step == "fast")

    def _new_optimizer(self) -> torch.optim.Optimizer:
        # fused: one kernel over all parameters instead of ~10 small ops per tensor (CPU and CUDA).
        groups = [{"params": list(self.model.parameters())}]
        if self.intrinsics is not None:   # its own learning rate (not halved by rollbacks: the steps are bounded)
            groups.append({"params": list(self.intrinsics.parameters()), "lr": self.cfg.intrinsics_lr,
                           "intrinsics": True})
        om = getattr(self, "object_motion", None)
        if om is not None:   # the motion network: its own learning rate and gradient-norm limit (Li et al.: clip)
            groups.append({"params": list(om.parameters()), "lr": self.cfg.object_motion_lr, "object_motion": True})
        opt = torch.optim.Adam(groups, lr=self.lr, fused=True)
        if om is not None:
            clip = self.cfg.object_motion_grad_clip

            def clip_motion(*_):
                torch.nn.utils.clip_grad_norm_(list(om.parameters()), clip)
            opt.register_step_pre_hook(clip_motion)
        return opt

    # ----------------------------------------------------------------- frames
    def add_frame(self, stamp_ns: int, rgb: np.ndarray, K: np.ndarray) -> None:
        """Offer one camera frame: (H,W,3) uint8 RGB and its (3,3) K at that size."""
        self.triplets.add_frame(stamp_ns, rgb, K)

    def add_right_frame(self, stamp_ns: int, rgb: np.ndarray, T_right_left: np.ndarray) -> bool:
        """Offer the right image of a rectified pair (H,W,3) uint8 and ``T_right_left`` (4,4); False when
        stereo is off (see :meth:`~.triplets.TripletBuilder.add_right_frame`)."""
        return self.triplets.add_right_frame(stamp_ns, rgb, T_right_left)

    def clear_frames(self) -> None:
        """Forget frame history and pending targets (time jumped: never pair frames across it).

        Triplets already in the replay buffer stay: each was built from one consistent stretch of time.
        """
        self.triplets.clear()

    # ------------------------------------------------------------------ steps
    def step(self) -> StepReport | None:
        """One training step on the newest ready triplet + ``replay_per_step`` replayed ones.

        When no fresh triplet is ready the step trains on a replay-only batch (once the
        buffer holds enough). None when nothing can be trained.
        """
        if not self.enabled:
            return None
        return self.train_next(self.triplets.next())

    def train_next(self, trip: Triplet | None) -> StepReport | None:
        """The training room's half of :meth:`step`: ``trip`` (the newest ready triplet, or None) +
        replayed ones, one guarded step. Runs where the weights live (this process, or the training
        process of :class:`~.worker.ProcessEngine`)."""
        with self._train_lock:
            if trip is not None and trip.wide_source is not None:
                if self.calibrator is not None:
                    self.calibrator.offer(trip.stamp_ns, trip.target, trip.wide_source, trip.T_wide_target, trip.K)
                trip = replace(trip, wide_source=None, T_wide_target=None)   # the replay keeps no third image
            if trip is not None:
                batch = [trip] + self.replay.sample(self.cfg.replay_per_step, exclude_stamp=trip.stamp_ns)
                self.replay.add(trip)
            elif len(self.replay) < self.cfg.replay_per_step + 1:
                return None
            else:
                batch = self.replay.sample(self.cfg.replay_per_step + 1)
            self._draws += 1
            with self._own_rng(self._draws):
                return self.train_batch(batch, trip is not None)

    def _inputs(self, batch: list[Triplet]) -> StepInputs:
        """Training tensors of a batch (crops of the targets in the fast step; sources whole)."""
        dev = self.device
        # Triplets may have different source counts (stereo-only, temporal, stereo + temporal): each is
        # padded with repeats of its own first source (a repeat changes no per-pixel minimum).
        n_src = max(len(b.sources) for b in batch)

        def src(b: Triplet, i: int) -> int:
            return i if i < len(b.sources) else 0
        sources = [torch.stack([b.sources[src(b, i)] for b in batch]).to(dev).float().div_(255.0)
                   for i in range(n_src)]
        T = [torch.stack([b.T_source_target[src(b, i)] for b in batch]).to(dev) for i in range(n_src)]
        K = torch.stack([b.K for b in batch])
        if self.intrinsics is not None:   # the learned correction of the whole frames' K (gradients flow to it)
            H, W = batch[0].target.shape[-2:]
            K = self.intrinsics.correct(K.to(dev), W, H)
        rows = [i for i, b in enumerate(batch) if b.right is not None]
        stereo = {}
        if rows and self.cfg.stereo:
            stereo = dict(right_rows=torch.tensor(rows, device=dev),
                          T_right_left=torch.stack([batch[i].T_right_left for i in rows]).to(dev),
                          frame=torch.stack([batch[i].target for i in rows]).to(dev).float().div_(255.0))
        if self.crop is None:
            if stereo:
                stereo["right"] = torch.stack([batch[i].right for i in rows]).to(dev).float().div_(255.0)
            return StepInputs(torch.stack([b.target for b in batch]).to(dev).float().div_(255.0), sources, T,
                              K.to(dev), None, **stereo)
        # Random crops at full resolution: the focal length in pixels (metric scale) is kept; the
        # principal point moves with the crop. The sources stay whole (matches across the border).
        # The right image of a pair is cropped at the same window (a rectified pair shares K).
        ch, cw = self.crop
        H, W = batch[0].target.shape[-2:]
        crops, right, Kc = [], [], K.clone()
        for i, b in enumerate(batch):
            y0, x0 = self._rng.randrange(H - ch + 1), self._rng.randrange(W - cw + 1)
            crops.append(b.target[:, y0:y0 + ch, x0:x0 + cw])
            if stereo and b.right is not None:
                right.append(b.right[:, y0:y0 + ch, x0:x0 + cw])
            Kc[i, 0, 2] -= x0
            Kc[i, 1, 2] -= y0
        if stereo:
            stereo["right"] = torch.stack(right).to(dev).float().div_(255.0)
        return StepInputs(torch.stack(crops).to(dev).float().div_(255.0), sources, T, Kc.to(dev), K.to(dev),
                          **stereo)

    def _health(self, model, disps, judged: float) -> Health:
        d0 = disps[0][:1].detach()
        near = float((model.disp_to_depth(d0) < 2 * model.min_depth).float().mean())
        return Health(judged, float(d0.std() / d0.mean().clamp_min(1e-8)), near)

    def _run_terms(self, model, inputs: StepInputs, net_in: torch.Tensor, extras: list, judged_only: bool):
        """Forward pass + the weighted terms -> (total, parts, health)."""
        out = model.predict_disps(net_in.contiguous(memory_format=self.net_memory_format))
        B = inputs.target.shape[0]
        disps = [d[:B] for d in out] if extras else list(out)
        ctx = TermContext(inputs, model, disps)
        o = B
        for term, n in extras:
            ctx.extra[term.name] = out[0][o:o + n]
            o += n
        total = inputs.target.new_zeros(())
        judged = inputs.target.new_zeros(())
        parts = {}
        for term in self.terms:
            if judged_only and not term.judged:
                continue
            v = term.weight * term(ctx)
            parts[term.name] = v.detach()
            total = total + v
            if term.judged:
                judged = judged + v.detach()
        return total, parts, self._health(model, disps, float(judged))

    def train_batch(self, batch: list[Triplet], fresh: bool) -> StepReport:
        """One guarded step on ``batch`` (the first triplet the fresh one when ``fresh``)."""
        t0 = time.perf_counter()
        cfg = self.cfg
        trip = batch[0]
        inputs = self._inputs(batch)
        due_swap, due_good = self.serving.due(self._healthy)
        pre_state = state_copy(self.model) if (due_swap or due_good) else None
        pre_intr = self.intrinsics.snapshot() if self.intrinsics is not None else None
        pre_served = self.intrinsics.served_snapshot() if self.intrinsics is not None else None
        health = Health()
        swap = {"candidate": None}
        extras, extra_imgs = [], []
        for term in self.terms:
            x = term.extra_inputs(inputs)
            if x is not None:
                extras.append((term, len(x)))
                extra_imgs.append(x)
        net_in = torch.cat([inputs.target, *extra_imgs]) if extra_imgs else inputs.target

        def pre_step_check(total: torch.Tensor) -> str | None:
            verdict = self.guard.judge(health)
            if verdict is Verdict.OK and due_swap:
                # Paired test on this very batch: candidate vs the weights being served.
                served = self._eval_state(self.serving.served, inputs).loss
                if self.guard.regressed(health.loss, served):
                    verdict = Verdict.REGRESSED
                elif self.serving.ema is None:
                    if self.serving.swap_ok(health.loss, served):
                        swap["candidate"] = pre_state
                else:  # the candidate is the weight average: its own loss, disparity checks on this batch
                    h = self._eval_state(self.serving.ema, inputs)
                    if self.serving.swap_ok(h.loss, served) and self.guard.judge(h, spike=False) is Verdict.OK:
                        swap["candidate"] = state_copy(self.serving.ema)
            return None if verdict is Verdict.OK else verdict.value

        def compute():
            total, parts, h = self._run_terms(self.model, inputs, net_in, extras, judged_only=False)
            health.loss, health.disp_cv, health.near = h.loss, h.disp_cv, h.near  # the guard judges these
            return total, parts

        # Guard part 1: judge the weights that produced this loss *before* stepping.
        if self.intrinsics is not None:
            self.intrinsics.focal_frozen = (self.calibrator is not None
                                            or self.counters.steps < cfg.intrinsics_focal_warmup)
            # After the calibrator's first fit the principal point is its too: the training loss's gradient
            # trades cy against the depth of the road (docs/learning.md, Intrinsics, session 8).
            self.intrinsics.point_frozen = (self.calibrator is not None and cfg.intrinsics_calibration_point
                                            and self.calibrator.accepted > 0)
            self.intrinsics.begin_step()
        trained = self.model if self.object_motion is None else torch.nn.ModuleList([self.model,
                                                                                   self.object_motion.net])
        res = guarded_step(trained, self.optimizer, [inputs.target, inputs.sources, inputs.T, inputs.K],
                           compute, grad_clip=cfg.grad_clip, pre_step_check=pre_step_check)
        if self.intrinsics is not None:
            self.intrinsics.bound_step()   # bounded change per step (and overall)
        report = StepReport(res.status, health.loss if res.loss is not None else None,
                            trip.stamp_ns if fresh else None, len(batch), time.perf_counter() - t0)
        if res.status == StepStatus.OK:
            self._nonfinite_run = 0
            self._healthy += 1
            self.counters.steps += 1
            self.counters.learned += int(fresh)
            self.last_loss = health.loss
            self.guard.accept(health)
            # pre_state is verified: its loss and disparity just passed the checks.
            self.serving.commit(pre_state, due_good, swap["candidate"])
            if pre_intr is not None:   # the intrinsics that produced the verified loss go with those weights
                if pre_state is not None and due_good:
                    self._intr_good = pre_intr
                if swap["candidate"] is not None:
                    self._intr_served = pre_served   # pre_intr, or its average (intrinsics_average)
            self.serving.update_average(self.model)
            self._maybe_calibrate()
        elif res.status.startswith("rejected_"):
            self._rollback(Verdict(res.status.removeprefix("rejected_")))
            report.status = "rollback_" + res.status.removeprefix("rejected_")
        else:  # non-finite data/loss/gradient: skipped by guarded_step
            self.counters.skipped += 1
            self._nonfinite_run += 1
            if self._nonfinite_run >= cfg.max_nonfinite_in_a_row:
                self._rollback(Verdict.NONFINITE)
                report.status = "rollback_" + Verdict.NONFINITE.value
        return report

    def _maybe_calibrate(self) -> None:
        """After a healthy step: fit the intrinsics on the calibrator's turning pairs when one is due (every
        ``intrinsics_calibration_every`` steps after the focal warm-up). An accepted fit becomes the
        correction the next steps train with; it is served, and rolled back, with the weights that follow."""
        cfg, c = self.cfg, self.calibrator
        if (c is None or self.counters.steps < cfg.intrinsics_focal_warmup
                or self.counters.steps - self._last_fit_step < cfg.intrinsics_calibration_every * self._fit_slack
                or not c.ready()):
            return
        self._last_fit_step = self.counters.steps
        shadow, dev = self._shadow, self.device
        shadow.load_state_dict(self.model.state_dict())
        shadow.train()
        shadow.freeze_batchnorm(True)

        def depth_fn(x: torch.Tensor) -> torch.Tensor:
            return full_res_depth(shadow.predict_disps(x.to(dev))[0], *x.shape[-2:], shadow.min_depth,
                                  shadow.max_depth).cpu()
        log_f, cc = self.intrinsics.snapshot()
        lf = log_f.expand(2).tolist()
        res = c.fit(depth_fn, (lf[0], lf[0] if self.intrinsics.focal_from_x else lf[1]), tuple(cc.tolist()))
        # A fit that settles (log f within 0.01, the principal point within 0.001) doubles the interval to the
        # next, up to intrinsics_calibration_max_slack times: each costs ~80 Adam iterations over the buffered
        # pairs (docs/learning.md).
        settled = res is not None and res.accepted and abs(res.log_f[0] - lf[0]) < 0.01 and max(
            abs(a - b) for a, b in zip(res.c, cc.tolist())) < 0.001
        self._fit_slack = min(cfg.intrinsics_calibration_max_slack, self._fit_slack * 2) if settled else 1
        if res is None or not res.accepted:
            return
        with torch.no_grad():
            new_f = torch.tensor(res.log_f[:log_f.numel()], dtype=log_f.dtype)
            self.intrinsics.log_f.copy_(new_f.clamp(-self.intrinsics.max_log_f, self.intrinsics.max_log_f))
            self.intrinsics.c.copy_(torch.tensor(res.c, dtype=cc.dtype).clamp(-self.intrinsics.max_c,
                                                                               self.intrinsics.max_c))

    @torch.no_grad()
    def _eval_state(self, state, inputs: StepInputs) -> Health:
        """Judged loss and disparity health of ``state`` on the batch (the shadow network, no gradients)."""
        self._shadow.load_state_dict(state)
        self._shadow.train()
        self._shadow.freeze_batchnorm(True)
        return self._run_terms(self._shadow, inputs, inputs.target, [], judged_only=True)[2]

    def _rollback(self, verdict: Verdict) -> None:
        self.model.load_state_dict(self.serving.rollback_state())
        if self.intrinsics is not None:
            self.intrinsics.restore(self._intr_good)
        self.lr = max(self.lr * self.cfg.rollback_lr_factor, self.cfg.lr * self.cfg.min_lr_fraction)
        self.optimizer = self._new_optimizer()
        reason = verdict.value
        self.counters.rollbacks += 1
        self.counters.rollback_reasons[reason] = self.counters.rollback_reasons.get(reason, 0) + 1
        self._nonfinite_run = 0
        self._healthy = 0
        log.warning("adaptation rolled back to the last good weights (reason: %s; rollbacks so far: %d); "
                    "learning rate now %.2g", reason, self.counters.rollbacks, self.lr)

    # --------------------------------------------------------------- control
    def set_lr(self, lr: float) -> None:
        """New base learning rate (the node's ``adapt_lr`` at runtime): used from the next step on, and the
        base that rollbacks halve from and ``reset_to_initial`` returns to. Any thread; waits for the step in
        progress (under the training lock, so a rollback cannot overwrite it). ValueError outside (0, 1]."""
        cfg = replace(self.cfg, lr=float(lr))    # AdaptConfig checks the range
        with self._train_lock:
            self.cfg = cfg
            self.lr = cfg.lr
            for group in self.optimizer.param_groups:   # the depth network's (intrinsics, object motion: their own)
                if not (group.get("intrinsics") or group.get("object_motion")):
                    group["lr"] = cfg.lr

    def reset_to_initial(self) -> None:
        """Forget everything learned: initial weights for training and serving."""
        with self._train_lock:
            self.model.load_state_dict(self.initial)
            if self.intrinsics is not None:
                self.intrinsics.restore(self._intr_initial)
                self._intr_good = self._intr_served = self.intrinsics.snapshot()
            self.lr = self.cfg.lr
            self.optimizer = self._new_optimizer()
            self.guard.reset()
            self._healthy = 0
            self.serving.reset(self.initial)

    def served_K(self, K: np.ndarray, width: int, height: int) -> np.ndarray:
        """(3,3) reported K of a ``width`` x ``height`` image -> the K served with the served weights: the
        learned correction verified with them (K itself, as float64, while intrinsics are off). Any thread."""
        if self.intrinsics is None:
            return np.asarray(K, dtype=np.float64)
        return IntrinsicsCorrection.apply_snapshot(self._intr_served, K, width, height)

    def intrinsics_state(self) -> dict | None:
        """The served correction: ``log_f`` [fx, fy] and ``c`` [cx, cy] (image sizes); None while off."""
        if self.intrinsics is None:
            return None
        log_f, c = self._intr_served
        return {"log_f": [float(v) for v in log_f.expand(2)], "c": [float(v) for v in c]}

    def good_state(self) -> "OrderedDict[str, torch.Tensor]":
        """The last verified weights (what a checkpoint should hold)."""
        with self._train_lock:
            return copy.deepcopy(self.serving.good_state())

    def stats(self) -> dict:
        return (frame_stats(self.enabled, self.triplets.counters) | self.training_stats()
                | {"adapt_learned_share": self.learned_share()})

    def training_stats(self) -> dict:
        """What the training room knows (steps, rollbacks, loss, ...); :func:`frame_stats` has the rest."""
        c = self.counters
        return {"adapt_steps": c.steps, "adapt_skipped": c.skipped, "adapt_rollbacks": c.rollbacks,
                "adapt_swaps": self.serving.swaps, "adapt_replay": len(self.replay),
                "adapt_learned_frames": c.learned,
                "adapt_object_motion_active": self.object_motion is not None and self.object_motion.active(),
                "adapt_loss": self.last_loss, "adapt_loss_avg": self.guard.loss_avg, "adapt_lr": self.lr,
                "adapt_loss_kernels": self.loss_kernels,
                "rollback_reasons": dict(c.rollback_reasons)} | self._intrinsics_stats()

    def _intrinsics_stats(self) -> dict:
        """The served correction as relative focal changes and principal point offsets (image sizes)."""
        st = self.intrinsics_state()
        if st is None:
            return {}
        (fx, fy), (cx, cy) = (np.exp(st["log_f"]) - 1.0).tolist(), st["c"]
        out = {"adapt_intrinsics_fx_change": fx, "adapt_intrinsics_fy_change": fy,
               "adapt_intrinsics_cx_offset": cx, "adapt_intrinsics_cy_offset": cy}
        if self.calibrator is not None:
            last = self.calibrator.last
            out |= {"adapt_intrinsics_fits": self.calibrator.fits,
                    "adapt_intrinsics_fit_pairs": "%d yaw+, %d yaw-" % self.calibrator.counts(),
                    "adapt_intrinsics_fit_accepted": None if last is None else last.accepted}
        return out

    def learned_share(self) -> float:
        """Share of the learnable frames (frames with enough motion to pair, or a stereo pair) that a step
        learned from."""
        return learned_share(self.triplets.counters, self.counters.learned)

    def optimizer_lrs(self) -> list[float]:
        """The learning rate of each optimiser group (depth network, then intrinsics, object motion)."""
        with self._train_lock:
            return [float(g["lr"]) for g in self.optimizer.param_groups]

    @property
    def learns_intrinsics(self) -> bool:
        return self.intrinsics is not None

    def set_initial(self, state: "OrderedDict[str, torch.Tensor]") -> None:
        """The weights :meth:`reset_to_initial` returns to (the node's configured ones, not a resumed state)."""
        self.initial = state

    def close(self) -> None:
        """Nothing to release in-process (:class:`~.worker.ProcessEngine` stops its training process)."""

    def hold(self):
        """Serving a frame: nothing to pause in-process (a thread cannot be paused; the training process of
        :class:`~.worker.ProcessEngine` is)."""
        return contextlib.nullcontext()

    def config_dict(self) -> dict:
        return asdict(self.cfg)
