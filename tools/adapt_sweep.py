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
    # Learned intrinsics (issue 16 item 3): the K the engine sees, perturbed like `mono-depth adapt`'s.
    p.add_argument("--camera-info-error", default="", metavar="FX,FY,CX,CY",
                   help="the engine sees the drive's K perturbed as by `mono-depth adapt --camera-info-error` "
                        "(add --set intrinsics=refine to learn it); prints the served K against the truth")
    p.add_argument("--min-translation", type=float, default=0.0, metavar="M",
                   help="a frame whose neighbours are less than M metres away trains a replay-only step, like "
                        "the node's gating (adapt_min_translation, 0.2; the node then picks farther sources); "
                        "0 = every frame (as before)")
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
    held = {"A": load_bag(args.heldout_a, need_depth=True), "B": load_bag(args.heldout_b, need_depth=True)}
    model, meta = load_checkpoint(shipped_checkpoint_path())
    H, W = drive.size
    cfg = AdaptConfig(train_height=H, train_width=W, **overrides)
    engine = AdaptationEngine(model, None, cfg, anchors=load_anchor_images("synthetic_A"))
    T, K = drive.T_map_camera, torch.from_numpy(drive.K.astype(np.float32))
    K_seen = drive.K
    if args.camera_info_error:   # learned intrinsics: the session's K is the perturbed one
        from mono_depth_ros.adapt.offline import perturb_K
        K_seen = perturb_K(drive.K, tuple(float(v) for v in args.camera_info_error.split(",")), W)
        K = torch.from_numpy(K_seen.astype(np.float32))

    def img(i):
        return torch.from_numpy(np.ascontiguousarray(drive.images[i].transpose(2, 0, 1)))

    credits, statuses, t0 = 0.0, {}, time.time()
    for i in range(1, len(drive) - 1):
        credits += args.steps_per_frame
        while credits >= 1.0:
            credits -= 1.0
            Ts = tuple(torch.from_numpy((np.linalg.inv(T[j]) @ T[i]).astype(np.float32)) for j in (i - 1, i + 1))
            trip = Triplet(int(drive.stamps[i]), img(i), (img(i - 1), img(i + 1)), Ts, K)
            if min(float(t[:3, 3].norm()) for t in Ts) < args.min_translation:   # standing: replay only
                if len(engine.replay) > cfg.replay_per_step:
                    rep = engine.train_batch(engine.replay.sample(cfg.replay_per_step + 1), False)
                    statuses["replay_" + rep.status] = statuses.get("replay_" + rep.status, 0) + 1
                continue
            batch = [trip] + engine.replay.sample(cfg.replay_per_step, exclude_stamp=trip.stamp_ns)
            engine.replay.add(trip)
            rep = engine.train_batch(batch, True)
            statuses[rep.status] = statuses.get(rep.status, 0) + 1
            if args.camera_info_error and engine.learns_intrinsics and sum(statuses.values()) % 50 == 0:
                st = engine.intrinsics_state()   # the served correction along the drive
                print(f"  step {sum(statuses.values())}: log f {st['log_f']}, c {st['c']}", flush=True)
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
    for d, frames in held.items():
        s = evaluate_frames(DepthPredictor(adapted, (H, W)), [frames]).summary()["raw"]
        res[d] = {"abs_rel": round(s["abs_rel"], 4), "scale": round(s["scale_ratio"], 3)}
    print(f"{args.name}: {res['steps']} steps in {wall:.0f} s, held-out B AbsRel {res['B']['abs_rel']:.3f} "
          f"(scale {res['B']['scale']:.3f}), A AbsRel {res['A']['abs_rel']:.3f} (scale {res['A']['scale']:.3f}), "
          f"{statuses}, final lr {engine.lr:.2g}  [SYNTHETIC]", flush=True)
    if args.json:
        with open(args.json, "a") as f:
            f.write(json.dumps(res) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
