#!/usr/bin/env python3
"""Cost and accuracy of one online metric-scale estimate (adapt/scale.py) on exact synthetic frame pairs.

Renders a short domain-A drive (exact depth and camera poses), gives the estimator the true depth
times an arbitrary factor (scale only) or as an affine-transformed disparity (scale and shift),
with the true metric pose, and prints the recovered scale's error and the time per estimate.
Usage::

    python scripts/metric_scale_bench.py [--pairs 6] [--runs 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from mono_depth_ros.adapt.scale import MetricScaleEstimator
from mono_depth_ros.tools.synth import render_drive


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=6)
    p.add_argument("--runs", type=int, default=3, help="timed repeats per pair (median)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=5)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    frames = list(render_drive("A", seed=a.seed, duration_s=0.3 * a.pairs + 0.1, width=640, height=192,
                               camera_noise=False))
    est = MetricScaleEstimator()
    out = {"threads": a.threads, "size": [est.config.width, est.config.height], "scale": [], "affine": []}
    for i in range(1, len(frames), 3):
        tgt, src = frames[i], frames[i - 1]
        T = np.linalg.inv(src.T_map_camera) @ tgt.T_map_camera
        depth = np.where(np.isfinite(tgt.depth), tgt.depth, 1000.0).astype(np.float32)
        for kind, rel, affine in (("scale", depth * 0.137, False),
                                  ("affine", 1.0 / (2.0 / depth + 0.05), True)):
            times = []
            for _ in range(a.runs):
                t = time.perf_counter()
                e = est.estimate(tgt.image, rel.astype(np.float32), src.image, T, tgt.K, affine=affine)
                times.append(time.perf_counter() - t)
            err = e.scale * 0.137 - 1 if kind == "scale" else (1 / e.scale) / 0.5 - 1
            out[kind].append({"ok": e.ok, "scale_error": round(err, 4), "shift": round(e.shift, 5),
                              "ms": round(1e3 * float(np.median(times)), 1)})
    for kind in ("scale", "affine"):
        rows = out[kind]
        out[f"{kind}_max_abs_error"] = max(abs(r["scale_error"]) for r in rows)
        out[f"{kind}_ms_median"] = float(np.median([r["ms"] for r in rows]))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
