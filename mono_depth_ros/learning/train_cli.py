"""``mono-depth train``: train a depth network offline from rosbags, in one process or under torchrun.

One machine, one process::

    mono-depth train --mode self-supervised --bag drive1 --bag drive2 --init their.pt --out run/ck.pt

Several processes or machines (DistributedDataParallel; gloo on CPUs, nccl on GPUs)::

    torchrun --nproc_per_node 2 -m mono_depth_ros train --mode self-supervised --bag drive1 --bag drive2 ...
"""
from __future__ import annotations

import argparse

from ..adapt.intrinsics import INTRINSICS_MODES
from ..models import MODEL_NAMES
from ..settings import BY_NAME as _PARAMS
from .distributed import DEVICES
from .trainer import MODES, POSES, RESUME_LAST, TrainConfig

__all__ = ["add_arguments", "main"]


def _size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, e.g. 640x192, got {text!r}") from None
    if w <= 0 or h <= 0:  # the network's size_multiple is checked once it is built (trainer)
        raise argparse.ArgumentTypeError(f"width and height must be positive, got {text!r}")
    return w, h


EPILOG = """examples:
  self-supervised on your own bags (poses from odometry/TF/IMU/GPS), from your weights:
    mono-depth train --mode self-supervised --bag drive1 --bag drive2 --init their.pt --out runs/a/ck.pt
  with moving objects (the field from step 500) and the camera's intrinsics refined:
    mono-depth train --mode self-supervised --bag drive1 --init their.pt --out runs/b/ck.pt --object-motion
        --object-motion-after-steps 500 --intrinsics refine       (estimate: no camera_info, --camera-hfov-deg)
  continue it where it stopped:
    mono-depth train --mode self-supervised --bag drive1 --bag drive2 --out runs/a/ck.pt --resume
  2 processes with DistributedDataParallel (gloo on CPU, nccl with one GPU per process):
    torchrun --nproc_per_node 2 -m mono_depth_ros train --mode self-supervised --bag drive1 --bag drive2 ...
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    d = TrainConfig(bags=[], out="")
    parser.epilog = EPILOG
    parser.add_argument("--bag", dest="bags", action="append", required=True, metavar="PATH",
                        help="training rosbag2 (repeat for several drives; under torchrun the bags are shared "
                             "out across processes, or the frames when there are fewer bags than processes)")
    parser.add_argument("--val-bag", dest="val_bags", action="append", default=[], metavar="PATH",
                        help="validation bag (repeatable): the validation loss on fixed samples, plus depth "
                             "metrics when it has ground-truth depth")
    parser.add_argument("--out", required=True, help="checkpoint to write (atomically, by rank 0 only; resumable)")
    parser.add_argument("--mode", choices=MODES, default=d.mode,
                        help="supervised: SILog on GT depth; self-supervised: monodepth2 loss with known metric "
                             "poses (see --poses)")
    parser.add_argument("--poses", choices=POSES, default=d.poses,
                        help="self-supervised poses: egomotion (odometry/TF/IMU/GPS through the ego-motion "
                             "provider, like 'mono-depth adapt'; no ground-truth topic needed) or ground-truth "
                             "(the bag's ground-truth pose topic, for synthetic experiments)")
    parser.add_argument("--egomotion", default=d.egomotion,
                        help="ego-motion source priority (comma-separated: odom, odom_twist, tf, imu_gps, imu_speed)")
    parser.add_argument("--min-translation", type=float, default=d.min_translation,
                        help="--poses egomotion: source frames are the nearest that moved at least this far [m]")
    parser.add_argument("--max-rotation", type=float, default=d.max_rotation_deg,
                        help="--poses egomotion: largest rotation between target and source frame [deg]")
    parser.add_argument("--arch", choices=MODEL_NAMES, default=None,
                        help="network (default: the --init / --resume checkpoint's, else 'default')")
    parser.add_argument("--size", type=_size, default=(d.width, d.height), metavar="WxH",
                        help="training resolution (frames are resized, K scaled)")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="frames per step")
    parser.add_argument("--steps", type=int, default=d.steps, help="total optimisation steps (incl. resumed)")
    parser.add_argument("--lr", type=float, default=d.lr, help="peak Adam learning rate (cosine decay)")
    parser.add_argument("--min-lr", type=float, default=d.min_lr, help="final learning rate")
    parser.add_argument("--min-depth", type=float, default=d.min_depth, help="network depth range minimum (m)")
    parser.add_argument("--max-depth", type=float, default=d.max_depth, help="network depth range maximum (m)")
    parser.add_argument("--silog-lambda", type=float, default=d.silog_lambda,
                        help="SILog variance weight (1 = fully scale invariant)")
    parser.add_argument("--smoothness", type=float, default=d.smoothness_weight,
                        help="edge-aware smoothness weight (self-supervised)")
    parser.add_argument("--frame-gap", type=int, default=d.frame_gap,
                        help="source frames are target +/- this many frames (self-supervised, --poses "
                             "ground-truth; ego-motion poses choose source frames by motion)")
    parser.add_argument("--stereo", action="store_true",
                        help="add the right camera as a source with its known baseline (self-supervised)")
    # The adaptation engine's options, spelled as `mono-depth adapt` spells them (help: the node's parameters).
    parser.add_argument("--object-motion", action="store_true",
                        help="learn a 3-D translation field of moving objects on top of the camera's motion (Li et "
                             "al. 2020: a small separate network, group smoothness + L1/2 sparsity; saved in the "
                             "checkpoint; self-supervised, one process; node parameter: adapt_object_motion)")
    for opt, dest, name in (("--object-motion-after-steps", "object_motion_after_steps",
                             "adapt_object_motion_after_steps"),
                            ("--intrinsics", "intrinsics", "adapt_intrinsics"),
                            ("--intrinsics-lr", "intrinsics_lr", "adapt_intrinsics_lr"),
                            ("--intrinsics-focal-warmup", "intrinsics_focal_warmup", "adapt_intrinsics_focal_warmup"),
                            ("--camera-hfov-deg", "camera_hfov_deg", "camera_hfov_deg")):
        spec, default = _PARAMS[name], getattr(d, dest)
        parser.add_argument(opt, dest=dest, type=type(default), default=default,
                            choices=INTRINSICS_MODES if dest == "intrinsics" else None,
                            help=f"{spec.description} (node parameter: {name})"
                            + ("; train: the learned K goes into the checkpoint and report.json, and the "
                               "checkpoint's canonical camera is the learned one" if dest == "intrinsics" else ""))
    parser.add_argument("--val-every", type=int, default=d.val_every, help="validate every N steps (0: end only)")
    parser.add_argument("--val-frames", type=int, default=d.val_frames, help="frames per validation bag")
    parser.add_argument("--save-every", type=int, default=d.save_every, help="checkpoint every N steps")
    parser.add_argument("--max-seconds", type=float, default=None,
                        help="stop after this much training wall time (s; loading excluded) and save")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", metavar="CKPT", nargs="?", const=RESUME_LAST,
                       help="continue a run: weights, optimizer, step counter, random state and history; "
                            "without CKPT, from the checkpoint last written at --out")
    group.add_argument("--init", metavar="CKPT", help="starting weights only, to fine-tune: a mono_depth_ros "
                       "checkpoint, a monodepth2 folder or Depth Anything V2 weights (see docs/backends.md)")
    parser.add_argument("--export", metavar="PATH", help="also write a weights-only checkpoint at the end")
    parser.add_argument("--export-half", action="store_true", help="store exported weights as fp16")
    parser.add_argument("--report", default=None, metavar="DIR",
                        help="folder for report.json and report.md (steps, wall time, samples/s, train loss "
                             "curve, validation losses); default: the folder of --out")
    parser.add_argument("--cache-dir", default=None, help="cache decoded frames as .npz here")
    parser.add_argument("--threads", type=int, default=d.threads, help="torch CPU threads (per process)")
    parser.add_argument("--device", choices=DEVICES, default=d.device,
                        help="auto: CUDA when available (one GPU per torchrun process, nccl), else CPU (gloo)")
    parser.add_argument("--seed", type=int, default=d.seed, help="random seed (rank r samples with its own seed)")
    parser.add_argument("--no-augment", action="store_true", help="disable flips and colour jitter")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def main(args: argparse.Namespace) -> int:
    from .trainer import train

    cfg = TrainConfig(
        bags=list(args.bags), out=args.out, mode=args.mode, arch=args.arch, width=args.size[0],
        height=args.size[1], batch_size=args.batch_size, steps=args.steps, lr=args.lr, min_lr=args.min_lr,
        min_depth=args.min_depth, max_depth=args.max_depth, silog_lambda=args.silog_lambda,
        smoothness_weight=args.smoothness, frame_gap=args.frame_gap, stereo=args.stereo,
        object_motion=args.object_motion, object_motion_after_steps=args.object_motion_after_steps,
        intrinsics=args.intrinsics, intrinsics_lr=args.intrinsics_lr,
        intrinsics_focal_warmup=args.intrinsics_focal_warmup, camera_hfov_deg=args.camera_hfov_deg,
        poses=args.poses,
        egomotion=args.egomotion, min_translation=args.min_translation, max_rotation_deg=args.max_rotation,
        val_bags=list(args.val_bags), val_every=args.val_every, val_frames=args.val_frames,
        save_every=args.save_every, max_seconds=args.max_seconds, init=args.init, resume=args.resume,
        export=args.export, export_half=args.export_half, report=args.report, cache_dir=args.cache_dir,
        threads=args.threads, device=args.device, seed=args.seed, augment=not args.no_augment,
        progress=not args.quiet)
    try:
        cfg.validate()
    except ValueError as exc:
        print(f"mono-depth train: {exc}")
        return 2
    from ..checkpoint import CheckpointError
    try:
        train(cfg)
    except (ValueError, CheckpointError) as exc:   # e.g. a bag without the topics this mode needs, named in the message
        print(f"mono-depth train: error: {exc}")
        return 2
    return 0
