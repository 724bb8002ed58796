"""``mono-depth generate``: render a synthetic drive into a rosbag2."""
from __future__ import annotations

import argparse
import sys

from mono_depth_ros.tools.synth.bag import DEFAULT_SENSORS, SENSORS, STORAGES
from mono_depth_ros.tools.synth.presets import PRESETS

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the options of ``generate``."""
    names = [k for k, p in PRESETS.items() if k == p.name] + [p.label for k, p in PRESETS.items() if k == p.name]
    parser.add_argument("out", help="bag directory to create (must not exist unless --overwrite)")
    parser.add_argument("--preset", default="A", choices=names,
                        help="domain: " + "; ".join(f"{k}={p.label}: {p.description}"
                                                    for k, p in PRESETS.items() if k == p.name))
    parser.add_argument("--seed", type=int, default=0, help="world/trajectory/noise seed (same seed: identical bag)")
    parser.add_argument("--duration", type=float, default=60.0, help="drive length in seconds")
    parser.add_argument("--width", type=int, default=640, help="image width in pixels")
    parser.add_argument("--height", type=int, default=192, help="image height in pixels")
    parser.add_argument("--rate", type=float, default=10.0, help="camera rate in Hz")
    parser.add_argument("--storage", default="mcap", choices=STORAGES, help="rosbag2 storage plugin")
    parser.add_argument("--sensors", default=",".join(DEFAULT_SENSORS),
                        help="comma-separated subset of: " + ", ".join(SENSORS))
    parser.add_argument("--stereo", action="store_true", help="add the right camera (same as adding right_camera)")
    parser.add_argument("--noise", default=None, metavar="KEY=VALUE[,KEY=VALUE]",
                        help="override sensor noise/rates of the preset, e.g. imu_rate_hz=200,odom_scale_error=0.02,"
                             "imu_orientation=true (fields of SensorNoise; see docs/synthetic_world.md)")
    parser.add_argument("--stand-still", action="store_true", help="the vehicle stands at its start for the whole "
                        "drive (the road and start of the moving drive of the same seed)")
    parser.add_argument("--traffic", default=None, metavar="normal|dense|N",
                        help="moving cars: the preset's (normal), dense (moving cars cover >= 5%% of the pixels) "
                             "or N per km of road")
    parser.add_argument("--car-texture", action="store_true",
                        help="paint the cars with a livery pattern (blotches, stripes) that moves with them, so "
                             "the photometric loss sees their motion inside them and not only at their edges")
    parser.add_argument("--no-camera-noise", action="store_true", help="noise-free images")
    parser.add_argument("--no-contact-sheet", action="store_true", help="skip <out>/contact_sheet.png")
    parser.add_argument("--workers", type=int, default=None,
                        help="render processes (default: 2 on a multi-core machine for drives of 50+ frames, "
                             "else 1); the output is identical for any value")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from mono_depth_ros.tools.synth.bag import generate_bag

    sensors = [s for s in args.sensors.split(",") if s]
    if args.stereo and "right_camera" not in sensors:
        sensors.append("right_camera")
    try:
        out = generate_bag(args.out, preset=args.preset, seed=args.seed, duration_s=args.duration,
                           width=args.width, height=args.height, rate_hz=args.rate, storage=args.storage,
                           sensors=sensors, overwrite=args.overwrite, progress=not args.quiet,
                           contact_sheet=not args.no_contact_sheet, camera_noise=not args.no_camera_noise,
                           workers=args.workers, noise=args.noise, stand_still=args.stand_still,
                           traffic=args.traffic, car_texture=args.car_texture)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"mono-depth generate: error: {err}", file=sys.stderr)
        return 2
    print(out)
    return 0
