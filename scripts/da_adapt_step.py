#!/usr/bin/env python3
"""One online-adaptation step of Depth Anything V2 Small on the CPU: DPT head only vs full fine-tuning.

A step is what the engine does (bench.core.adaptation_step): forward in train mode, monodepth2's
self-supervised loss with two source frames at known metric poses, backward, Adam. Random
weights (the timing does not depend on them). Usage::

    python scripts/da_adapt_step.py [--size 266x98] [--runs 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import json

import torch

from mono_depth_ros.tools.bench.core import adaptation_step
from mono_depth_ros.models import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="266x98", help="WxH, multiples of 14")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--model", default="depth_anything_v2_small")
    a = p.parse_args()
    w, h = (int(v) for v in a.size.lower().split("x"))
    torch.set_num_threads(a.threads)
    out = {"model": a.model, "size": [w, h], "threads": a.threads}
    for mode in ("head", "full"):
        net = build_model(a.model)
        if mode == "head":
            net.freeze_backbone()
        trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
        t = adaptation_step(net, h, w, a.runs, warmup=1)
        out[mode] = {"trainable_params": trainable, "median_ms": round(t.median_ms, 1), "min_ms": round(t.min_ms, 1)}
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
