"""Render-speed benchmark: ``python -m mono_depth_ros.tools.synth.bench``.

Renders frames of a drive (default 640x192, preset A) and prints frames/s of
rendering alone and, with ``--bag``, of the full generation into an mcap bag
(rendering + serialisation + writing). Prints the machine's load average too:
on a shared machine the figure scales with the CPU share actually available.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

__all__ = ["main"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mono_depth_ros.tools.synth.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="A")
    ap.add_argument("--frames", type=int, default=60, help="frames to render")
    ap.add_argument("--width", type=int, default=640)
    ap.add_argument("--height", type=int, default=192)
    ap.add_argument("--rate", type=float, default=10.0)
    ap.add_argument("--workers", type=int, default=None, help="render processes for --bag (see generate --workers)")
    ap.add_argument("--bag", action="store_true", help="also time a full generate into a temporary mcap bag")
    args = ap.parse_args(argv)

    from mono_depth_ros.tools.synth.drive import Drive, DriveConfig

    load0 = os.getloadavg()
    duration = (args.frames - 1) / args.rate
    cfg = DriveConfig.make(args.preset, 0, duration, args.width, args.height, args.rate)
    t0 = time.perf_counter()
    drive = Drive(cfg)
    t_build = time.perf_counter() - t0
    drive.frame(0)                                   # warm-up (ray cache, BVH)
    t0, c0 = time.perf_counter(), time.process_time()
    for k in range(len(drive)):
        drive.frame(k)
    t_render = time.perf_counter() - t0
    cpu = (time.process_time() - c0) / len(drive)
    fps = len(drive) / t_render
    print(f"preset {cfg.preset.name} ({cfg.preset.label}) {args.width}x{args.height}: world build {t_build:.2f} s, "
          f"render {len(drive)} frames in {t_render:.2f} s = {fps:.1f} frames/s (1 process); "
          f"CPU time {1000 * cpu:.0f} ms/frame (all threads)")
    if args.bag:
        from mono_depth_ros.tools.synth.bag import generate_bag

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            generate_bag(Path(tmp) / "bench", preset=args.preset, duration_s=duration, width=args.width,
                         height=args.height, rate_hz=args.rate, progress=False, contact_sheet=False,
                         workers=args.workers)
            t_bag = time.perf_counter() - t0
        print(f"generate bag (all default sensors, mcap, workers={args.workers or 'auto'}): {len(drive)} frames in "
              f"{t_bag:.2f} s = {len(drive) / t_bag:.1f} frames/s (including world build and sensors)")
    load1 = os.getloadavg()
    print(f"cpu count {os.cpu_count()}, load average before {load0[0]:.2f}, after {load1[0]:.2f} "
          f"(1-min; other processes share these cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
