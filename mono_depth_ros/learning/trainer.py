"""Offline trainer: supervised (SILog on GT depth) or self-supervised (monodepth2 with GT poses).

Kept as small pieces (config, data, step functions, evaluation, checkpoint)
rather than one do-everything class; :func:`train` wires them together.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..canonical import CanonicalCamera
from ..checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from ..conventions import scale_intrinsics
from ..losses import SelfSupervisedLoss, SupervisedSILogLoss
from ..metrics import format_markdown
from ..models import DepthNet, build_model, load_weights
from .data import BagFrames, SelfSupervisedSampler, SupervisedSampler, load_bag
from .evaluate import evaluate_frames
from .step import StepStats, self_supervised_step, supervised_step

__all__ = ["TrainConfig", "train", "MODES"]

MODES = ("supervised", "self-supervised")


@dataclass
class TrainConfig:
    """Every training option, saved into the checkpoint's meta."""

    bags: list[str]
    out: str
    mode: str = "supervised"
    arch: str = "default"
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
    val_bags: list[str] = field(default_factory=list)
    val_every: int = 500
    val_frames: int = 40
    save_every: int = 250
    init: str | None = None
    resume: str | None = None
    export: str | None = None
    export_half: bool = False
    cache_dir: str | None = None
    threads: int = 2
    seed: int = 0
    augment: bool = True
    grad_clip: float | None = 5.0
    progress: bool = True

    def validate(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.height % 32 or self.width % 32:
            raise ValueError(f"height/width must be multiples of 32, got {self.height}x{self.width}")
        if not self.bags:
            raise ValueError("at least one training bag is needed")
        if self.steps < 0 or self.batch_size < 1:
            raise ValueError("steps must be >= 0 and batch_size >= 1")


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
                     cache_dir=cfg.cache_dir)
        log(f"loaded {p}: {len(d)} frames at {d.size[1]}x{d.size[0]} ({time.monotonic() - t0:.1f}s)")
        drives.append(d)
    return drives


def _training_camera(drives: list[BagFrames], size: tuple[int, int]) -> CanonicalCamera | None:
    """The training camera at the network size (``canonical_camera`` of the checkpoint), or None
    when the drives were recorded with different intrinsics (no single canonical camera)."""
    Ks = [scale_intrinsics(d.K, size[1] / d.size[1], size[0] / d.size[0]) for d in drives]
    if not Ks or any(not np.allclose(K, Ks[0], rtol=1e-3, atol=0.5) for K in Ks):
        return None
    return CanonicalCamera.from_K(Ks[0], size)


def train(cfg: TrainConfig, log: Callable[[str], None] = print) -> Path:
    """Train per ``cfg``; returns the checkpoint path (``cfg.out``).

    Resuming (``cfg.resume``) restores weights, optimizer state, step and
    frame counters; ``cfg.init`` only initialises the weights.
    """
    cfg.validate()
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    start_step, frames_seen = 0, 0
    opt_state = None
    if cfg.resume:
        ck = read_checkpoint(cfg.resume)
        model = build_model(ck["arch"], ck["min_depth"], ck["max_depth"])
        load_weights(model, ck["state_dict"], source=cfg.resume)
        start_step = int(ck.get("training", {}).get("steps", 0))
        frames_seen = int(ck.get("training", {}).get("frames_seen", 0))
        opt_state = ck.get("training", {}).get("optimizer")
        log(f"resuming {cfg.resume} at step {start_step}")
    elif cfg.init:
        model, info = load_checkpoint(cfg.init)
        if model.arch != cfg.arch:
            raise ValueError(f"--init {cfg.init} holds {model.arch!r}, not --arch {cfg.arch!r}")
        log(f"initialised from {cfg.init} (trained {info.get('training', {}).get('steps', '?')} steps)")
    else:
        model = build_model(cfg.arch, cfg.min_depth, cfg.max_depth)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)

    supervised = cfg.mode == "supervised"
    drives = _load_drives(cfg.bags, cfg, need_depth=supervised, need_pose=not supervised, log=log)
    val = _load_drives(cfg.val_bags, cfg, need_depth=True, need_pose=False, log=log) if cfg.val_bags else []
    if supervised:
        sampler = SupervisedSampler(drives, cfg.batch_size, cfg.seed + start_step, cfg.augment)
        loss_fn = SupervisedSILogLoss(model.min_depth, model.max_depth, cfg.silog_lambda)
    else:
        sampler = SelfSupervisedSampler(drives, cfg.batch_size, cfg.frame_gap, cfg.seed + start_step, cfg.augment,
                                        cfg.stereo)
        loss_fn = SelfSupervisedLoss(model.min_depth, model.max_depth, cfg.smoothness_weight)
    log(f"{cfg.mode} training of {model.arch} on {len(sampler)} samples, steps {start_step}..{cfg.steps}")

    stats = StepStats()
    meta = {"config": asdict(cfg), "history": []}

    camera = _training_camera(drives, (cfg.height, cfg.width))

    def save(step: int, path: str, with_optimizer: bool = True, half: bool = False) -> None:
        save_checkpoint(path, model, (cfg.height, cfg.width), optimizer if with_optimizer else None,
                        steps=step, frames_seen=frames_seen, meta=meta, half=half, canonical_camera=camera)

    def validate(step: int) -> None:
        if not val:
            return
        acc = evaluate_frames(model, val, stride=max(1, len(val[0]) // max(1, cfg.val_frames)),
                              max_frames=cfg.val_frames)
        summary = acc.summary()
        meta["history"].append({"step": step, "metrics": summary})
        log(f"\nvalidation at step {step}:\n{format_markdown(summary)}")

    bar = None
    if cfg.progress:
        from tqdm import tqdm
        bar = tqdm(total=cfg.steps, initial=start_step, desc=cfg.mode, dynamic_ncols=True)
    t0 = time.monotonic()
    ema = None
    step = start_step
    try:
        for step in range(start_step, cfg.steps):
            for g in optimizer.param_groups:
                g["lr"] = _lr_at(cfg, step)
            if supervised:
                image, gt = sampler.sample()
                r = supervised_step(model, optimizer, loss_fn, image, gt, stats, cfg.grad_clip)
            else:
                tgt, srcs, poses, K = sampler.sample()
                r = self_supervised_step(model, optimizer, loss_fn, tgt, srcs, poses, K, stats, cfg.grad_clip)
            frames_seen += cfg.batch_size
            if r.ok:
                ema = r.loss if ema is None else 0.98 * ema + 0.02 * r.loss
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.4f}" if ema is not None else "-", skipped=stats.skipped)
            done = step + 1
            if cfg.val_every and done % cfg.val_every == 0:
                validate(done)
                model.train()
            if cfg.save_every and done % cfg.save_every == 0:
                save(done, cfg.out)
        step = cfg.steps
    except KeyboardInterrupt:
        log(f"interrupted at step {step}; saving {cfg.out}")
        save(step, cfg.out)
        raise
    finally:
        if bar is not None:
            bar.close()
    meta["train_seconds"] = round(time.monotonic() - t0, 1)
    meta["step_stats"] = dict(stats.counts)
    if not cfg.val_every or cfg.steps % cfg.val_every:
        validate(cfg.steps)
    save(cfg.steps, cfg.out)
    log(f"saved {cfg.out} after {cfg.steps} steps ({meta['train_seconds']}s, step outcomes {json.dumps(stats.counts)})")
    if cfg.export:
        save(cfg.steps, cfg.export, with_optimizer=False, half=cfg.export_half)
        log(f"exported weights-only checkpoint {cfg.export}")
    return Path(cfg.out)
