#!/usr/bin/env python3
"""Does the photometric loss point at the movers' true motion? Two probes on a generated drive (SYNTHETIC).

Exact depth and poses, 12 fixed frames with movers, the synthetic world's true field
(:func:`fit_object_motion.true_fields`), the error on the ground-truth moving pixels only:

* ``scan``: the movers' photometric error (minimum over t-1, t+1) with the field scaled by alpha in
  [0, 1], with the images area-pooled by 1, 2, 4, 8 (intrinsics scaled): is there a slope from zero?
* ``gradient``: the cosine between -dL/dfield (a free per-pixel field at alpha * true, next frame) and the
  remaining true motion, per pixel and over the whole field (and its x, y and z parts apart), with the images
  blurred by 1, 4, 16 px before the warp; and the mean |true| in x, y and in z.

    tools/probe_object_motion.py scan data/dense_B_seed301_60s_640x192_tex
    tools/probe_object_motion.py gradient data/dense_B_seed301_60s_640x192_tex
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("probe", choices=("scan", "gradient"))
    p.add_argument("drive", help="generated bag with camera, depth_gt, dynamic_mask_gt, pose_gt")
    args = p.parse_args(argv)

    import numpy as np
    import torch
    import torch.nn.functional as F

    from fit_object_motion import true_fields
    from mono_depth_ros.geometry import PinholeCamera, warp
    from mono_depth_ros.learning.data import load_bag
    from mono_depth_ros.losses import photometric_error_fast

    torch.set_num_threads(1)
    d = load_bag(args.drive, need_depth=True, need_pose=True)
    frames = [i for i in range(1, len(d) - 1) if d.dynamic_masks[i].mean() > 0.02]
    evals = frames[:: max(1, len(frames) // 12)][:12]
    truth, _ = true_fields(args.drive, d, evals)
    T = d.T_map_camera

    def img(j):
        return torch.from_numpy(np.ascontiguousarray(d.images[j].transpose(2, 0, 1))).float()[None] / 255

    def frame(i):
        depth = torch.from_numpy(np.nan_to_num(d.depths[i].astype(np.float32), posinf=100))[None, None]
        mov = torch.from_numpy(d.dynamic_masks[i].astype(bool))[None, None]
        return depth.clamp(0.1, 100), mov, torch.from_numpy(d.K.astype(np.float32))[None]

    def T_src(i, o):
        return torch.from_numpy((np.linalg.inv(T[i + o]) @ T[i]).astype(np.float32))[None]

    if args.probe == "scan":
        alphas = [0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1.0]
        for pool in (1, 2, 4, 8):
            res, n = np.zeros(len(alphas)), 0.0
            for i in evals:
                depth, mov, K = frame(i)
                if pool > 1:
                    K = K.clone()
                    K[:, :2] /= pool
                    K[:, 0, 2], K[:, 1, 2] = (d.K[0, 2] + 0.5) / pool - 0.5, (d.K[1, 2] + 0.5) / pool - 0.5
                ds = (lambda x: F.avg_pool2d(x, pool)) if pool > 1 else (lambda x: x)
                tgt, dep, mv = ds(img(i)), ds(depth), ds(mov.float()) > 0.99
                cam = PinholeCamera(K, *tgt.shape[-2:])
                for a_i, a in enumerate(alphas):
                    e = torch.cat([photometric_error_fast(warp(ds(img(i + o)), dep, T_src(i, o), cam,
                                                               motion=ds(torch.from_numpy(g)[None]) * a)[0], tgt)
                                   for o, g in zip((-1, 1), truth[i])], 1).min(1, keepdim=True).values
                    res[a_i] += float(e[mv].sum())
                n += float(mv.sum())
            print(f"pool {pool}: " + "  ".join(f"a={a:.2f}:{r / n:.4f}" for a, r in zip(alphas, res))
                  + "  [SYNTHETIC]", flush=True)
        return 0

    for alpha in (0.0, 0.5):
        for blur_px in (1, 4, 16):
            pix, tot, xy, zz, mag = [], [], [], [], []
            for i in evals:
                depth, mov, K = frame(i)
                cam = PinholeCamera(K, *depth.shape[-2:])
                gt = torch.from_numpy(truth[i][1])[None]
                f = (alpha * gt).clone().requires_grad_(True)
                src, tgt = img(i + 1), img(i)
                if blur_px > 1:   # blurred before the warp, at the same resolution: a wider basin
                    def blur(x):
                        return F.interpolate(F.avg_pool2d(x, blur_px), x.shape[-2:], mode="bilinear",
                                             align_corners=False)
                    src, tgt = blur(src), blur(tgt)
                e = photometric_error_fast(warp(src, depth, T_src(i, 1), cam, motion=f)[0], tgt)
                (e * mov).sum().backward()
                sel = gt.norm(dim=1) > 0
                a = (-f.grad).permute(0, 2, 3, 1)[sel]
                b = ((1 - alpha) * gt).permute(0, 2, 3, 1)[sel]
                pix.append(float(F.cosine_similarity(a, b, dim=1, eps=1e-12).mean()))
                tot.append(float((a * b).sum() / (a.norm() * b.norm() + 1e-12)))
                xy.append(float((a[:, :2] * b[:, :2]).sum() / (a[:, :2].norm() * b[:, :2].norm() + 1e-12)))
                zz.append(float((a[:, 2] * b[:, 2]).sum() / (a[:, 2].norm() * b[:, 2].norm() + 1e-12)))
                mag.append((float(gt[:, :2].norm(dim=1)[sel].mean()), float(gt[:, 2].abs()[sel].mean())))
            m = np.mean(mag, 0)
            print(f"alpha {alpha} blur {blur_px}: cosine per pixel {np.mean(pix):+.3f}, whole field {np.mean(tot):+.3f} "
                  f"(x, y {np.mean(xy):+.3f}; z {np.mean(zz):+.3f}); mean |true| x, y {m[0]:.3f} m, z {m[1]:.3f} m"
                  "  [SYNTHETIC]", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
