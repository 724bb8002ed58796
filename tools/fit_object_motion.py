#!/usr/bin/env python3
"""Can the object-motion net learn the movers' motion at all? Fit it alone with the *ground-truth* depth.

Diagnosis tool for docs/learning.md ("Moving objects"): the depth is the drive's exact depth (so any
residual of the rigid warp on a moving car is its own motion), the camera poses are exact, and only
:class:`~mono_depth_ros.adapt.motion.ObjectMotion`'s net trains, with the engine's loss terms
(:class:`~mono_depth_ros.adapt.terms.ReprojectionTerm` with auto-masking + ``ObjectMotionTerm``), its
Adam group and gradient limit. Every ``--report`` steps it prints, on fixed frames of the drive, the mean
|field| on the ground-truth moving / static pixels and the photometric error (minimum over t-1, t+1)
on them with the rigid warp and with the field. For a drive of the synthetic world (its generator's record
in the bag's metadata) it also rebuilds the world and scores the field against the *true* field of every
moving pixel (its car's rigid motion between the two frames, in the source camera's axes): mean |true|,
mean |field - true|, the cosine between them, and the photometric error with the true field (what a
perfect field would reach).

    tools/fit_object_motion.py data/dense_B_seed301_60s_640x192 --steps 600 --lr 1e-2 [--reg 0.05]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def true_fields(bag, frames, ids, offsets=(-1, 1)):
    """The synthetic world's own object motion at the moving pixels of some frames of a generated drive.

    Rebuilds the drive's world from the generator's record in ``bag``'s metadata; every moving pixel's
    3-D point (ground-truth depth and pose) is assigned to the car whose box holds it, moved with that
    car's rigid motion to the source frame's time and expressed in the source camera's axes: the field
    :func:`~mono_depth_ros.geometry.warp` expects (``moved = T_source_target p + field``).

    Args:
        bag: the drive's directory; frames: a :class:`~mono_depth_ros.learning.data.BagFrames` of it;
            ids: the target frames' indices.
    Returns:
        dict frame index -> list (one per offset) of (3,H,W) float32 fields in metres (0 off the movers),
        and the fraction of moving pixels assigned to a car.
    """
    import json
    from pathlib import Path

    import numpy as np
    import yaml

    from mono_depth_ros.tools.synth.bag import traffic_density
    from mono_depth_ros.tools.synth.drive import DEFAULT_START_NS
    from mono_depth_ros.tools.synth.presets import get_preset
    from mono_depth_ros.tools.synth.world import build_world

    meta = yaml.safe_load((Path(bag) / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    info = json.loads(meta["custom_data"]["mono_depth_ros.synth"])
    preset = get_preset(info["preset"]).replace(
        moving_cars_per_km=traffic_density(info["moving_cars_per_km"], 0.0))
    world = build_world(preset, info["seed"], info["duration_s"])
    tr = world.traffic
    half = np.array([[np.ptp(m.xyz[..., k]) / 2 + 0.05 for k in range(3)] for m in tr.templates])
    centre = np.array([[(m.xyz[..., k].max() + m.xyz[..., k].min()) / 2 for k in range(3)] for m in tr.templates])

    def poses(t):
        xy, h = tr.road.point(tr.arc_length(t), tr.d)
        yaw = h + np.where(tr.direction < 0, np.pi, 0.0)
        c, s_ = np.cos(yaw), np.sin(yaw)
        R = np.zeros((len(yaw), 3, 3))
        R[:, 0, 0], R[:, 0, 1], R[:, 1, 0], R[:, 1, 1], R[:, 2, 2] = c, -s_, s_, c, 1.0
        return R, np.column_stack([xy, np.zeros(len(yaw))])

    K, H, W = frames.K, frames.images.shape[1], frames.images.shape[2]
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    t_of = lambda j: (int(frames.stamps[j]) - DEFAULT_START_NS) / 1e9        # noqa: E731
    out, hit, total = {}, 0, 0
    for i in ids:
        moving = frames.dynamic_masks[i].astype(bool)
        z = frames.depths[i].astype(np.float64)[moving]
        p_cam = np.stack([(u[moving] - K[0, 2]) / K[0, 0] * z, (v[moving] - K[1, 2]) / K[1, 1] * z, z], 1)
        T_i = frames.T_map_camera[i]
        P = p_cam @ T_i[:3, :3].T + T_i[:3, 3]                                     # (M,3) map
        R_i, x_i = poses(t_of(i))
        q = np.einsum("cji,mcj->mci", R_i, P[:, None, :] - x_i[None])             # (M,C,3) car-local
        inside = np.all(np.abs(q - centre[None]) <= half[None], axis=2)           # (M,C)
        car = np.where(inside.any(1), np.argmax(inside, 1), -1)
        hit, total = hit + int((car >= 0).sum()), total + len(car)
        fields = []
        for o in offsets:
            j = i + o
            R_j, x_j = poses(t_of(j))
            ok = car >= 0
            qc = q[np.flatnonzero(ok), car[ok]]
            P_j = np.einsum("mij,mj->mi", R_j[car[ok]], qc) + x_j[car[ok]]
            f = np.zeros((len(car), 3))
            f[ok] = (P_j - P[ok]) @ frames.T_map_camera[j][:3, :3]                # map -> source camera axes
            full = np.zeros((3, H, W), np.float32)
            full[:, moving] = f.T
            fields.append(full)
        out[i] = fields
    return out, hit / max(total, 1)


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
    p.add_argument("--no-truth", action="store_true", help="skip the comparison with the world's true field")
    p.add_argument("--save", default=None, help="save the motion net's state dict here at the end")
    p.add_argument("--init", default=None, help="start from this state dict (tools/pretrain_object_motion.py)")
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
    if args.init:
        om.net.load_state_dict(torch.load(args.init, map_location="cpu"))
    loss_fn = FastSelfSupervisedLoss(lo, hi, smoothness_weight=0.0, scale_mode="native", num_scales=args.scales, noise=0,
                                     automask=not args.no_automask)
    photo, reg = ReprojectionTerm(loss_fn, motion=om), ObjectMotionTerm(om, args.reg, args.reg)
    opt = torch.optim.Adam(om.parameters(), lr=args.lr)
    frames = [i for i in range(1, len(d) - 1) if d.dynamic_masks[i].mean() > 0.02]
    evals = frames[:: max(1, len(frames) // 12)][:12]

    truth = None
    if not args.no_truth:
        try:
            truth, assigned = true_fields(args.drive, d, evals)
            print(f"true fields: {assigned:.1%} of the moving pixels assigned to a car", flush=True)
        except (KeyError, FileNotFoundError) as err:
            print(f"no true fields ({err!r}): not a generated drive?", flush=True)

    def report(step):
        s = dict(fd=0.0, fs=0.0, rd=0.0, md=0.0, rs=0.0, ms=0.0, nd=0.0, ns=0.0,
                 gt=0.0, err=0.0, cos=0.0, od=0.0, ng=0.0)
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
                if truth is not None:
                    gts = [torch.from_numpy(g)[None] for g in truth[i]]
                    eo = torch.cat([photometric_error_fast(warp(s_, depth, t, cam, motion=g)[0], inp.target)
                                    for s_, t, g in zip(inp.sources, inp.T, gts)], 1).min(1, keepdim=True).values
                    s["od"] += float(eo[moving].sum())
                    for f, g in zip(fields, gts):
                        sel = (g.norm(dim=1) > 0)                                   # assigned moving pixels
                        fv, gv = f.permute(0, 2, 3, 1)[sel], g.permute(0, 2, 3, 1)[sel]
                        s["gt"] += float(gv.norm(dim=1).sum())
                        s["err"] += float((fv - gv).norm(dim=1).sum())
                        s["cos"] += float(torch.nn.functional.cosine_similarity(fv, gv, dim=1, eps=1e-9).sum())
                        s["ng"] += float(sel.sum())
        print(f"step {step}: |field| moving {s['fd'] / s['nd']:.3f} m, static {s['fs'] / s['ns']:.3f} m; photometric "
              f"moving rigid {s['rd'] / s['nd']:.4f} -> field {s['md'] / s['nd']:.4f}, static rigid "
              f"{s['rs'] / s['ns']:.4f} -> field {s['ms'] / s['ns']:.4f}  [SYNTHETIC, {time.time() - t0:.0f} s]",
              flush=True)
        if truth is not None:
            n = max(s["ng"], 1.0)
            print(f"  vs true field on movers: |true| {s['gt'] / n:.3f} m, |field - true| {s['err'] / n:.3f} m, "
                  f"cosine {s['cos'] / n:+.3f}; photometric moving with the true field {s['od'] / s['nd']:.4f}",
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
    if args.save:
        torch.save(om.net.state_dict(), args.save)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
