#!/usr/bin/env python3
"""Pretrain the object-motion net offline on a generated drive's *true* object motion (supervised).

Experiment for docs/learning.md ("Moving objects", textured cars): the photometric loss alone does not
move the field from zero (its gradient on the movers is nearly orthogonal to their motion), so the net
is first taught the synthetic world's own field (:func:`fit_object_motion.true_fields`: every moving
pixel's car motion between two frames, in the source camera's axes) and then handed to the adaptation
(``tools/adapt_sweep.py --motion-init``) or to ``tools/fit_object_motion.py --init``. The net's input is
the engine's (:meth:`~mono_depth_ros.adapt.motion.ObjectMotion.fields`: the target and each source warped
into it by the camera motion with the depth, here the ground-truth depth), the loss is the squared distance to
the true field, averaged over the moving pixels and over the static ones apart (one weight each).
Every ``--report`` steps it scores held-out frames (``--val``): mean |field - true| / mean |true| and the
cosine on the movers, mean |field| on static pixels, the movers' photometric error (rigid, this field, true).

    tools/pretrain_object_motion.py data/dense_B_seed301_60s_640x192_tex --val data/dense_B_seed902_20s_640x192_tex \
        --steps 1500 --out out/motion_pretrained.pt
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("drive", help="generated bag with camera, depth_gt, dynamic_mask_gt, pose_gt")
    p.add_argument("--val", required=True, help="held-out generated bag (same topics)")
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--report", type=int, default=250)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="where to save the net's state dict")
    p.add_argument("--init", default=None, help="continue from this state dict")
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from fit_object_motion import true_fields
    from mono_depth_ros.adapt.motion import ObjectMotion
    from mono_depth_ros.adapt.terms import StepInputs, TermContext
    from mono_depth_ros.geometry import PinholeCamera, warp
    from mono_depth_ros.learning.data import load_bag
    from mono_depth_ros.losses import photometric_error_fast

    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    lo, hi = 0.1, 100.0

    def prepare(path, every):
        d = load_bag(path, need_depth=True, need_pose=True)
        ids = [i for i in range(1, len(d) - 1) if d.dynamic_masks[i].mean() > 0.01][::every]
        t0 = time.time()
        fields, assigned = true_fields(path, d, ids)
        print(f"{path}: {len(ids)} frames, true fields in {time.time() - t0:.0f} s ({assigned:.1%} assigned)",
              flush=True)
        return d, ids, {i: [torch.from_numpy(f).half() for f in fs] for i, fs in fields.items()}

    train, val = prepare(args.drive, 1), prepare(args.val, 4)

    def batch(data, ids):
        d, _, fields = data
        img = lambda j: torch.from_numpy(np.ascontiguousarray(d.images[j].transpose(2, 0, 1))).float() / 255  # noqa
        T = d.T_map_camera
        tgt = torch.stack([img(i) for i in ids])
        srcs = [torch.stack([img(i + o) for i in ids]) for o in (-1, 1)]
        Ts = [torch.stack([torch.from_numpy((np.linalg.inv(T[i + o]) @ T[i]).astype(np.float32)) for i in ids])
              for o in (-1, 1)]
        depth = torch.stack([torch.from_numpy(np.nan_to_num(d.depths[i].astype(np.float32), posinf=hi))
                             for i in ids])[:, None].clamp(lo, hi)
        disp = (1.0 / depth - 1.0 / hi) / (1.0 / lo - 1.0 / hi)
        moving = torch.stack([torch.from_numpy(d.dynamic_masks[i].astype(bool)) for i in ids])[:, None]
        K = torch.from_numpy(d.K.astype(np.float32))[None].expand(len(ids), 3, 3)
        true = [torch.stack([fields[i][k].float() for i in ids]) for k in range(2)]
        return StepInputs(tgt, srcs, Ts, K), [disp], depth, moving, true

    om = ObjectMotion(lo, hi, 0, lambda: 1)
    if args.init:
        om.net.load_state_dict(torch.load(args.init, map_location="cpu"))
    opt = torch.optim.Adam(om.parameters(), lr=args.lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.steps, eta_min=args.lr / 20)

    def score(step):
        s = dict(err=0.0, gt=0.0, cos=0.0, n=0.0, sta=0.0, ns=0.0, er=0.0, ef=0.0, et=0.0, nm=0.0)
        with torch.no_grad():
            for i in val[1]:
                inp, disps, depth, moving, true = batch(val, [i])
                fields = om.fields(TermContext(inp, None, disps))
                cam = PinholeCamera(inp.K, *depth.shape[-2:])
                errs = {k: [] for k in ("er", "ef", "et")}
                for src, T, f, g in zip(inp.sources, inp.T, fields, true):
                    sel = g.norm(dim=1) > 0
                    fv, gv = f.permute(0, 2, 3, 1)[sel], g.permute(0, 2, 3, 1)[sel]
                    s["err"] += float((fv - gv).norm(dim=1).sum())
                    s["gt"] += float(gv.norm(dim=1).sum())
                    s["cos"] += float(torch.nn.functional.cosine_similarity(fv, gv, dim=1, eps=1e-9).sum())
                    s["n"] += float(sel.sum())
                    s["sta"] += float(f.norm(dim=1)[~moving[:, 0]].sum())
                    s["ns"] += float((~moving).sum())
                    for k, m in (("er", None), ("ef", f), ("et", g)):
                        errs[k].append(photometric_error_fast(warp(src, depth, T, cam, motion=m)[0], inp.target))
                for k, e in errs.items():
                    s[k] += float(torch.cat(e, 1).min(1, keepdim=True).values[moving].sum())
                s["nm"] += float(moving.sum())
        n = max(s["n"], 1.0)
        print(f"step {step}: held-out movers |field - true| / |true| {s['err'] / max(s['gt'], 1e-9):.3f} "
              f"(|true| {s['gt'] / n:.3f} m), cosine {s['cos'] / n:+.3f}; static |field| {s['sta'] / s['ns']:.3f} m; "
              f"movers' photometric rigid {s['er'] / s['nm']:.4f} -> field {s['ef'] / s['nm']:.4f} "
              f"(true {s['et'] / s['nm']:.4f})  [SYNTHETIC, {time.time() - t0:.0f} s]", flush=True)

    t0 = time.time()
    score(0)
    for step in range(1, args.steps + 1):
        inp, disps, _, moving, true = batch(train, list(rng.choice(train[1], args.batch)))
        fields = om.fields(TermContext(inp, None, disps))
        loss = 0.0
        for f, g in zip(fields, true):
            # Squared error (B,1,H,W): with an L1 loss and movers the net cannot yet tell from static pixels,
            # the optimum is the median over them, zero, and the net never leaves it (measured: 300 steps,
            # |field - true| / |true| 1.000).
            err = (f - g).square().sum(1, keepdim=True)
            loss = loss + err[moving].mean() + err[~moving].mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(om.parameters()), 1.0)
        opt.step()
        sched.step()
        if step % args.report == 0:
            score(step)
    torch.save(om.net.state_dict(), args.out)
    print(f"saved {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
