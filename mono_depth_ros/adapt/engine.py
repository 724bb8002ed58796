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

import copy
import logging
import random
import threading
import time
from collections import OrderedDict, deque
from dataclasses import asdict, dataclass, field
from typing import Callable

import cv2
import numpy as np
import torch

from mono_depth_ros.conventions import scale_intrinsics
from mono_depth_ros.learning.step import StepStatus, guarded_step
from mono_depth_ros.losses import SCALE_MODES, FastSelfSupervisedLoss, SelfSupervisedLoss
from mono_depth_ros.models import DepthNet

__all__ = ["AdaptConfig", "Triplet", "ReplayBuffer", "AdaptationEngine", "StepReport", "STEP_KINDS"]

#: ``AdaptConfig.step`` choices.
STEP_KINDS = ("fast", "reference")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdaptConfig:
    """Adaptation settings (the node maps its ``adapt_*`` parameters onto these)."""

    lr: float = 3e-4
    train_height: int = 96
    train_width: int = 320
    replay_capacity: int = 300
    replay_per_step: int = 3
    regularization: float = 0.0          # L2 pull toward the starting weights (parameter space)
    anchor_weight: float = 0.3           # keep the starting depth on source-domain anchor images (function space)
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
    step: str = "fast"
    crop_width: int = 192                # 0 or >= train_width: whole width
    crop_height: int = 0                 # 0 or >= train_height: whole height
    scale_mode: str = "native"           # losses.SCALE_MODES
    num_scales: int = 4
    size_multiple: int = 32              # the network's DepthNet.size_multiple (14 for Depth Anything V2)
    # Fast step: what is served (and saved) is an exponential moving average of the trained weights
    # (decay per step; 0 = the trained weights themselves, as the reference step does). Hundreds of
    # small steps on crops move the weights noisily; their average is the better network.
    ema_decay: float = 0.99

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
        if self.replay_per_step < 0 or self.replay_capacity < 1:
            raise ValueError("replay_per_step >= 0 and replay_capacity >= 1 required")


@dataclass(frozen=True)
class Triplet:
    """One training sample at training resolution.

    target: (3,h,w) uint8; sources: tuple of (3,h,w) uint8; T_source_target:
    tuple of (4,4) float32 (target-camera points -> source camera, metres);
    K: (3,3) float32.
    """

    stamp_ns: int
    target: torch.Tensor
    sources: tuple
    T_source_target: tuple
    K: torch.Tensor


class ReplayBuffer:
    """Reservoir sampling over every triplet ever offered (uniform over the drive so far)."""

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.items: list[Triplet] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, item: Triplet) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.capacity:
                self.items[j] = item

    def sample(self, n: int, exclude_stamp: int | None = None) -> list[Triplet]:
        pool = [t for t in self.items if t.stamp_ns != exclude_stamp]
        return self._rng.sample(pool, min(n, len(pool)))

    def __len__(self) -> int:
        return len(self.items)


@dataclass
class StepReport:
    status: str                      # ok | skipped_* | rollback_*
    loss: float | None = None
    target_ns: int | None = None
    batch: int = 0
    seconds: float = 0.0


@dataclass
class _Counters:
    frames: int = 0
    duplicate_frames: int = 0
    time_resets: int = 0
    steps: int = 0
    skipped: int = 0
    rollbacks: int = 0
    swaps: int = 0
    no_motion: int = 0
    learned: int = 0                 # fresh targets trained on in a healthy step
    rollback_reasons: dict = field(default_factory=dict)


def _state_copy(model: torch.nn.Module) -> "OrderedDict[str, torch.Tensor]":
    return _state_copy_of(model.state_dict())


def _state_copy_of(state) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k, v.detach().clone()) for k, v in state.items())


class AdaptationEngine:
    """Training copy + replay + guard. Thread-safe: frames may be added while another thread steps.

    Args:
        model: the network to adapt (a private copy is trained).
        selector: motion-based source-frame selector (``select(stamp) -> FrameSelection``,
            ``add_frame(stamp)``).
        config: :class:`AdaptConfig`.
        on_weights: called with a verified state dict every ``swap_every`` healthy steps
            (and after a rollback / reset) — the serving network's atomic swap.
    """

    def __init__(self, model: DepthNet, selector, config: AdaptConfig | None = None,
                 on_weights: Callable[[dict], None] | None = None, anchors: np.ndarray | None = None):
        self.cfg = config or AdaptConfig()
        self.lr = self.cfg.lr
        self.selector = selector
        self.on_weights = on_weights or (lambda sd: None)
        self.model = copy.deepcopy(model).float().train()
        self.device = next(self.model.parameters()).device   # frames are kept on the CPU, batches moved here
        self.model.freeze_batchnorm(True)
        cfg = self.cfg
        if cfg.step == "reference":
            self.loss_fn = SelfSupervisedLoss(self.model.min_depth, self.model.max_depth)
            self.crop: tuple[int, int] | None = None
        else:
            self.loss_fn = FastSelfSupervisedLoss(self.model.min_depth, self.model.max_depth,
                                                  scale_mode=cfg.scale_mode, num_scales=cfg.num_scales)
            ch = cfg.crop_height if 0 < cfg.crop_height < cfg.train_height else cfg.train_height
            cw = cfg.crop_width if 0 < cfg.crop_width < cfg.train_width else cfg.train_width
            self.crop = None if (ch, cw) == (cfg.train_height, cfg.train_width) else (ch, cw)
        self.initial = _state_copy(self.model)
        self.last_good = _state_copy(self.model)
        self.served = _state_copy(self.model)    # what the serving network holds now
        self._shadow = copy.deepcopy(self.model).eval()
        # Weight average served by the fast step (None: serve the trained weights, the reference step).
        self._ema = _state_copy(self.model) if (cfg.step == "fast" and cfg.ema_decay > 0) else None
        self._start_params = [p.detach().clone() for p in self.model.parameters()] if self.cfg.regularization > 0 else None
        self.optimizer = self._new_optimizer()
        self.replay = ReplayBuffer(self.cfg.replay_capacity, self.cfg.seed)
        self._rng = random.Random(self.cfg.seed + 1)
        self.anchors, self.anchor_logdepth = self._prepare_anchors(anchors)
        self.counters = _Counters()
        self.enabled = True
        self.loss_avg: float | None = None
        self.cv_avg: float | None = None
        self.near_avg: float | None = None
        self.last_loss: float | None = None
        self._healthy = 0
        self._nonfinite_run = 0
        self._frames: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._pending: deque[int] = deque()
        self._lock = threading.Lock()
        self._train_lock = threading.Lock()

    @torch.no_grad()
    def _prepare_anchors(self, anchors: np.ndarray | None):
        """Source-domain anchor images (N,H,W,3) uint8 -> (M,3,h,w) uint8 + the starting network's log depth.

        Experience replay of the current drive alone cannot hold the domain the weights were
        trained on (CoMoDA replays past experience for that reason). Each step also asks the
        network to keep its *starting* depth on a couple of source-domain images: a
        distillation term in function space, cheaper and more direct than an L2 pull on weights.
        When the step trains on crops, the anchors are fixed crops (3 across, and 2 down when the
        crop is shorter than the frame, of every image) with the starting depth of that same crop, so the term compares like with like.
        """
        if anchors is None or len(anchors) == 0 or self.cfg.anchor_weight <= 0:
            return None, None
        h, w = self.cfg.train_height, self.cfg.train_width
        imgs = np.stack([a if a.shape[:2] == (h, w) else cv2.resize(a, (w, h), interpolation=cv2.INTER_AREA)
                         for a in anchors])
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
        return x, torch.cat(ref)

    def _anchor_pick(self) -> list[int]:
        return self._rng.sample(range(len(self.anchors)), min(self.cfg.anchor_per_step, len(self.anchors)))

    def _anchor_loss(self) -> torch.Tensor:
        idx = self._anchor_pick()
        disp = self.model.predict_disps(self.anchors[idx].float() / 255.0)[0]
        return (torch.log(self.model.disp_to_depth(disp)) - self.anchor_logdepth[idx]).abs().mean()

    def _new_optimizer(self) -> torch.optim.Optimizer:
        # fused: one kernel over all parameters instead of ~10 small ops per tensor (CPU and CUDA).
        return torch.optim.Adam(self.model.parameters(), lr=self.lr, fused=True)

    # ----------------------------------------------------------------- frames
    def add_frame(self, stamp_ns: int, rgb: np.ndarray, K: np.ndarray) -> None:
        """Offer one camera frame: (H,W,3) uint8 RGB and its (3,3) K at that size."""
        h, w = self.cfg.train_height, self.cfg.train_width
        H, W = rgb.shape[:2]
        small = rgb if (H, W) == (h, w) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        Ks = scale_intrinsics(K, w / W, h / H)
        if not small.flags.writeable or small is rgb:
            small = small.copy()  # own the pixels: message buffers are read-only and may be reused
        img = torch.from_numpy(small).permute(2, 0, 1).contiguous()
        stamp_ns = int(stamp_ns)
        with self._lock:
            if stamp_ns in self._frames:  # a repeated stamp: another image claiming the same instant
                self.counters.duplicate_frames += 1
                return
            self._frames[stamp_ns] = (img, torch.from_numpy(Ks.astype(np.float32)))
            self.selector.add_frame(stamp_ns)
            known = set(self.selector.frames)
            for s in [s for s in self._frames if s not in known]:  # selector pruned it (age / time jump)
                del self._frames[s]
            self._pending.append(stamp_ns)
            while len(self._pending) > self.cfg.max_pending:
                self._pending.popleft()
            self.counters.frames += 1

    def _next_triplet(self) -> Triplet | None:
        """Newest pending target whose sources are ready; NEVER targets are dropped."""
        from mono_depth_ros.egomotion.timeseries import PoseStatus
        with self._lock:
            for stamp in sorted(self._pending, reverse=True):
                if stamp not in self._frames:
                    self._pending.remove(stamp)
                    continue
                sel = self.selector.select(stamp)
                if sel.status is PoseStatus.NOT_YET:
                    continue
                self._pending.remove(stamp)
                if sel.status is PoseStatus.NEVER:
                    self.counters.no_motion += 1
                    continue
                if any(s not in self._frames for s in sel.source_stamps_ns):
                    continue
                # Older pending targets are superseded by this newer one (latest first, bounded work).
                target, K = self._frames[stamp]
                srcs = tuple(self._frames[s][0] for s in sel.source_stamps_ns)
                T_st = tuple(torch.from_numpy(np.linalg.inv(p.T_target_source).astype(np.float32))
                             for p in sel.poses)
                return Triplet(stamp, target, srcs, T_st, K)
        return None

    def clear_frames(self) -> None:
        """Forget frame history and pending targets (time jumped: never pair frames across it).

        Triplets already in the replay buffer stay: each was built from one consistent stretch of time.
        """
        with self._lock:
            self._frames.clear()
            self._pending.clear()
            self.counters.time_resets += 1

    # ------------------------------------------------------------------ steps
    def step(self) -> StepReport | None:
        """One training step on the newest ready triplet + ``replay_per_step`` replayed ones.

        When no fresh triplet is ready the step trains on a replay-only batch (once the
        buffer holds enough). None when nothing can be trained.
        """
        if not self.enabled:
            return None
        trip = self._next_triplet()
        with self._train_lock:
            if trip is not None:
                batch = [trip] + self.replay.sample(self.cfg.replay_per_step, exclude_stamp=trip.stamp_ns)
                self.replay.add(trip)
            elif len(self.replay) < self.cfg.replay_per_step + 1:
                return None
            else:
                batch = self.replay.sample(self.cfg.replay_per_step + 1)
            return self._train(batch, trip is not None)

    def _batch(self, batch: list[Triplet]):
        """Training tensors of a batch: target (B,3,h,w) (crops in the fast step), sources list of
        (B,3,H,W) whole frames, T list of (B,4,4), K (B,3,3) of the target (crop), K_source (B,3,3)
        of the sources or None when the target is the whole frame."""
        dev = self.device
        n_src = min(len(b.sources) for b in batch)
        sources = [torch.stack([b.sources[i] for b in batch]).to(dev).float().div_(255.0) for i in range(n_src)]
        T = [torch.stack([b.T_source_target[i] for b in batch]).to(dev) for i in range(n_src)]
        K = torch.stack([b.K for b in batch])
        if self.crop is None:
            return torch.stack([b.target for b in batch]).to(dev).float().div_(255.0), sources, T, K.to(dev), None
        # Random crops at full resolution: the focal length in pixels (metric scale) is kept; the
        # principal point moves with the crop. The sources stay whole (matches across the border).
        ch, cw = self.crop
        H, W = batch[0].target.shape[-2:]
        crops, Kc = [], K.clone()
        for i, b in enumerate(batch):
            y0, x0 = self._rng.randrange(H - ch + 1), self._rng.randrange(W - cw + 1)
            crops.append(b.target[:, y0:y0 + ch, x0:x0 + cw])
            Kc[i, 0, 2] -= x0
            Kc[i, 1, 2] -= y0
        return torch.stack(crops).to(dev).float().div_(255.0), sources, T, Kc.to(dev), K.to(dev)

    def _train(self, batch: list[Triplet], fresh: bool) -> StepReport:
        t0 = time.perf_counter()
        cfg = self.cfg
        trip = batch[0]
        target, sources, T, K, K_src = self._batch(batch)
        B = target.shape[0]
        due_swap = (self._healthy + 1) % cfg.swap_every == 0
        due_good = (self._healthy + 1) % cfg.good_every == 0
        pre_state = _state_copy(self.model) if (due_swap or due_good) else None
        disp_cv = [float("nan")]
        near = [0.0]
        swap_ok = [False]
        candidate = [None]
        photo = [float("nan")]
        # Fast step: the anchor images ride in the training forward pass (BatchNorm is frozen, so
        # batching them changes no output); the reference step runs them in a pass of their own.
        anchor_idx = self._anchor_pick() if (self.anchors is not None and cfg.step == "fast") else None
        net_in = target if anchor_idx is None else torch.cat([target, self.anchors[anchor_idx].float() / 255.0])

        def pre_step_check(total: torch.Tensor) -> str | None:
            reason = self._check(photo[0], disp_cv[0], near[0])
            if reason is None and due_swap:
                # Paired test on this very batch: candidate vs the weights being served.
                served = self._served_loss(target, sources, T, K, K_src)
                if photo[0] > cfg.regress_factor * served:
                    return "regressed"
                if self._ema is None:
                    swap_ok[0] = photo[0] <= (1.0 + cfg.swap_tolerance) * served
                else:  # the candidate is the weight average: its own loss, disparity checks on this batch
                    cand, cv, nf = self._shadow_eval(self._ema, target, sources, T, K, K_src)
                    swap_ok[0] = (cand <= (1.0 + cfg.swap_tolerance) * served
                                  and self._check(cand, cv, nf, spike=False) is None)
                    if swap_ok[0]:
                        candidate[0] = _state_copy_of(self._ema)
            return reason

        def compute():
            out = self.model.predict_disps(net_in)
            disps = [d[:B] for d in out] if anchor_idx is not None else out
            d0 = disps[0][:1].detach()
            disp_cv[0] = float(d0.std() / d0.mean().clamp_min(1e-8))
            depth0 = self.model.disp_to_depth(d0)
            near[0] = float((depth0 < 2 * self.model.min_depth).float().mean())
            loss, parts = self._loss(target, sources, T, K, K_src, disps)
            photo[0] = float(loss.detach())  # the guard judges the photometric loss alone
            if self.anchors is not None:
                if anchor_idx is not None:
                    ad = torch.log(self.model.disp_to_depth(out[0][B:]))
                    anchor = (ad - self.anchor_logdepth[anchor_idx]).abs().mean()
                else:
                    anchor = self._anchor_loss()
                parts["anchor"] = anchor.detach()
                loss = loss + cfg.anchor_weight * anchor
            if self._start_params is not None:
                reg = sum(((p - a) ** 2).sum() for p, a in zip(self.model.parameters(), self._start_params))
                loss = loss + cfg.regularization * reg
            return loss, parts

        # Guard part 1: judge the weights that produced this loss *before* stepping.
        res = guarded_step(self.model, self.optimizer, [target, sources, T, K], compute,
                           grad_clip=cfg.grad_clip, pre_step_check=pre_step_check)
        report = StepReport(res.status, photo[0] if res.loss is not None else None,
                            trip.stamp_ns if fresh else None, len(batch), time.perf_counter() - t0)
        if res.status == StepStatus.OK:
            self._nonfinite_run = 0
            self._healthy += 1
            self.counters.steps += 1
            self.counters.learned += int(fresh)
            self.last_loss = photo[0]
            self.loss_avg = photo[0] if self.loss_avg is None else \
                cfg.loss_ema * self.loss_avg + (1 - cfg.loss_ema) * photo[0]
            self.cv_avg = disp_cv[0] if self.cv_avg is None else \
                cfg.loss_ema * self.cv_avg + (1 - cfg.loss_ema) * disp_cv[0]
            self.near_avg = near[0] if self.near_avg is None else \
                cfg.loss_ema * self.near_avg + (1 - cfg.loss_ema) * near[0]
            # pre_state is verified: its loss and disparity just passed the checks.
            if pre_state is not None and due_good:
                self.last_good = pre_state
            if pre_state is not None and due_swap and swap_ok[0]:
                self._serve(pre_state if candidate[0] is None else candidate[0])
            if self._ema is not None:
                self._ema_update()
        elif res.status.startswith("rejected_"):
            self._rollback(res.status.removeprefix("rejected_"))
            report.status = "rollback_" + res.status.removeprefix("rejected_")
        else:  # non-finite data/loss/gradient: skipped by guarded_step
            self.counters.skipped += 1
            self._nonfinite_run += 1
            if self._nonfinite_run >= cfg.max_nonfinite_in_a_row:
                self._rollback("nonfinite")
                report.status = "rollback_nonfinite"
        return report

    def _loss(self, target, sources, T, K, K_src, disps):
        if K_src is None:  # whole frames (the reference loss takes no K_source)
            return self.loss_fn(target, sources, T, K, disps)
        return self.loss_fn(target, sources, T, K, disps, K_source=K_src)

    @torch.no_grad()
    def _served_loss(self, target, sources, T, K, K_src=None) -> float:
        """Loss of the weights being served, on the given batch (no gradients)."""
        return self._shadow_eval(self.served, target, sources, T, K, K_src)[0]

    @torch.no_grad()
    def _shadow_eval(self, state, target, sources, T, K, K_src=None) -> tuple[float, float, float]:
        """(loss, disparity std/mean, near-limit fraction) of ``state`` on the given batch, no gradients."""
        self._shadow.load_state_dict(state)
        self._shadow.train()
        self._shadow.freeze_batchnorm(True)
        disps = self._shadow(target)
        loss, _ = self._loss(target, sources, T, K, K_src, disps)
        d0 = disps[0][:1]
        near = float((self._shadow.disp_to_depth(d0) < 2 * self._shadow.min_depth).float().mean())
        return float(loss), float(d0.std() / d0.mean().clamp_min(1e-8)), near

    @torch.no_grad()
    def _ema_update(self) -> None:
        """ema <- decay * ema + (1 - decay) * trained weights (floating tensors; the rest copied)."""
        cur = self.model.state_dict()
        fl = [k for k, v in self._ema.items() if v.is_floating_point()]
        torch._foreach_lerp_([self._ema[k] for k in fl], [cur[k].detach() for k in fl], 1.0 - self.cfg.ema_decay)
        for k, v in self._ema.items():
            if not v.is_floating_point():
                v.copy_(cur[k])

    def _serve(self, state) -> None:
        self.served = state
        self.on_weights(state)
        self.counters.swaps += 1

    def _check(self, loss: float, disp_cv: float, near_fraction: float, spike: bool = True) -> str | None:
        """None if healthy, else the reason to reject (and roll back).

        Flat maps (collapse) and maps newly saturated at the near limit (nothing on a road
        is within 2*min_depth of the camera: a fifth more of the image there than usual) are
        both garbage; both are judged against the network's own running level.
        """
        cfg = self.cfg
        if self.near_avg is not None and near_fraction > max(cfg.max_near_fraction,
                                                             self.near_avg + cfg.max_near_fraction):
            return "saturated"
        if not np.isfinite(disp_cv) or disp_cv < cfg.min_disp_cv or (
                self.cv_avg is not None and disp_cv < cfg.collapse_ratio * self.cv_avg):
            return "collapse"
        if self.cv_avg is not None and disp_cv > self.cv_avg / cfg.collapse_ratio:
            return "exploded"
        if (spike and self.counters.steps >= cfg.warmup_steps and self.loss_avg is not None
                and loss > cfg.spike_factor * self.loss_avg):
            return "spike"
        return None

    def _rollback(self, reason: str) -> None:
        self.model.load_state_dict(self.last_good)
        if self._ema is not None:
            self._ema = _state_copy_of(self.last_good)
        self.lr = max(self.lr * self.cfg.rollback_lr_factor, self.cfg.lr * self.cfg.min_lr_fraction)
        self.optimizer = self._new_optimizer()
        self.counters.rollbacks += 1
        self.counters.rollback_reasons[reason] = self.counters.rollback_reasons.get(reason, 0) + 1
        self._nonfinite_run = 0
        self._healthy = 0
        log.warning("adaptation rolled back to the last good weights (reason: %s; rollbacks so far: %d); "
                    "learning rate now %.2g", reason, self.counters.rollbacks, self.lr)

    # --------------------------------------------------------------- control
    def reset_to_initial(self) -> None:
        """Forget everything learned: initial weights for training and serving."""
        with self._train_lock:
            self.model.load_state_dict(self.initial)
            self.last_good = _state_copy(self.model)
            if self._ema is not None:
                self._ema = _state_copy(self.model)
            self.lr = self.cfg.lr
            self.optimizer = self._new_optimizer()
            self.loss_avg = self.cv_avg = self.near_avg = None
            self._healthy = 0
            self._serve(_state_copy(self.model))

    def good_state(self) -> "OrderedDict[str, torch.Tensor]":
        """The last verified weights (what a checkpoint should hold): the served weight average in the
        fast step, the last good trained weights in the reference step."""
        with self._train_lock:
            return copy.deepcopy(self.served if self._ema is not None else self.last_good)

    def stats(self) -> dict:
        c = self.counters
        return {"adapt_enabled": self.enabled, "adapt_frames": c.frames,
                "adapt_duplicate_frames": c.duplicate_frames, "adapt_time_resets": c.time_resets,
                "adapt_steps": c.steps,
                "adapt_skipped": c.skipped, "adapt_rollbacks": c.rollbacks, "adapt_swaps": c.swaps,
                "adapt_no_motion": c.no_motion, "adapt_replay": len(self.replay),
                "adapt_learned_frames": c.learned, "adapt_learned_share": self.learned_share(),
                "adapt_loss": self.last_loss, "adapt_loss_avg": self.loss_avg, "adapt_lr": self.lr,
                "rollback_reasons": dict(c.rollback_reasons)}

    def learned_share(self) -> float:
        """Share of the moving frames (frames with enough motion to pair) that a step learned from."""
        c = self.counters
        moving = c.frames - c.no_motion
        return c.learned / moving if moving > 0 else 0.0

    def config_dict(self) -> dict:
        return asdict(self.cfg)
