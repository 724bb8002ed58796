"""``mono-depth evaluate``: depth metrics of a checkpoint on bags with ground truth."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "main"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..inference import BACKENDS
    from ..models import MODEL_CHOICES

    parser.add_argument("--checkpoint", default=None,
                        help="weights to evaluate: a checkpoint, a monodepth2 folder, a Depth Anything V2 .pth or "
                             "transformers folder (default: the shipped default_A.pt)")
    parser.add_argument("--model", choices=MODEL_CHOICES, default="default",
                        help="architecture, where the file cannot tell (Depth Anything V2 relative or metric)")
    parser.add_argument("--no-canonical", dest="canonical", action="store_false",
                        help="do not convert depth from the weights' training camera to the bag's camera "
                             "(canonical camera: depth x f_bag / f_train, principal points aligned)")
    parser.add_argument("--bag", dest="bags", action="append", required=True, metavar="PATH",
                        help="bag with ground-truth depth (repeatable; metrics pooled over all)")
    parser.add_argument("--size", default=None, metavar="WxH",
                        help="network input size; images are resized to it as the node does, and the GT to the "
                             "depth's grid (nearest) (default: the checkpoint's training input_size; 'bag': the "
                             "bag's size)")
    parser.add_argument("--backend", default="auto", choices=BACKENDS,
                        help="inference backend, as the node's inference_backend parameter (same default)")
    parser.add_argument("--stride", type=int, default=1, help="evaluate every N-th frame")
    parser.add_argument("--max-frames", type=int, default=None, help="at most N frames per bag")
    parser.add_argument("--max-depth", type=float, default=80.0, help="GT cap in metres (KITTI: 80)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a markdown table")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--report", type=Path, default=None, metavar="DIR",
                        help="also write DIR/metrics.md, metrics.json, depth_strip.png and fused_cloud.ply "
                             "(predictions fused with the bag's camera poses)")


def build_predictor(args: argparse.Namespace, drives, size: tuple[int, int] | None = None):
    """The :class:`~mono_depth_ros.inference.DepthPredictor` that ``evaluate`` scores, built by
    ``DepthPredictor.from_config`` -- the constructor the node's :func:`~mono_depth_ros.inference.node_predictor`
    calls -- with the same weights, size, backend (``--backend``, default ``auto`` like the node's
    ``inference_backend``) and canonical camera (``--no-canonical`` = the node with ``adapt: true``).

    ``size`` (H, W): from ``--size WxH``; ``--size bag`` = the first bag's size; None = the checkpoint's.
    """
    from ..checkpoint import shipped_checkpoint_path
    from ..inference import DepthPredictor

    if args.size == "bag":
        size = drives[0].size
    path = args.checkpoint or shipped_checkpoint_path()
    predictor, _ = DepthPredictor.from_config(args.model, str(path), size, 0.1, 100.0, "cpu", args.threads,
                                              backend=args.backend, canonical_camera=args.canonical)
    return predictor


def main(args: argparse.Namespace) -> int:
    import torch

    from ..bagio import BagError
    from ..checkpoint import CheckpointError, shipped_checkpoint_path
    from ..conventions import Topics
    from ..metrics import format_markdown
    from .data import load_bag
    from .evaluate import evaluate_regions

    torch.set_num_threads(args.threads)
    size = None
    if args.size and args.size != "bag":
        try:
            w, h = (int(v) for v in args.size.lower().split("x"))
        except ValueError:
            print(f"mono-depth evaluate: --size must be WxH, got {args.size!r}", file=sys.stderr)
            return 2
        size = (h, w)
    path = args.checkpoint or shipped_checkpoint_path()
    try:
        drives = [load_bag(b, need_depth=True) for b in args.bags]
        predictor = build_predictor(args, drives, size)
    except (CheckpointError, BagError, ValueError) as exc:
        print(f"mono-depth evaluate: {exc}", file=sys.stderr)
        return 1
    model, size, canonical = predictor.model, predictor.input_size, predictor.canonical
    info = {"arch": model.arch}
    accs = evaluate_regions(predictor, drives, args.stride, args.max_frames, args.max_depth)
    summary = accs["all"].summary()
    # Moving vs static pixels, where the bags carry the ground-truth mask of moving objects.
    regions = {k: accs[k].summary() for k in ("static", "dynamic") if accs[k].count}
    if args.json:
        print(json.dumps({"checkpoint": str(path), "arch": info["arch"], "bags": args.bags,
                          "input_size": list(size), "output_kind": model.output_kind,
                          "inference_backend": predictor.backend,
                          "canonical_camera": canonical.to_dict() if canonical else None,
                          "metrics": summary, **{f"metrics_{k}": v for k, v in regions.items()}}, indent=2))
    else:
        print(f"checkpoint {path} ({info['arch']}), bags {', '.join(args.bags)}, "
              f"input {size[1]}x{size[0]}, backend {predictor.backend}, GT cap {args.max_depth} m\n")
        if regions:   # three tables follow: say which is which (a tail of the output once misread)
            print("all pixels:\n")
        print(format_markdown(summary))
        for k, v in regions.items():
            print(f"\n{k} pixels (ground-truth mask of moving objects, {Topics.BAG_DYNAMIC_MASK_GT}):\n")
            print(format_markdown(v))
        if regions:
            raw = summary["raw"]
            print(f"\nall pixels: metric AbsRel {raw['abs_rel']:.3f}, scale {raw['scale_ratio']:.3f}; "
                  + ", ".join(f"{k} {v['raw']['abs_rel']:.3f}" for k, v in regions.items()))
    if args.report is not None:
        _write_report(args, predictor, drives, summary, path)
    return 0


def _data_kind(bags) -> str:
    """Title suffix: " (synthetic data)" only when every bag is one of the generator's drives."""
    from ..bagio import is_synthetic
    kinds = {is_synthetic(b) for b in bags}
    return " (synthetic data)" if kinds == {True} else (" (synthetic and recorded data)" if len(kinds) > 1 else "")


def _write_report(args, predictor, drives, summary, ckpt_path) -> None:
    """Tables, depth strip and 3-D outputs of the first bag into ``args.report`` (at network resolution)."""
    from ..metrics import format_markdown
    from ..preprocess import resize_depth
    from .evaluate import predict_frames
    from .report import depth_strip, fused_cloud

    out = args.report
    out.mkdir(parents=True, exist_ok=True)
    d = drives[0]
    idx = np.arange(0, len(d), max(1, args.stride))
    pr = predict_frames(predictor, d.images[idx], d.K)
    preds = np.stack([p.depth for p in pr])
    rgbs = np.stack([p.rgb for p in pr])
    gts = np.stack([resize_depth(d.depths[k].astype(np.float32), preds.shape[1:]) for k in idx])
    written = [out / "metrics.md", out / "metrics.json"]
    (out / "metrics.md").write_text(f"# Evaluation{_data_kind(args.bags)}\n\ncheckpoint `{ckpt_path}`, bags "
                                    f"{', '.join(args.bags)}\n\n{format_markdown(summary)}\n")
    (out / "metrics.json").write_text(json.dumps({"checkpoint": str(ckpt_path), "bags": args.bags,
                                                  "metrics": summary}, indent=2))
    written.append(depth_strip(rgbs, preds, gts, out / "depth_strip.png"))
    if d.T_map_camera is not None:
        written.append(fused_cloud(preds, rgbs, d.T_map_camera[idx], pr[0].K, out / "fused_cloud.ply"))
    print("\nwrote:\n" + "\n".join(f"  {p}" for p in written))
