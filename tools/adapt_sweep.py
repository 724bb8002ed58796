#!/usr/bin/env python3
"""Learning experiments for the adaptation step: the engine's training step on a drive, scored on held-out drives.

Exploration harness behind the tables of docs/learning.md ("Learning at camera pace"). It feeds the
:class:`~mono_depth_ros.adapt.engine.AdaptationEngine` exactly as the node's adaptation thread does
(1 fresh triplet + replayed ones per step, anchors, guard, verification), but with the drive's
ground-truth camera poses and the neighbouring frames t-1 / t+1 as sources, and no middleware or
ego-motion provider: a configuration is scored in a few minutes instead of a real-time drive. The
node's own figures come from ``scripts/demo`` (SYNTHETIC drives either way).

    tools/adapt_sweep.py NAME --steps-per-frame 0.6 [--set crop_width=192 --set spike_factor=2.0 ...]

``--set`` takes any :class:`~mono_depth_ros.adapt.engine.AdaptConfig` field. Prints one line with the
held-out B and A AbsRel and scale median(gt/pred) of the last verified weights.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from dataclasses import fields
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _value(text: str):
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("name", help="label of this run in the output line")
    p.add_argument("--drive", default="data/drive_B_seed201_120s_640x192", help="drive adapted on")
    p.add_argument("--heldout-a", default="data/drive_A_seed900_20s_640x192")
    p.add_argument("--heldout-b", default="data/drive_B_seed901_20s_640x192")
    p.add_argument("--steps-per-frame", type=float, default=0.6, help="steps per frame of the drive")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE", help="AdaptConfig field")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the node's adaptation uses 1)")
    p.add_argument("--json", type=Path, help="append the result as a JSON line to this file")
    p.add_argument("--save", type=Path, metavar="PT",
                   help="write the adapted network as a checkpoint (and the served K's correction in its meta)")
    # Learned intrinsics (issue 16 item 3): the K the engine sees, perturbed like `mono-depth adapt`'s.
    p.add_argument("--camera-info-error", default="", metavar="FX,FY,CX,CY",
                   help="the engine sees the drive's K perturbed as by `mono-depth adapt --camera-info-error` "
                        "(add --set intrinsics=refine to learn it); prints the served K against the truth")
    p.add_argument("--min-translation", type=float, default=0.0, metavar="M",
                   help="a frame whose neighbours are less than M metres away trains a replay-only step, like "
                        "the node's gating (adapt_min_translation, 0.2; the node then picks farther sources); "
                        "0 = every frame (as before)")
    _add_region_options(p)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from mono_depth_ros.adapt.anchors import load_anchor_images
    from mono_depth_ros.adapt.engine import AdaptationEngine, AdaptConfig, Triplet
    from mono_depth_ros.checkpoint import load_checkpoint, shipped_checkpoint_path
    from mono_depth_ros.learning.data import load_bag
    from mono_depth_ros.inference import DepthPredictor
    from mono_depth_ros.learning.evaluate import evaluate_frames

    torch.set_num_threads(args.threads)
    names = {f.name for f in fields(AdaptConfig)}
    overrides = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        if k not in names:
            p.error(f"--set {kv}: {k!r} is not an AdaptConfig field ({', '.join(sorted(names))})")
        overrides[k] = _value(v)
    drive = load_bag(args.drive)
    if drive.T_map_camera is None:
        p.error(f"{args.drive}: no ground-truth camera poses (this harness needs them)")
    held = {} if args.regions_only else {"A": load_bag(args.heldout_a, need_depth=True),
                                         "B": load_bag(args.heldout_b, need_depth=True)}
    model, meta = load_checkpoint(shipped_checkpoint_path())
    H, W = drive.size
    cfg = AdaptConfig(train_height=H, train_width=W, **overrides)
    engine = AdaptationEngine(model, None, cfg, anchors=load_anchor_images("synthetic_A"))
    if args.motion_init:    # a motion net pretrained offline (tools/pretrain_object_motion.py)
        if engine.object_motion is None:
            p.error("--motion-init needs --set object_motion=1")
        engine.object_motion.net.load_state_dict(torch.load(args.motion_init, map_location="cpu"))
    if args.oracle_motion:
        if engine.object_motion is None:
            p.error("--oracle-motion needs --set object_motion=1")
        _install_oracle(engine, args.drive, drive)
    T, K = drive.T_map_camera, torch.from_numpy(drive.K.astype(np.float32))
    K_seen = drive.K
    if args.camera_info_error:   # learned intrinsics: the session's K is the perturbed one
        from mono_depth_ros.adapt.offline import perturb_K
        K_seen = perturb_K(drive.K, tuple(float(v) for v in args.camera_info_error.split(",")), W)
        K = torch.from_numpy(K_seen.astype(np.float32))

    def img(i):
        return torch.from_numpy(np.ascontiguousarray(drive.images[i].transpose(2, 0, 1)))

    from mono_depth_ros.adapt.engine import calibration_gap_ns
    gap_ns = calibration_gap_ns(cfg)
    gap = None if gap_ns is None else max(1, round(gap_ns / float(np.median(np.diff(drive.stamps)))))
    credits, statuses, t0 = 0.0, {}, time.time()
    for i in range(1, len(drive) - 1):
        credits += args.steps_per_frame
        while credits >= 1.0:
            credits -= 1.0
            Ts = tuple(torch.from_numpy((np.linalg.inv(T[j]) @ T[i]).astype(np.float32)) for j in (i - 1, i + 1))
            wide = (None, None)
            if gap is not None and i >= gap:   # the intrinsics calibrator's pair, as TripletBuilder(wide_gap_ns) gives
                wide = (img(i - gap), torch.from_numpy((np.linalg.inv(T[i - gap]) @ T[i]).astype(np.float32)))
            trip = Triplet(int(drive.stamps[i]), img(i), (img(i - 1), img(i + 1)), Ts, K, None, None, *wide)
            if min(float(t[:3, 3].norm()) for t in Ts) < args.min_translation:   # standing: replay only
                rep = engine.train_next(None)
                if rep is not None:
                    statuses["replay_" + rep.status] = statuses.get("replay_" + rep.status, 0) + 1
                continue
            # The node's own path (replay sampling, and the engine's seeded random numbers: train_batch
            # alone would draw the auto-mask's tie-breaking noise from torch's unseeded global generator).
            rep = engine.train_next(trip)
            statuses[rep.status] = statuses.get(rep.status, 0) + 1
            if args.camera_info_error and engine.learns_intrinsics and sum(statuses.values()) % 50 == 0:
                st = engine.intrinsics_state()   # the served correction along the drive
                fit = engine.calibrator.last if engine.calibrator is not None else None
                print(f"  step {sum(statuses.values())}: log f {st['log_f']}, c {st['c']}"
                      + (f"; fit {fit}" if fit is not None else ""), flush=True)
    wall = time.time() - t0
    adapted = copy.deepcopy(engine.model)
    adapted.load_state_dict(engine.good_state())
    res = {"name": args.name, "overrides": overrides, "steps_per_frame": args.steps_per_frame,
           "steps": sum(statuses.values()), "statuses": statuses, "wall_s": round(wall, 1), "final_lr": engine.lr}
    if engine.learns_intrinsics:   # the served K against the truth: focal in %, principal point in % of W
        Ks = engine.served_K(K_seen, W, H)
        res["intrinsics"] = {"f": [round(float(100 * (Ks[i, i] / drive.K[i, i] - 1)), 2) for i in (0, 1)],
                             "c": [round(float(100 * (Ks[i, 2] - drive.K[i, 2]) / W), 2) for i in (0, 1)]}
        print(f"{args.name}: served K fx, fy {res['intrinsics']['f']} % off, cx, cy {res['intrinsics']['c']} % "
              f"of W off the truth", flush=True)
    if args.save:
        from mono_depth_ros.checkpoint import save_checkpoint
        save_checkpoint(args.save, adapted, (H, W), steps=res["steps"],
                        meta={"adapt_sweep": res, "intrinsics_state": {
                            k: np.asarray(v).tolist() for k, v in (engine.intrinsics_state() or {}).items()}})
    for d, frames in held.items():
        s = evaluate_frames(DepthPredictor(adapted, (H, W)), [frames]).summary()["raw"]
        res[d] = {"abs_rel": round(s["abs_rel"], 4), "scale": round(s["scale_ratio"], 3)}
    if held:
        print(f"{args.name}: {res['steps']} steps in {wall:.0f} s, held-out B AbsRel {res['B']['abs_rel']:.3f} "
              f"(scale {res['B']['scale']:.3f}), A AbsRel {res['A']['abs_rel']:.3f} (scale {res['A']['scale']:.3f}), "
              f"{statuses}, final lr {engine.lr:.2g}  [SYNTHETIC]", flush=True)
    if args.oracle_motion:
        res["oracle_rows"] = dict(engine.object_motion.oracle_stats)
        print(f"{args.name}: oracle fields on {res['oracle_rows']}  [ORACLE: the world's true motion]", flush=True)
    _score_regions(args, res, adapted, engine, drive, (H, W))
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(res) + "\n")
    return 0


# --- Moving objects (issue 16 item 2): held-out scoring by ground-truth regions and the motion field's
# diagnostics on the adaptation drive. ---------------------------------------------------------------

def _add_region_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("moving objects (issue 16)")
    g.add_argument("--regions", action="append", default=[], metavar="BAG",
                   help="also score this held-out drive (with /camera/dynamic_mask_gt) on its ground-truth "
                        "moving / static / all pixels (metric AbsRel, and median-scaled in brackets)")
    g.add_argument("--regions-stride", type=int, default=2, help="every n-th frame of the --regions drives")
    g.add_argument("--regions-only", action="store_true", help="skip the held-out A/B drives")
    g.add_argument("--motion-init", default=None, metavar="PT",
                   help="start the object-motion net from this state dict (tools/pretrain_object_motion.py)")
    g.add_argument("--oracle-motion", action="store_true",
                   help="an upper bound, not a method: the warp uses the synthetic world's TRUE object motion "
                        "(tools/fit_object_motion.py true_fields) on the ground-truth moving pixels instead of "
                        "the motion net's field, from the schedule's step on (needs --set object_motion=1 and "
                        "a generated drive with dynamic_mask_gt)")
    g.add_argument("--motion-diag", type=int, default=0, metavar="N",
                   help="on every N-th frame of the adaptation drive (needs its dynamic mask): mean |field| "
                        "on the moving / static pixels and the photometric error on them with the rigid warp "
                        "and with the field (object_motion runs), with the adapted depth")


def _score_regions(args, res: dict, adapted, engine, drive, size: tuple[int, int]) -> None:
    from mono_depth_ros.inference import DepthPredictor
    from mono_depth_ros.learning.data import load_bag
    from mono_depth_ros.learning.evaluate import evaluate_regions

    for bag in args.regions:
        frames = load_bag(bag, need_depth=True)
        if frames.dynamic_masks is None:
            raise SystemExit(f"--regions {bag}: no /camera/dynamic_mask_gt in this bag")
        accs = evaluate_regions(DepthPredictor(adapted, size), [frames], stride=args.regions_stride)
        out = {}
        for region, acc in accs.items():
            s = acc.summary()
            out[region] = {"abs_rel": round(s["raw"]["abs_rel"], 4), "scale": round(s["raw"]["scale_ratio"], 3),
                           "abs_rel_med": round(s["median_scaled"]["abs_rel"], 4)}
        res.setdefault("regions", {})[Path(bag).name] = out
        print(f"{args.name}: {res['steps']} steps, {Path(bag).name}: " + ", ".join(
            f"{r} AbsRel {v['abs_rel']:.4f} ({v['abs_rel_med']:.4f}, scale {v['scale']:.3f})" for r, v in out.items())
            + f" {res['statuses']}  [SYNTHETIC, single run]", flush=True)
    if args.motion_diag:
        res["motion_diag"] = _motion_diag(adapted, engine, drive, args.motion_diag)
        print(f"{args.name}: motion diag {res['motion_diag']}  [SYNTHETIC]", flush=True)


def _motion_diag(adapted, engine, drive, every: int) -> dict:
    """Mean |field| (m) and the photometric error (SSIM+L1, the smaller of the two sources per pixel,
    as the minimum reprojection) on the ground-truth moving / static pixels of every ``every``-th frame."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    from mono_depth_ros.adapt.motion import remove_median
    from mono_depth_ros.geometry import PinholeCamera, warp
    from mono_depth_ros.losses import photometric_error_fast
    from mono_depth_ros.models.base import disp_to_depth

    if drive.dynamic_masks is None:
        raise SystemExit("--motion-diag: the adaptation drive has no /camera/dynamic_mask_gt")
    om = engine.object_motion
    T = drive.T_map_camera
    K = torch.from_numpy(drive.K.astype(np.float32))[None]
    sums = {k: 0.0 for k in ("field_dyn", "field_sta", "rigid_dyn", "rigid_sta", "motion_dyn", "motion_sta",
                             "identity_dyn", "n_dyn", "n_sta")}
    adapted.eval()
    with torch.no_grad():
        for i in range(1, len(drive) - 1, every):
            moving = torch.from_numpy(drive.dynamic_masks[i].astype(bool))[None, None]
            if not bool(moving.any()):
                continue
            im = [torch.from_numpy(np.ascontiguousarray(drive.images[j].transpose(2, 0, 1))).float()[None] / 255
                  for j in (i - 1, i, i + 1)]
            tgt, srcs = im[1], (im[0], im[2])
            h, w = tgt.shape[-2:]
            cam = PinholeCamera(K, h, w)
            disp = adapted.predict_disps(tgt)[0] if hasattr(adapted, "predict_disps") else adapted(tgt)[0]
            depth = disp_to_depth(disp, adapted.min_depth, adapted.max_depth)
            if depth.shape[-2:] != (h, w):
                depth = F.interpolate(depth, (h, w), mode="bilinear", align_corners=False)
            Ts = [torch.from_numpy((np.linalg.inv(T[j]) @ T[i]).astype(np.float32))[None] for j in (i - 1, i + 1)]
            rigid = [warp(s, depth, Tj, cam)[0] for s, Tj in zip(srcs, Ts)]
            e_rigid = torch.cat([photometric_error_fast(r, tgt) for r in rigid], 1).min(1, keepdim=True).values
            e_id = torch.cat([photometric_error_fast(s, tgt) for s in srcs], 1).min(1, keepdim=True).values
            sta = ~moving
            sums["rigid_dyn"] += float(e_rigid[moving].sum())
            sums["rigid_sta"] += float(e_rigid[sta].sum())
            sums["identity_dyn"] += float(e_id[moving].sum())
            sums["n_dyn"] += float(moving.sum())
            sums["n_sta"] += float(sta.sum())
            if om is not None:
                x = torch.cat([torch.cat([tgt, r], 1) for r in rigid])
                fields = F.interpolate(om.net(F.avg_pool2d(x, 2)), (h, w), mode="bilinear", align_corners=False)
                if getattr(om, "zero_median", False):
                    fields = remove_median(fields)
                mag = fields.norm(dim=1, keepdim=True).mean(0, keepdim=True)
                sums["field_dyn"] += float(mag[moving].sum())
                sums["field_sta"] += float(mag[sta].sum())
                e_mot = torch.cat([photometric_error_fast(warp(s, depth, Tj, cam, motion=f[None])[0], tgt)
                                   for s, Tj, f in zip(srcs, Ts, fields)], 1).min(1, keepdim=True).values
                sums["motion_dyn"] += float(e_mot[moving].sum())
                sums["motion_sta"] += float(e_mot[sta].sum())
    nd, ns = max(sums.pop("n_dyn"), 1.0), max(sums.pop("n_sta"), 1.0)
    return {k: round(v / (nd if k.endswith("dyn") else ns), 4) for k, v in sums.items()
            if om is not None or not (k.startswith("field") or k.startswith("motion"))}


def _install_oracle(engine, bag: str, drive) -> None:
    """``--oracle-motion``: the engine's motion fields become the world's true ones (an upper bound on what a
    learned field can bring). Each batch row is recognised by its first source (frame i-1 of the sweep's
    triplet, replayed or fresh) and its crop by the principal points (``K_source - K``); the field of frame i
    towards i-1 and i+1 is computed once (tools/fit_object_motion.py ``true_fields``) and cropped."""
    import hashlib

    import numpy as np
    import torch

    from mono_depth_ros.adapt.motion import FIELDS_KEY
    sys.path.insert(0, str(ROOT / "tools"))
    from fit_object_motion import true_fields

    if drive.dynamic_masks is None or drive.depths is None:
        raise SystemExit("--oracle-motion: the drive needs /camera/dynamic_mask_gt and depth_gt")
    om = engine.object_motion
    key = lambda a: hashlib.blake2b(np.ascontiguousarray(a).tobytes(), digest_size=12).digest()   # noqa: E731
    index = {key(drive.images[j].transpose(2, 0, 1)): j + 1 for j in range(len(drive) - 2)}   # source i-1 -> i
    cache: dict[int, list] = {}
    stats = {"rows": 0, "moving_rows": 0}

    def fields(ctx):
        if FIELDS_KEY in ctx.extra:
            return ctx.extra[FIELDS_KEY]
        inp = ctx.inputs
        B, _, h, w = inp.target.shape
        out = [torch.zeros(B, 3, h, w) for _ in inp.sources]
        for b in range(B):
            src0 = (inp.sources[0][b] * 255).round().to(torch.uint8).numpy()
            i = index.get(key(src0))
            if i is None:
                raise RuntimeError("--oracle-motion: a batch row's first source is not a frame of the drive")
            if i not in cache:
                cache[i] = true_fields(bag, drive, [i])[0][i]
            x0 = y0 = 0
            if inp.K_source is not None:
                x0 = int(round(float(inp.K_source[b, 0, 2] - inp.K[b, 0, 2])))
                y0 = int(round(float(inp.K_source[b, 1, 2] - inp.K[b, 1, 2])))
            for s, f in enumerate(cache[i][:len(inp.sources)]):
                out[s][b] = torch.from_numpy(f[:, y0:y0 + h, x0:x0 + w])
            stats["rows"] += 1
            stats["moving_rows"] += int(bool(drive.dynamic_masks[i].any()))
        out = [o.to(inp.target.device) for o in out]
        ctx.extra[FIELDS_KEY] = out
        return out
    om.fields = fields
    om.oracle_stats = stats


if __name__ == "__main__":
    raise SystemExit(main())
