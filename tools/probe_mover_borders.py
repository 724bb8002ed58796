#!/usr/bin/env python3
"""Where a network's depth of moving cars goes wrong: AbsRel and median gt/pred on the ground-truth moving
pixels, their interiors (the mask eroded by 3 px), the 3-px border ring, and the static pixels, over every 2nd
frame of a held-out dense-traffic drive (SYNTHETIC). Dev probe behind docs/learning.md "Session 10: what a perfect
field would bring".

    tools/probe_mover_borders.py CHECKPOINT [--bag data/dense_B_seed902_20s_640x192]
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--bag", default="data/dense_B_seed902_20s_640x192", help="drive with depth_gt and dynamic_mask_gt")
    a = p.parse_args(argv)
    from mono_depth_ros.checkpoint import CheckpointError, load_checkpoint
    from mono_depth_ros.inference import DepthPredictor
    from mono_depth_ros.learning.data import load_bag
    from mono_depth_ros.metrics import compute_depth_metrics

    try:
        model, _ = load_checkpoint(a.checkpoint)
    except CheckpointError as exc:
        raise SystemExit(f"probe_mover_borders: {exc}") from None
    d = load_bag(a.bag, need_depth=True)
    if d.dynamic_masks is None:
        raise SystemExit(f"{a.bag}: no /camera/dynamic_mask_gt")
    H, W = d.size
    pred = DepthPredictor(model, (H, W))
    acc = {k: [] for k in ("movers", "interior", "border", "static")}
    ratio = {k: [] for k in acc}
    kernel = np.ones((7, 7), np.uint8)
    for i in range(0, len(d), 2):
        m = d.dynamic_masks[i].astype(np.uint8)
        if m.sum() < 200:
            continue
        depth = pred.predict(d.images[i], d.K).depth
        inner = cv2.erode(m, kernel).astype(bool)
        for name, mask in {"movers": m.astype(bool), "interior": inner, "border": m.astype(bool) & ~inner,
                           "static": ~m.astype(bool)}.items():
            r = compute_depth_metrics(d.depths[i], depth, mask=mask)   # the evaluation's own metrics
            if r is None or r["n_valid"] < 20:
                continue
            acc[name].append(r["abs_rel"])
            ratio[name].append(r["scale_ratio"])
    for n in acc:
        print(f"{n}: AbsRel {np.mean(acc[n]):.3f}, gt/pred {np.mean(ratio[n]):.3f}, images {len(acc[n])}  [SYNTHETIC]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
