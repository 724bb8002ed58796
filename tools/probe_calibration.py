#!/usr/bin/env python3
"""The intrinsics calibrator's fit alone, on one network's depth: how far does that depth pull the focal length?

Builds the calibrator's buffer from a generated drive (pairs ``--gap`` frames apart, ground-truth poses, the
largest turns of each direction: what the engine keeps), sees the drive's K perturbed by ``--camera-info-error``,
and runs ``--fits`` fits in a row from there (each from the last accepted one, like the engine) for every
variant given. Prints the focal length's error after each fit and the principal point's at the end. SYNTHETIC.

Variants (``--variants``, comma separated; ``+`` joins options): ``plain`` (the network's depth held),
``gridN`` (the depth freed on N-pixel cells: ``intrinsics_calibration_depth_grid``), ``itN`` (N iterations), ``c2f``
(coarse to fine: 1/8 and 1/4 before the fit's 1/2).

    tools/probe_calibration.py out/s9/adapt_trueK/adapted.pt --variants plain,grid8
    tools/probe_calibration.py shipped --variants plain,grid8       # the shipped weights (not adapted to B)
    tools/probe_calibration.py gt --variants plain                  # the drive's ground-truth depth
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("checkpoint", help="network whose depth the fit uses: a .pt, 'shipped', or 'gt' (the "
                                      "drive's ground-truth depth)")
    p.add_argument("--drive", default="data/drive_B_seed201_120s_640x192", help="generated drive (with depth_gt, pose_gt)")
    p.add_argument("--variants", default="plain,grid8", help="fit variants (module docstring)")
    p.add_argument("--camera-info-error", default="0.2,0.2,0.005,0.005", metavar="FX,FY,CX,CY",
                   help="the K the fit starts from, as `mono-depth adapt --camera-info-error` (the principal point "
                        "within the fit's reach: the engine's training loss brings it there first)")
    p.add_argument("--gap", type=int, default=5, help="frames between the two images of a pair (0.5 s at 10 Hz)")
    p.add_argument("--fits", type=int, default=4, help="fits in a row")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)

    import numpy as np
    import torch

    from mono_depth_ros.adapt.calibration import IntrinsicsCalibrator
    from mono_depth_ros.adapt.offline import perturb_K
    from mono_depth_ros.checkpoint import CheckpointError, load_checkpoint, shipped_checkpoint_path
    from mono_depth_ros.learning.data import load_bag
    from mono_depth_ros.losses import full_res_depth

    torch.set_num_threads(args.threads)

    def make(variant: str) -> IntrinsicsCalibrator:
        kw = dict(per_direction=8, min_per_direction=0, max_change_log_f=0.25, max_change_c=0.025, depth_grid=0)
        for part in variant.split("+"):
            if part.startswith("grid"):
                kw["depth_grid"] = int(part[4:])
            elif part.startswith("it"):
                kw["iterations"] = int(part[2:])
            elif part == "c2f":
                kw["coarse"] = (8, 4)
            elif part != "plain":
                raise SystemExit(f"unknown variant part {part!r} (plain, gridN, itN, c2f)")
        return IntrinsicsCalibrator(**kw)

    for variant in args.variants.split(","):   # a typo fails before the drive is read
        make(variant)
    drive = load_bag(args.drive, need_depth=True, need_pose=True)
    H, W = drive.images.shape[1:3]
    T = drive.T_map_camera
    model = None
    if args.checkpoint != "gt":
        try:
            model, _ = load_checkpoint(shipped_checkpoint_path() if args.checkpoint == "shipped" else args.checkpoint)
        except CheckpointError as e:
            raise SystemExit(f"probe_calibration: {e}") from None
        model.eval()
    err = tuple(float(v) for v in args.camera_info_error.split(","))
    K_seen = perturb_K(drive.K, err, W).astype(np.float32)

    buffer = make("plain")
    for i in range(args.gap, len(drive)):
        Tst = torch.from_numpy((np.linalg.inv(T[i - args.gap]) @ T[i]).astype(np.float32))
        img = [torch.from_numpy(np.ascontiguousarray(drive.images[j].transpose(2, 0, 1))) for j in (i, i - args.gap)]
        buffer.offer(i, img[0], img[1], Tst, torch.from_numpy(K_seen))
    stamps = [q.stamp_ns for q in buffer.pairs[1] + buffer.pairs[-1]]
    print(f"{len(stamps)} pairs ({buffer.counts()[0]} yaw+, {buffer.counts()[1]} yaw-), turning "
          f"{min(abs(q.yaw) for q in buffer.pairs[1] + buffer.pairs[-1]) * 57.3:.2f}-"
          f"{max(abs(q.yaw) for q in buffer.pairs[1] + buffer.pairs[-1]) * 57.3:.2f} deg", flush=True)

    def depth_fn(x):
        if model is None:
            return torch.from_numpy(np.stack([np.nan_to_num(drive.depths[s], posinf=100.0) for s in stamps])
                                    .astype(np.float32))[:, None].clamp(0.1, 100)
        with torch.no_grad():
            return full_res_depth(model.predict_disps(x)[0], *x.shape[-2:], model.min_depth, model.max_depth)

    truth = float(np.log(drive.K[0, 0] / K_seen[0, 0]))
    for variant in args.variants.split(","):
        cal = make(variant)
        cal.pairs = buffer.pairs
        log_f, c, hist, t0, res = (0.0, 0.0), (0.0, 0.0), [], time.time(), None
        for _ in range(args.fits):
            res = cal.fit(depth_fn, log_f, c)
            if res.accepted:
                log_f, c = (res.log_f[0], res.log_f[0]), res.c
            hist.append(f"{100 * (np.exp(log_f[0] - truth) - 1):+.2f}%" + ("" if res.accepted else " (refused)"))
        cx = 100 * (K_seen[0, 2] + c[0] * W - drive.K[0, 2]) / W
        cy = 100 * (K_seen[1, 2] + c[1] * H - drive.K[1, 2]) / W
        print(f"{args.checkpoint} {variant}: fx after each fit {' '.join(hist)}; cx {cx:+.2f}% cy {cy:+.2f}% of W; "
              f"median depth correction x{np.exp(res.log_depth_scale):.3f} ({time.time() - t0:.0f} s)  [SYNTHETIC]",
              flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
