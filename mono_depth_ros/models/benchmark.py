"""CPU latency of the depth networks: ``python -m mono_depth_ros.models.benchmark``.

Reports min and median wall time of eval-mode forward passes (batch 1) under
``torch.inference_mode``. On a shared machine the minimum is the better
estimate of the network's own cost.
"""
from __future__ import annotations

import argparse
import time

import torch

from . import MODEL_NAMES, build_model


def measure(name: str, width: int, height: int, runs: int = 20, warmup: int = 3) -> tuple[float, float]:
    """(min, median) milliseconds per forward pass of ``name`` at width x height, batch 1."""
    net = build_model(name).eval()
    x = torch.rand(1, 3, height, width)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            net.predict_depth(x)
        for _ in range(runs):
            t = time.perf_counter()
            net.predict_depth(x)
            times.append((time.perf_counter() - t) * 1000.0)
    times.sort()
    return times[0], times[len(times) // 2]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="640x192", help="WxH")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--runs", type=int, default=20, help="timed runs per network")
    p.add_argument("--arch", action="append", choices=MODEL_NAMES, help="network(s) (default: all)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    w, h = (int(v) for v in a.size.split("x"))
    print(f"| network | params | min ms | median ms |  ({w}x{h}, batch 1, {a.threads} threads)")
    print("|---|---:|---:|---:|")
    for name in a.arch or MODEL_NAMES:
        n = sum(p.numel() for p in build_model(name).parameters())
        lo, med = measure(name, w, h, a.runs)
        print(f"| {name} | {n / 1e6:.2f} M | {lo:.1f} | {med:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
