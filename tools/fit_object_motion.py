#!/usr/bin/env python3
"""Can the object-motion net learn the movers' motion at all? Fit it alone with the *ground-truth* depth.

Diagnosis tool for docs/learning.md ("Moving objects"): the depth is the drive's exact depth (so any
residual of the rigid warp on a moving car is its own motion), the camera poses are exact, and only
:class:`~mono_depth_ros.adapt.motion.ObjectMotion`'s net trains, with the engine's loss terms
(:class:`~mono_depth_ros.adapt.terms.ReprojectionTerm` with auto-masking + ``ObjectMotionTerm``), its
Adam group and gradient limit. Every ``--report`` steps it prints, on fixed frames of the drive, the mean
|field| on the ground-truth moving / static pixels and the photometric error (minimum over t-1, t+1)
on them with the rigid warp and with the field.

    tools/fit_object_motion.py data/dense_B_seed301_60s_640x192 --steps 600 --lr 1e-2 [--reg 0.05]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("drive", help="bag with camera, depth_gt, dynamic_mask_gt, pose_gt")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--reg", type=float, default=0.05, help="smoothness and sparsity weight (both)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--report", type=int, default=100)
    p.add_argument("--no-median", action="store_true", help="keep the fields' median (the older field)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scales", type=int, default=1, help="loss scales (the engine: 4)")
    p.add_argument("--no-automask", action="store_true", help="the field's loss without auto-masking")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from mono_depth_ros.adapt.motion import ObjectMotion
    from mono_depth_ros.adapt.terms import ObjectMotionTerm, ReprojectionTerm, StepInputs, TermContext
    from mono_depth_ros.geometry import PinholeCamera, warp
    from mono_depth_ros.learning.data import load_bag
    from mono_depth_ros.losses import FastSelfSupervisedLoss, photometric_error_fast

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    d = load_bag(args.drive, need_depth=True, need_pose=True)
    if d.dynamic_masks is None:
        raise SystemExit("the drive has no /camera/dynamic_mask_gt")
    lo, hi = 0.1, 100.0
    K1 = torch.from_numpy(d.K.astype(np.float32))[None]
    T = d.T_map_camera

    def batch(ids):
        img = lambda j: torch.from_numpy(np.ascontiguousarray(d.images[j].transpose(2, 0, 1))).float() / 255
        tgt = torch.stack([img(i) for i in ids])
        srcs = [torch.stack([img(i + o) for i in ids]) for o in (-1, 1)]
        Ts = [torch.stack([torch.from_numpy((np.linalg.inv(T[i + o]) @ T[i]).astype(np.float32)) for i in ids])
              for o in (-1, 1)]
        depth = torch.stack([torch.from_numpy(np.nan_to_num(d.depths[i].astype(np.float32), posinf=hi))
                             for i in ids])[:, None].clamp(lo, hi)
        disp = (1.0 / depth - 1.0 / hi) / (1.0 / lo - 1.0 / hi)
        moving = torch.stack([torch.from_numpy(d.dynamic_masks[i].astype(bool)) for i in ids])[:, None]
        pyramid = [disp] + [torch.nn.functional.avg_pool2d(disp, 2 ** k) for k in range(1, args.scales)]
        return StepInputs(tgt, srcs, Ts, K1.expand(len(ids), 3, 3)), pyramid, depth, moving

    om = ObjectMotion(lo, hi, 0, lambda: 1, zero_median=not args.no_median)
    loss_fn = FastSelfSupervisedLoss(lo, hi, smoothness_weight=0.0, scale_mode="native", num_scales=args.scales, noise=0,
                                     automask=not args.no_automask)
    photo, reg = ReprojectionTerm(loss_fn, motion=om), ObjectMotionTerm(om, args.reg, args.reg)
    opt = torch.optim.Adam(om.parameters(), lr=args.lr)
    frames = [i for i in range(1, len(d) - 1) if d.dynamic_masks[i].mean() > 0.02]
    evals = frames[:: max(1, len(frames) // 12)][:12]

    def report(step):
        s = dict(fd=0.0, fs=0.0, rd=0.0, md=0.0, rs=0.0, ms=0.0, nd=0.0, ns=0.0)
        with torch.no_grad():
            for i in evals:
                inp, disps, depth, moving = batch([i])
                fields = om.fields(TermContext(inp, None, disps))
                cam = PinholeCamera(inp.K, *depth.shape[-2:])
                er = torch.cat([photometric_error_fast(warp(s_, depth, t, cam)[0], inp.target)
                                for s_, t in zip(inp.sources, inp.T)], 1).min(1, keepdim=True).values
                em = torch.cat([photometric_error_fast(warp(s_, depth, t, cam, motion=f)[0], inp.target)
                                for s_, t, f in zip(inp.sources, inp.T, fields)], 1).min(1, keepdim=True).values
                mag = torch.stack([f.norm(dim=1, keepdim=True) for f in fields]).mean(0)
                st = ~moving
                for k, v in (("fd", mag[moving]), ("fs", mag[st]), ("rd", er[moving]), ("md", em[moving]),
                             ("rs", er[st]), ("ms", em[st])):
                    s[k] += float(v.sum())
                s["nd"] += float(moving.sum())
                s["ns"] += float(st.sum())
        print(f"step {step}: |field| moving {s['fd'] / s['nd']:.3f} m, static {s['fs'] / s['ns']:.3f} m; photometric "
              f"moving rigid {s['rd'] / s['nd']:.4f} -> field {s['md'] / s['nd']:.4f}, static rigid "
              f"{s['rs'] / s['ns']:.4f} -> field {s['ms'] / s['ns']:.4f}  [SYNTHETIC, {time.time() - t0:.0f} s]",
              flush=True)

    t0 = time.time()
    report(0)
    for step in range(1, args.steps + 1):
        inp, disps, _, _ = batch(list(rng.choice(frames, args.batch)))
        ctx = TermContext(inp, None, disps)
        loss = photo(ctx) + reg(ctx)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(om.parameters()), args.clip)
        opt.step()
        if step % args.report == 0:
            report(step)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
