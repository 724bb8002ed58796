"""Offline trainer: supervised (SILog on GT depth) or self-supervised (monodepth2 with known metric poses).

Self-supervised poses come from the ego-motion provider (odometry / TF / IMU /
GPS, :mod:`mono_depth_ros.learning.egoposes`, the path ``mono-depth adapt`` and
the node use) or, for synthetic experiments, from the bag's ground-truth poses.
Under ``torchrun`` the same function trains with DistributedDataParallel
(:mod:`mono_depth_ros.learning.distributed`): bags (or the frames of fewer bags)
are sharded across ranks, each rank seeds its own sampler, and rank 0 alone
validates and writes checkpoints and the report.

Kept as small pieces (config, data, step functions, evaluation, checkpoint)
rather than one do-everything class; :func:`train` wires them together.
"""
from __future__ import annotations

import copy
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..adapt.intrinsics import INTRINSICS_MODES
from ..canonical import CanonicalCamera
from ..checkpoint import load_checkpoint, load_model, save_checkpoint
from ..conventions import scale_intrinsics
from ..losses import SelfSupervisedLoss, SupervisedSILogLoss, all_finite
from ..metrics import format_markdown
from ..models import build_model
from ..settings import BY_NAME as _PARAMS
from .data import BagFrames, SelfSupervisedSampler, SupervisedSampler, load_bag
from .distributed import DEVICES, DistContext, init_distributed, shutdown
from ..inference import DepthPredictor
from .evaluate import evaluate_frames
from .extras import TrainExtras
from .step import StepResult, StepStats, StepStatus, guarded_step, self_supervised_step, supervised_step

__all__ = ["TrainConfig", "train", "MODES", "POSES", "RESUME_LAST", "report_paths"]

MODES = ("supervised", "self-supervised")
#: Where self-supervised training takes its poses from.
POSES = ("egomotion", "ground-truth")
#: ``TrainConfig.resume`` value meaning "the checkpoint last written at ``out``".
RESUME_LAST = "last"
#: Points kept in the report's train-loss curve.
CURVE_POINTS = 100


@dataclass
class TrainConfig:
    """Every training option, saved into the checkpoint's meta."""

    bags: list[str]
    out: str
    mode: str = "supervised"
    arch: str | None = None          # None: the --init / --resume checkpoint's, else "default"
    height: int = 192
    width: int = 640
    batch_size: int = 8
    steps: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.0
    min_depth: float = 0.1
    max_depth: float = 100.0
    silog_lambda: float = 0.85
    smoothness_weight: float = 1e-3
    frame_gap: int = 1
    stereo: bool = False
    # The adaptation engine's optional parts (learning/extras.py; the node's defaults, mono_depth_ros.settings).
    object_motion: bool = _PARAMS["adapt_object_motion"].default
    object_motion_after_steps: int = _PARAMS["adapt_object_motion_after_steps"].default
    intrinsics: str = _PARAMS["adapt_intrinsics"].default
    intrinsics_lr: float = _PARAMS["adapt_intrinsics_lr"].default
    intrinsics_focal_warmup: int = _PARAMS["adapt_intrinsics_focal_warmup"].default
    camera_hfov_deg: float = _PARAMS["camera_hfov_deg"].default
    poses: str = "egomotion"
    egomotion: str = _PARAMS["egomotion_sources"].default        # the node's defaults (mono_depth_ros.settings)
    min_translation: float = _PARAMS["adapt_min_translation"].default
    max_rotation_deg: float = _PARAMS["adapt_max_rotation"].default
    val_bags: list[str] = field(default_factory=list)
    val_every: int = 500
    val_frames: int = 40
    save_every: int = 250
    max_seconds: float | None = None
    init: str | None = None
    resume: str | None = None
    export: str | None = None
    export_half: bool = False
    report: str | None = None
    cache_dir: str | None = None
    threads: int = 2
    device: str = "auto"
    seed: int = 0
    augment: bool = True
    grad_clip: float | None = 5.0
    progress: bool = True

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.poses not in POSES:
            raise ValueError(f"--poses must be one of {POSES}, got {self.poses!r}")
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"height/width must be positive, got {self.height}x{self.width}")
        if not self.bags:
            raise ValueError("at least one training bag is needed")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"--max-seconds must be > 0, got {self.max_seconds}")
        if self.intrinsics not in INTRINSICS_MODES:
            raise ValueError(f"--intrinsics must be one of {INTRINSICS_MODES}, got {self.intrinsics!r}")
        if self.mode != "self-supervised" and (self.object_motion or self.intrinsics != "off"):
            raise ValueError("--object-motion and --intrinsics need --mode self-supervised (photometric loss)")
        if self.intrinsics_focal_warmup < 0:
            raise ValueError(f"--intrinsics-focal-warmup must be >= 0, got {self.intrinsics_focal_warmup}")
        if self.object_motion_after_steps < 0:
            raise ValueError(f"--object-motion-after-steps must be >= 0, got {self.object_motion_after_steps}")
        if not 0 < self.camera_hfov_deg < 180 or not 0 < self.intrinsics_lr <= 1:
            raise ValueError(f"--camera-hfov-deg must be in (0, 180) and --intrinsics-lr in (0, 1], got "
                             f"{self.camera_hfov_deg} and {self.intrinsics_lr}")
        if self.device not in DEVICES:
            raise ValueError(f"--device must be one of {DEVICES}, got {self.device!r}")
        if self.init and self.resume:
            raise ValueError("--init and --resume exclude each other (resume restores the weights)")
        for opt, paths in (("--bag", self.bags), ("--val-bag", self.val_bags)):
            for b in paths:
                if not Path(b).exists():
                    raise ValueError(f"{opt} {b}: no such bag")
        if self.init and not Path(self.init).exists():
            raise ValueError(f"--init {self.init}: no such checkpoint file or folder")
        if self.resume:
            path = self.resume_path()
            if not path.is_file():
                raise ValueError(f"--resume: no checkpoint at {path} to resume from"
                                 + (" (--out names the checkpoint a run writes)" if self.resume == RESUME_LAST
                                    else ""))
        if self.mode == "self-supervised" and self.poses == "egomotion":
            self.ego_config()
            self.gating_config()

    def resume_path(self) -> Path:
        """The checkpoint ``--resume`` continues: the one last written at ``out``, or the one named."""
        return Path(self.out if self.resume == RESUME_LAST else self.resume)

    def ego_config(self):
        from ..egomotion import EgoMotionConfig, parse_sources
        try:
            return EgoMotionConfig(priority=parse_sources(self.egomotion))
        except ValueError as exc:
            raise ValueError(f"--egomotion {self.egomotion!r}: {exc}") from None

    def gating_config(self):
        from ..egomotion import GatingConfig
        if not 0 < self.max_rotation_deg <= 180:
            raise ValueError(f"--max-rotation must be in (0, 180] degrees, got {self.max_rotation_deg}")
        if self.min_translation < 0:
            raise ValueError(f"--min-translation must be >= 0 m, got {self.min_translation}")
        return GatingConfig(min_translation_m=self.min_translation, max_rotation_rad=math.radians(self.max_rotation_deg))


def report_paths(cfg: TrainConfig) -> tuple[Path, Path]:
    """(JSON, markdown) report paths: ``report.json`` / ``report.md`` in ``--report`` or beside the checkpoint
    (as ``mono-depth adapt``)."""
    folder = Path(cfg.report) if cfg.report else Path(cfg.out).parent
    return folder / "report.json", folder / "report.md"


def _lr_at(cfg: TrainConfig, step: int) -> float:
    """Cosine decay from lr to min_lr over cfg.steps, after a 2% linear warm-up."""
    warm = max(1, cfg.steps // 50)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = min(1.0, (step - warm) / max(1, cfg.steps - warm))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * t))


def _load_drives(paths: list[str], cfg: TrainConfig, need_depth: bool, need_pose: bool, log) -> list[BagFrames]:
    drives = []
    for p in paths:
        t0 = time.monotonic()
        d = load_bag(p, (cfg.height, cfg.width), need_depth=need_depth, need_pose=need_pose,
                     cache_dir=cfg.cache_dir, hfov_deg=cfg.camera_hfov_deg if cfg.intrinsics == "estimate" else None)
        log(f"loaded {p}: {len(d)} frames at {d.size[1]}x{d.size[0]} ({time.monotonic() - t0:.1f}s)")
        drives.append(d)
    return drives


def _ego_pairs(drives: list[BagFrames], cfg: TrainConfig, log) -> list:
    """Ego-motion poses for every drive (the provider/selector path of ``mono-depth adapt``)."""
    from .egoposes import egomotion_pairs

    out = []
    ego, gating = cfg.ego_config(), cfg.gating_config()
    for d in drives:
        p = egomotion_pairs(d.source, d.stamps, ego, gating)
        dropped = ", ".join(f"{k}: {v}" for k, v in sorted(p.dropped.items())) or "none"
        log(f"ego-motion poses for {d.source}: {len(p)} of {len(d)} frames (source {p.stats['egomotion_source']}; "
            f"dropped {dropped})")
        out.append(p)
    return out


def _training_camera(drives: list[BagFrames], size: tuple[int, int]) -> CanonicalCamera | None:
    """The training camera at the network size (``canonical_camera`` of the checkpoint), or None
    when the drives were recorded with different intrinsics (no single canonical camera)."""
    Ks = [scale_intrinsics(d.K, size[1] / d.size[1], size[0] / d.size[0]) for d in drives]
    if not Ks or any(not np.allclose(K, Ks[0], rtol=1e-3, atol=0.5) for K in Ks):
        return None
    return CanonicalCamera.from_K(Ks[0], size)


class _SyncedLoss:
    """Loss wrapper for DDP: every rank learns whether any rank's loss is non-finite (then all skip the
    step, so no rank waits in an all-reduce that others never join) and the mean loss over ranks."""

    def __init__(self, loss_fn, ctx: DistContext):
        self.loss_fn, self.ctx, self.mean = loss_fn, ctx, None

    def __call__(self, *args):
        loss, parts = self.loss_fn(*args)
        finite = bool(torch.isfinite(loss.detach()))
        bad, total = self.ctx.all_reduce([0.0 if finite else 1.0, float(loss.detach()) if finite else 0.0])
        self.mean = total / self.ctx.world if bad == 0 else None
        if bad:
            loss = loss * float("nan")
        return loss, parts


def _rng_state(sampler) -> dict:
    return {"numpy": sampler.rng.bit_generator.state, "sampler_torch": sampler.gen.get_state(),
            "torch": torch.get_rng_state()}


def _set_rng_state(sampler, state: dict) -> None:
    sampler.rng.bit_generator.state = state["numpy"]
    sampler.gen.set_state(state["sampler_torch"])
    torch.set_rng_state(state["torch"])


def _curve(losses: list[tuple[int, float]], points: int = CURVE_POINTS) -> list[list[float]]:
    """(step, loss) pairs averaged into at most ``points`` buckets: [[last step, mean loss], ...]."""
    if not losses:
        return []
    k = max(1, math.ceil(len(losses) / points))
    return [[int(losses[min(i + k, len(losses)) - 1][0]), round(float(np.mean([v for _, v in losses[i:i + k]])), 6)]
            for i in range(0, len(losses), k)]


def _to(x, device):
    if isinstance(x, (list, tuple)):
        return [t.to(device, non_blocking=True) for t in x]
    return x.to(device, non_blocking=True)


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train per ``cfg``; returns the checkpoint path (``cfg.out``).

    Resuming (``cfg.resume``: a path, or :data:`RESUME_LAST` for the checkpoint at
    ``cfg.out``) restores weights, optimizer state, step and frame counters, the
    samplers' random state and the loss/validation history; ``cfg.init`` only
    initialises the weights. Launched by torchrun, it trains with
    DistributedDataParallel; otherwise in this process, as before.
    """
    cfg.validate()
    ctx = init_distributed(cfg.device)
    try:
        return _train(cfg, ctx, log if ctx.is_main else (lambda *_: None))
    finally:
        shutdown(ctx)


def _train(cfg: TrainConfig, ctx: DistContext, log: Callable[[str], None]) -> Path:
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed + ctx.rank)          # per-rank seeds (DDP broadcasts rank 0's weights)
    start_step, frames_seen = 0, 0
    opt_state, old_meta = None, {}
    if cfg.resume:
        path = cfg.resume_path()
        model, ck = load_checkpoint(path)
        if cfg.arch is not None and model.arch != cfg.arch:
            raise ValueError(f"--resume {path} holds {model.arch!r}, not --arch {cfg.arch!r}")
        start_step = int(ck.get("training", {}).get("steps", 0))
        frames_seen = int(ck.get("training", {}).get("frames_seen", 0))
        opt_state = ck.get("training", {}).get("optimizer")
        old_meta = ck.get("meta", {}) or {}
        log(f"resuming {path} at step {start_step}")
    elif cfg.init:
        # Any weights the package opens: its checkpoints, monodepth2 folders, Depth Anything V2 files.
        model, info = load_model(cfg.arch or "", cfg.init, cfg.min_depth, cfg.max_depth)
        if cfg.arch is not None and model.arch != cfg.arch:
            raise ValueError(f"--init {cfg.init} holds {model.arch!r}, not --arch {cfg.arch!r}")
        log(f"initialised {model.arch} from {cfg.init} (trained {info.get('training', {}).get('steps', '?')} steps)")
    else:
        model = build_model(cfg.arch or "default", cfg.min_depth, cfg.max_depth)
    mult = type(model).size_multiple
    if cfg.height % mult or cfg.width % mult:
        raise ValueError(f"height/width must be multiples of {mult} for {model.arch}, got {cfg.height}x{cfg.width}")
    device = ctx.device
    model.to(device)
    model.train()
    step = start_step   # the step being taken (0-based; the object-motion schedule counts it)
    extras = None
    if cfg.mode == "self-supervised" and (cfg.object_motion or cfg.intrinsics != "off"):
        if ctx.enabled:
            raise ValueError("--object-motion and --intrinsics train in one process (not yet under torchrun)")
        extras = TrainExtras(model, cfg.object_motion, cfg.object_motion_after_steps, cfg.intrinsics,
                             cfg.smoothness_weight, lambda: step, device, cfg.intrinsics_focal_warmup)
        if cfg.resume:
            restored = extras.load_state(old_meta.get("learned") or {}, str(cfg.resume_path()))
            log(f"restored the {' and the '.join(restored)}" if restored else
                "the checkpoint holds no object motion / intrinsics: they start afresh")
    groups = [{"params": list(model.parameters())}]
    if extras is not None:
        groups += [dict(g, weight_decay=0.0) for g in extras.param_groups(cfg.intrinsics_lr)]
    optimizer = torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if extras is not None:
        extras.attach(optimizer)
    if opt_state is not None:
        try:
            optimizer.load_state_dict(opt_state)
        except ValueError as exc:
            raise ValueError(f"--resume {cfg.resume_path()}: its optimizer does not fit this run's options "
                             f"(--object-motion / --intrinsics as in the resumed run?): {exc}") from None

    supervised = cfg.mode == "supervised"
    gt_poses = not supervised and cfg.poses == "ground-truth"
    # Shard whole bags across ranks when there are enough; otherwise every rank reads every bag and takes
    # every world-th frame. With a shared cache, rank 0 decodes first so that no two ranks write one file.
    if len(cfg.bags) >= ctx.world:
        my_bags, frame_shard = cfg.bags[ctx.rank::ctx.world], (0, 1)
    else:
        my_bags, frame_shard = list(cfg.bags), (ctx.rank, ctx.world)
    serial = ctx.enabled and frame_shard[1] > 1 and cfg.cache_dir is not None
    if serial and not ctx.is_main:
        ctx.barrier()
    t_load = time.monotonic()
    drives = _load_drives(my_bags, cfg, need_depth=supervised, need_pose=gt_poses, log=log)
    if serial and ctx.is_main:
        ctx.barrier()
    pairs = _ego_pairs(drives, cfg, log) if not supervised and not gt_poses else None
    val, val_pairs = [], None
    if cfg.val_bags and ctx.is_main:
        val = _load_drives(cfg.val_bags, cfg, need_depth=supervised, need_pose=gt_poses, log=log)
        val_pairs = _ego_pairs(val, cfg, log) if not supervised and not gt_poses else None
    load_seconds = time.monotonic() - t_load
    sampler_seed = cfg.seed + start_step + 7919 * ctx.rank
    if supervised:
        sampler = SupervisedSampler(drives, cfg.batch_size, sampler_seed, cfg.augment, shard=frame_shard)
        loss_fn = SupervisedSILogLoss(model.min_depth, model.max_depth, cfg.silog_lambda)
    else:
        sampler = SelfSupervisedSampler(drives, cfg.batch_size, cfg.frame_gap, sampler_seed, cfg.augment,
                                        cfg.stereo, pairs=pairs, shard=frame_shard)
        loss_fn = SelfSupervisedLoss(model.min_depth, model.max_depth, cfg.smoothness_weight)
    if isinstance(loss_fn, torch.nn.Module):
        loss_fn.to(device)
    rng = (old_meta.get("rng") or {})
    if rng.get("world") == ctx.world and len(rng.get("ranks", ())) == ctx.world:
        _set_rng_state(sampler, rng["ranks"][ctx.rank])
        log("restored the samplers' random state")
    elif cfg.resume and rng:
        log(f"random state saved by {rng.get('world')} process(es), now {ctx.world}: reseeded")
    n_samples = int(round(sum(ctx.all_reduce([float(len(sampler))]))))
    where = f", {ctx.world} ranks ({ctx.backend} on {device.type})" if ctx.enabled else f" on {device}"
    poses = "" if supervised else f", poses from {'ground truth' if gt_poses else 'ego-motion ' + cfg.egomotion}"
    log(f"{cfg.mode} training of {model.arch} on {n_samples} samples{poses}{where}, "
        f"steps {start_step}..{cfg.steps}")

    net = model
    if ctx.enabled:
        import warnings

        from torch.nn.parallel import DistributedDataParallel as DDP
        # Depthwise-conv weight gradients (C,1,k,k) differ from their bucket views only in the stride of a
        # size-1 dimension: the same memory layout, so DDP's "may impair performance" warning is moot.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        net = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
        loss_fn = _SyncedLoss(loss_fn, ctx)

    stats = StepStats()
    meta = {"config": asdict(cfg), "history": list(old_meta.get("history", [])),
            "loss_curve": list(old_meta.get("loss_curve", [])),
            "distributed": {"world_size": ctx.world, "backend": ctx.backend, "device": device.type}}
    if pairs is not None:
        meta["egomotion"] = {d.source: {"frames": len(d), "posed": len(p), "dropped": p.dropped,
                                        "source": p.stats.get("egomotion_source")} for d, p in zip(drives, pairs)}
    camera = _training_camera(drives, (cfg.height, cfg.width))
    losses: list[tuple[int, float]] = []

    def learned() -> None:
        """The extras' state into the meta; the canonical camera becomes the learned K."""
        nonlocal camera
        if extras is None:
            return
        meta["learned"] = extras.state()
        meta["object_motion"] = None if extras.motion is None else {
            "after_steps": cfg.object_motion_after_steps, "active": extras.motion.active()}
        meta["intrinsics"] = extras.report(drives[0].K, cfg.width, cfg.height)
        base = _training_camera(drives, (cfg.height, cfg.width))
        if extras.intrinsics is not None and base is not None:
            camera = CanonicalCamera.from_K(extras.learned_K(base.K_at((cfg.height, cfg.width)), cfg.width,
                                                             cfg.height), (cfg.height, cfg.width))

    def save(step: int, path: str, with_optimizer: bool = True, half: bool = False, collective: bool = True) -> None:
        states = ctx.gather_objects(_rng_state(sampler)) if collective else [_rng_state(sampler)]
        if not ctx.is_main:
            return
        meta["rng"] = {"world": len(states), "ranks": states}
        meta["loss_curve"] = list(old_meta.get("loss_curve", [])) + _curve(losses)
        learned()
        save_checkpoint(path, model, (cfg.height, cfg.width), optimizer if with_optimizer else None,
                        steps=step, frames_seen=frames_seen, meta=meta, half=half, canonical_camera=camera)

    def val_loss() -> float | None:
        """Mean training loss on fixed, unaugmented validation samples (same every time)."""
        if supervised:
            drv = [d for d in val if d.depths is not None]
            vs = SupervisedSampler(drv, cfg.batch_size, seed=12345, augment=False) if drv else None
            raw = loss_fn.loss_fn if isinstance(loss_fn, _SyncedLoss) else loss_fn
        else:
            vs = SelfSupervisedSampler(val, cfg.batch_size, cfg.frame_gap, seed=12345, augment=False,
                                       stereo=cfg.stereo, pairs=val_pairs)
            raw = loss_fn.loss_fn if isinstance(loss_fn, _SyncedLoss) else loss_fn
        if vs is None:
            return None
        vals = []
        with torch.no_grad():
            for _ in range(max(1, math.ceil(cfg.val_frames / cfg.batch_size))):
                if supervised:
                    x, gt = _to(vs.sample(), device)
                    loss, _ = raw(gt, model.predict_disps(x))
                else:
                    tgt, srcs, T, K = vs.sample()
                    tgt, srcs, T, K = _to(tgt, device), _to(srcs, device), _to(T, device), _to(K, device)
                    if extras is not None:   # the training's loss and K (the learned intrinsics)
                        loss, _ = extras.loss(model.predict_disps, tgt, srcs, T, K, vs.last_flip)
                    else:
                        loss, _ = raw(tgt, srcs, T, K, model.predict_disps(tgt))
                if bool(torch.isfinite(loss)):
                    vals.append(float(loss))
        return float(np.mean(vals)) if vals else None

    def validate(step: int) -> None:
        if not val or not ctx.is_main:
            return
        model.eval()
        entry = {"step": step, "val_loss": val_loss()}
        if all(d.depths is not None for d in val):
            # The metrics path runs on CPU tensors (as `mono-depth evaluate`): a CPU copy when training on GPU.
            ev = model if device.type == "cpu" else copy.deepcopy(model).cpu()
            acc = evaluate_frames(DepthPredictor(ev, (cfg.height, cfg.width), backend="eager"), val,
                                  stride=max(1, len(val[0]) // max(1, cfg.val_frames)), max_frames=cfg.val_frames)
            entry["metrics"] = acc.summary()
        meta["history"].append(entry)
        model.train()
        vl = f"{entry['val_loss']:.4f}" if entry["val_loss"] is not None else "-"
        log(f"\nvalidation at step {step}: loss {vl}"
            + (f"\n{format_markdown(entry['metrics'])}" if "metrics" in entry else ""))

    bar = None
    if cfg.progress and ctx.is_main:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=start_step, desc=cfg.mode, dynamic_ncols=True)
    t0 = time.monotonic()
    ema = None
    stopped_by = "steps"
    try:
        while step < cfg.steps:
            time_up = cfg.max_seconds is not None and time.monotonic() - t0 >= cfg.max_seconds
            optimizer.param_groups[0]["lr"] = _lr_at(cfg, step)   # the depth network's (extras: their own)
            before = _rng_state(sampler) if time_up or ctx.enabled else None
            if supervised:
                batch = _to(sampler.sample(), device)
            else:
                tgt, srcs, T, K = sampler.sample()
                batch = (_to(tgt, device), _to(srcs, device), _to(T, device), _to(K, device))
            # Supervised: +inf / NaN in the ground truth mean "no ground truth here" (sky), not a bad input.
            bad_input = not all_finite(*(batch[:1] if supervised else batch))
            if ctx.enabled:   # all ranks agree to stop, or to skip a step any rank cannot take
                bad_input, time_up = (v > 0 for v in ctx.all_reduce([float(bad_input), float(time_up)], "max"))
            if time_up:   # this batch is not used: put the random state back, so a resume draws it again
                _set_rng_state(sampler, before)
                stopped_by = "max-seconds"
                break
            if bad_input:
                r = StepResult(StepStatus.SKIPPED_NONFINITE_INPUT)
                stats.add(r)
            elif supervised:
                r = supervised_step(net, optimizer, loss_fn, *batch, stats, cfg.grad_clip)
            elif extras is not None:
                flip = sampler.last_flip
                extras.begin_step()
                r = guarded_step(extras.trained(model), optimizer, list(batch),
                                 lambda: extras.loss(net, *batch, flip), stats, cfg.grad_clip)
                extras.end_step()
            else:
                r = self_supervised_step(net, optimizer, loss_fn, *batch, stats, cfg.grad_clip)
            frames_seen += cfg.batch_size * ctx.world
            step += 1
            loss = loss_fn.mean if isinstance(loss_fn, _SyncedLoss) else r.loss
            if r.ok and loss is not None:
                losses.append((step, loss))
                ema = loss if ema is None else 0.98 * ema + 0.02 * loss
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.4f}" if ema is not None else "-", skipped=stats.skipped)
            if cfg.val_every and step % cfg.val_every == 0:
                validate(step)
            if cfg.save_every and step % cfg.save_every == 0:
                save(step, cfg.out)
    except KeyboardInterrupt:
        log(f"interrupted at step {step}; saving {cfg.out}")
        save(step, cfg.out, collective=False)
        raise
    finally:
        if bar is not None:
            bar.close()
    wall = time.monotonic() - t0
    meta["train_seconds"] = round(wall, 1)
    meta["step_stats"] = dict(stats.counts)
    if not meta["history"] or meta["history"][-1]["step"] != step:
        validate(step)
    save(step, cfg.out)
    done = step - start_step
    log(f"saved {cfg.out} after {step} steps ({meta['train_seconds']}s, step outcomes {json.dumps(stats.counts)})")
    if cfg.export and ctx.is_main:
        save(step, cfg.export, with_optimizer=False, half=cfg.export_half, collective=False)
        log(f"exported weights-only checkpoint {cfg.export}")
    if ctx.is_main:
        report = {
            "checkpoint": str(cfg.out), "mode": cfg.mode, "arch": model.arch,
            "poses": None if supervised else cfg.poses, "bags": list(cfg.bags), "val_bags": list(cfg.val_bags),
            "start_step": start_step, "end_step": step, "steps_this_run": done, "stopped_by": stopped_by,
            "world_size": ctx.world, "backend": ctx.backend, "device": device.type, "batch_size_per_rank":
            cfg.batch_size, "load_seconds": round(load_seconds, 2), "wall_seconds": round(wall, 2),
            "steps_per_second": round(done / wall, 3) if wall > 0 else None,
            "samples_per_second": round(done * cfg.batch_size * ctx.world / wall, 2) if wall > 0 else None,
            "train_loss_final_ema": ema,
            "train_loss_curve": list(old_meta.get("loss_curve", [])) + _curve(losses),
            "validation": meta["history"], "step_outcomes": dict(stats.counts),
            "egomotion": meta.get("egomotion"),
            "object_motion": meta.get("object_motion"), "intrinsics": meta.get("intrinsics"),
        }
        jpath, mpath = report_paths(cfg)
        jpath.parent.mkdir(parents=True, exist_ok=True)
        jpath.write_text(json.dumps(report, indent=1, default=float))
        mpath.write_text(_markdown(report))
        log(f"report: {jpath} and {mpath}")
    return Path(cfg.out)


def _markdown(r: dict) -> str:
    fmt = lambda v, f=".4f": format(v, f) if isinstance(v, (int, float)) else "-"
    lines = [f"# Training report: {Path(r['checkpoint']).name}", "",
             f"- mode: {r['mode']}" + (f", poses from {r['poses']}" if r["poses"] else "") + f"; network {r['arch']}",
             f"- steps {r['start_step']} -> {r['end_step']} ({r['steps_this_run']} this run, stopped by {r['stopped_by']})",
             f"- {r['world_size']} process(es), {r['backend'] or 'no process group'}, {r['device']}; "
             f"batch {r['batch_size_per_rank']} per process",
             f"- wall time {r['wall_seconds']} s training + {r['load_seconds']} s loading; "
             f"{fmt(r['steps_per_second'], '.2f')} steps/s, {fmt(r['samples_per_second'], '.1f')} samples/s",
             f"- final train loss (EMA): {fmt(r['train_loss_final_ema'])}",
             f"- step outcomes: {', '.join(f'{k} {v}' for k, v in r['step_outcomes'].items())}"]
    if r.get("egomotion"):
        for bag, e in r["egomotion"].items():
            lines.append(f"- ego-motion poses, {bag}: {e['posed']} of {e['frames']} frames (source {e['source']})")
    if r.get("object_motion"):
        lines.append(f"- object motion: on after {r['object_motion']['after_steps']} steps "
                     f"({'active' if r['object_motion']['active'] else 'not active yet'})")
    if r.get("intrinsics"):
        i = r["intrinsics"]
        lines.append(f"- intrinsics at {i['image_size'][0]}x{i['image_size'][1]}: "
                     + ", ".join(f"{k} {i['seen'][k]:.2f} -> {i['learned'][k]:.2f}"
                                 for k in ("fx", "fy", "cx", "cy")))
    curve = r["train_loss_curve"]
    if curve:
        k = max(1, len(curve) // 10)
        lines += ["", "| step | train loss |", "|---:|---:|"] + [f"| {s} | {v:.4f} |" for s, v in curve[::k]]
    if r["validation"]:
        lines += ["", "| step | validation loss | AbsRel | a1 |", "|---:|---:|---:|---:|"]
        for h in r["validation"]:
            m = (h.get("metrics") or {}).get("raw", {}) if isinstance(h.get("metrics"), dict) else {}
            lines.append(f"| {h['step']} | {fmt(h.get('val_loss'))} | {fmt(m.get('abs_rel'), '.3f')} | "
                         f"{fmt(m.get('a1'), '.3f')} |")
    return "\n".join(lines) + "\n"
