"""Colour and texture statistics per domain: ``python -m mono_depth_ros.tools.synth.stats``.

Prints a Markdown table (mean RGB, RGB std, gradient energy, sky fraction,
median GT depth) over frames of each preset, to show how far apart the
domains are.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from mono_depth_ros.tools.synth.drive import Drive, DriveConfig
from mono_depth_ros.tools.synth.presets import PRESETS

__all__ = ["image_statistics", "domain_statistics", "main"]


def image_statistics(images: np.ndarray) -> dict[str, np.ndarray | float]:
    """Statistics of a stack of images.

    Args:
        images: (N,H,W,3) uint8 RGB.
    Returns:
        ``mean_rgb`` (3,), ``std_rgb`` (3,) in 0..255 units, and ``grad_energy``:
        mean squared finite-difference gradient of the grey image (0..1 units),
        a measure of texture/high-frequency content.
    """
    x = np.asarray(images, np.float64)
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"images must be (N,H,W,3), got {x.shape}")
    grey = x.mean(-1) / 255.0
    gx = np.diff(grey, axis=2)
    gy = np.diff(grey, axis=1)
    return {
        "mean_rgb": x.mean((0, 1, 2)),
        "std_rgb": x.std((0, 1, 2)),
        "grad_energy": float(0.5 * ((gx ** 2).mean() + (gy ** 2).mean())),
    }


def domain_statistics(preset="A", seed=0, n_frames=10, width=320, height=96, duration_s=20.0) -> dict:
    """:func:`image_statistics` over ``n_frames`` frames spread over a drive, plus depth statistics."""
    drive = Drive(DriveConfig.make(preset, seed, duration_s, width, height))
    ks = np.linspace(0, len(drive) - 1, n_frames).round().astype(int)
    frames = [drive.frame(int(k)) for k in ks]
    st = image_statistics(np.stack([f.image for f in frames]))
    depth = np.stack([f.depth for f in frames])
    st["sky_fraction"] = float(np.isinf(depth).mean())
    st["median_depth"] = float(np.median(depth[np.isfinite(depth)]))
    st["dynamic_fraction"] = float(np.mean([f.dynamic_mask.mean() for f in frames]))
    return st


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mono_depth_ros.tools.synth.stats", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="A,B", help="comma-separated presets")
    ap.add_argument("--seeds", default="0,1", help="comma-separated seeds (statistics are averaged)")
    ap.add_argument("--frames", type=int, default=10, help="frames per seed")
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=96)
    args = ap.parse_args(argv)
    print("| preset | mean RGB | std RGB | gradient energy | sky fraction | median depth (m) | dynamic px |")
    print("|---|---|---|---|---|---|---|")
    for name in args.presets.split(","):
        p = PRESETS[name] if name in PRESETS else None
        if p is None:
            print(f"unknown preset {name!r}", file=sys.stderr)
            return 2
        runs = [domain_statistics(name, int(s), args.frames, args.width, args.height)
                for s in args.seeds.split(",")]

        def avg(key):
            return np.mean([r[key] for r in runs], axis=0)

        m, s = avg("mean_rgb"), avg("std_rgb")
        print(f"| {p.name} ({p.label}) | {m[0]:.1f}, {m[1]:.1f}, {m[2]:.1f} | {s[0]:.1f}, {s[1]:.1f}, {s[2]:.1f} "
              f"| {avg('grad_energy'):.5f} | {avg('sky_fraction'):.3f} | {avg('median_depth'):.1f} "
              f"| {avg('dynamic_fraction'):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
