"""``mono-depth adapt``: the node's adaptation engine fed straight from a bag, no middleware.

Messages are read in log-time order and handed to the same
:class:`~mono_depth_ros.adapt.session.AdaptationSession` the node uses; after each
camera frame the engine takes ``--steps-per-frame`` steps, as fast as the CPU
allows. With a ground-truth depth topic in the bag, every ``--eval-every``-th
frame is scored *before* the weights have learned from it (prequential).
Writes the adapted checkpoint, a JSON report and a curves PNG.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "main", "adapt_bag"]

log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options; those shared with the node (``--lr`` = ``adapt_lr``, ...) are derived from the settings
    dataclasses (defaults, ranges, choices, help: :func:`mono_depth_ros.settings.add_cli_arguments`)."""
    from mono_depth_ros.adapt import AdaptConfig
    from mono_depth_ros.conventions import Topics
    from mono_depth_ros.egomotion import EgoMotionConfig, GatingConfig
    from mono_depth_ros.settings import AdaptationSettings, add_cli_arguments
    p.add_argument("bag", type=Path, nargs="+", help="rosbag2 drive(s) with images, camera_info and motion")
    p.add_argument("--out", type=Path, required=True, help="adapted checkpoint to write (.pt)")
    p.add_argument("--checkpoint", default="", help="starting weights (default: the shipped weights)")
    p.add_argument("--train-size", default="", help="training resolution HxW (multiples of 32); default: the "
                                                      "checkpoint's input size, like the node")
    p.add_argument("--crop", default=f"{AdaptConfig.crop_height}x{AdaptConfig.crop_width}",
                   help="fast step: random crop HxW of the training frames (multiples of 32; 0 = whole height / "
                        "width; default: the node's adapt_crop_height x adapt_crop_width)")
    add_cli_arguments(p, AdaptationSettings, AdaptConfig, GatingConfig, EgoMotionConfig)
    p.add_argument("--stereo", action="store_true",
                   help=f"learn from the stereo pair too: {Topics.BAG_RIGHT_IMAGE} + {Topics.BAG_RIGHT_CAMERA_INFO} "
                        "(baseline from its P, or /tf_static) as a source and monodepth's left-right term "
                        "(node parameter: adapt_stereo)")
    p.add_argument("--camera-info-error", default="", metavar="FX,FY,CX,CY",
                   help="test the intrinsics' self-calibration (--intrinsics refine): the session sees the bag's "
                        "camera_info with fx, fy scaled by (1 + FX), (1 + FY) and cx, cy moved by CX, CY times the "
                        "image width (e.g. 0.2,0.2,0.05,0.05); the report compares the learned K with the bag's")
    p.add_argument("--object-motion", action="store_true",
                   help="learn a 3-D translation field of moving objects on top of the camera's motion (Li et al. "
                        "2020; fast step only; node parameter: adapt_object_motion)")
    p.add_argument("--eval-every", type=int, default=5, help="prequential metric every N frames (0 = off)")
    p.add_argument("--report", type=Path, default=None, help="folder for report.json and curves.png "
                                                              "(default: next to --out)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like 96x320 (HxW), got {text!r}") from None
    return h, w


def load_start(checkpoint: str):
    """(model, input_size (H,W), description) from a checkpoint path or the shipped weights."""
    from mono_depth_ros.checkpoint import load_checkpoint, shipped_checkpoint_path
    path = Path(checkpoint) if checkpoint else shipped_checkpoint_path()
    model, meta = load_checkpoint(path)
    return model, tuple(meta.get("input_size", (192, 640))), str(path)


def perturb_K(K: np.ndarray, error: tuple[float, float, float, float], width: int) -> np.ndarray:
    """(3,3) K with fx, fy scaled by (1 + error[0]), (1 + error[1]) and cx, cy moved by error[2], error[3]
    times ``width`` (``--camera-info-error``).

    >>> perturb_K(np.array([[100., 0, 50], [0, 100., 20], [0, 0, 1]]), (0.2, 0.2, 0.05, 0.05), 100)[:2].tolist()
    [[120.0, 0.0, 55.0], [0.0, 120.0, 25.0]]
    """
    K = np.array(K, dtype=np.float64)
    K[0, 0] *= 1.0 + error[0]
    K[1, 1] *= 1.0 + error[1]
    K[0, 2] += error[2] * width
    K[1, 2] += error[3] * width
    return K


def adapt_bag(bags, model, input_size, adapt_cfg, ego_cfg, gating, steps_per_frame: float = 1.0,
              eval_every: int = 5, progress: bool = True, anchors=None, camera_info_error=None):
    """Run one :class:`~.session.AdaptationSession` over ``bags`` (log-time order). Returns (session, curve dict).

    Intrinsics (``adapt_cfg.intrinsics``): ``estimate`` ignores camera_info and starts from the field of view
    ``adapt_cfg.camera_hfov_deg``; ``camera_info_error`` (FX, FY, CX, CY) perturbs the camera_info the session
    sees. The prequential scores are taken with the K served with the weights (the learned one).
    ``curve["K_bag"]`` / ``curve["K_seen"]``: the bag's and the session's last (3,3) K (lists)."""
    from mono_depth_ros.adapt.intrinsics import K_from_hfov
    from tqdm import tqdm

    from mono_depth_ros.bagio import iter_messages
    from mono_depth_ros.msgconv import depth_image_to_metres, image_to_rgb
    from mono_depth_ros.conventions import Topics
    from mono_depth_ros.msgconv import stamp_to_ns
    from mono_depth_ros.inference import DepthPredictor
    from mono_depth_ros.metrics import PrequentialScorer

    from .session import AdaptationSession

    predictor = DepthPredictor(model, input_size)
    session = AdaptationSession(model, adapt_cfg, ego_cfg, gating, steps_per_frame,
                                on_weights=predictor.swap_state, anchors=anchors)
    curve = {"frame": [], "abs_rel": [], "a1": [], "step": [], "loss": [], "loss_frame": []}
    handlers = session.bag_handlers()   # every ego-motion topic and /tf_static (egomotion.samples.MOTION_INPUTS)
    topics = [Topics.BAG_IMAGE, Topics.BAG_CAMERA_INFO, *handlers, Topics.BAG_DEPTH_GT]
    if adapt_cfg.stereo:
        topics += [Topics.BAG_RIGHT_IMAGE, Topics.BAG_RIGHT_CAMERA_INFO]
    bar = tqdm(desc="adapt", unit="frame", disable=not progress)
    scorer = PrequentialScorer(keep=5)
    K = None
    right_info = None    # (K, P) of the right camera
    frame_i = 0

    frame_of: dict[int, int] = {}    # stamp -> frame index of the scored frames

    def scored(stamp: int, m) -> None:
        if m is not None:
            curve["frame"].append(frame_of.pop(stamp))
            curve["abs_rel"].append(m["abs_rel"])
            curve["a1"].append(m["a1"])

    def stepped(rep) -> None:
        if rep.loss is not None and rep.status == "ok":
            curve["step"].append(session.engine.counters.steps)
            curve["loss"].append(rep.loss)
            curve["loss_frame"].append(frame_i)

    for bag in bags:
        for topic, _, msg in iter_messages(bag, topics):
            if topic in handlers:
                handlers[topic](msg)
            elif topic == Topics.BAG_CAMERA_INFO:
                K = np.asarray(msg.k, dtype=np.float64).reshape(3, 3)
            elif topic == Topics.BAG_RIGHT_CAMERA_INFO:
                right_info = (np.asarray(msg.k, dtype=np.float64).reshape(3, 3),
                              np.asarray(msg.p, dtype=np.float64).reshape(3, 4))
            elif topic == Topics.BAG_RIGHT_IMAGE and right_info is not None:
                session.on_right_frame(stamp_to_ns(msg.header.stamp), msg.header.frame_id, image_to_rgb(msg),
                                       *right_info)
            elif topic == Topics.BAG_DEPTH_GT:
                if eval_every:
                    stamp = stamp_to_ns(msg.header.stamp)
                    scored(stamp, scorer.add_ground_truth(stamp, depth_image_to_metres(msg)))
            elif topic == Topics.BAG_IMAGE and (K is not None or adapt_cfg.intrinsics == "estimate"):
                rgb = image_to_rgb(msg)
                stamp = stamp_to_ns(msg.header.stamp)
                H, W = rgb.shape[:2]
                K_seen = (K_from_hfov(W, H, adapt_cfg.camera_hfov_deg) if adapt_cfg.intrinsics == "estimate"
                          else perturb_K(K, camera_info_error, W) if camera_info_error else K)
                curve["K_bag"], curve["K_seen"] = (None if K is None else K.tolist()), K_seen.tolist()
                curve["image_size"] = (W, H)
                if eval_every and frame_i % eval_every == 0:
                    # Scored before any step has seen this frame (prequential).
                    frame_of[stamp] = frame_i
                    K_served = session.engine.served_K(K_seen, W, H)
                    scored(stamp, scorer.add_prediction(stamp, predictor.predict(rgb, K_served).depth))
                    while len(frame_of) > scorer.keep:   # predictions the scorer dropped unmatched
                        frame_of.pop(next(iter(frame_of)))
                session.on_frame(stamp, msg.header.frame_id, rgb, K_seen)
                session.run_due(on_report=stepped)
                frame_i += 1
                bar.update(1)
                if frame_i % 10 == 0:
                    s = session.engine.stats()
                    bar.set_postfix(steps=s["adapt_steps"], loss=f"{s['adapt_loss'] or float('nan'):.4f}",
                                    rollbacks=s["adapt_rollbacks"])
    bar.close()
    return session, curve


def _intrinsics_report(session, curve: dict) -> dict | None:
    """The learned K (served with the weights) at the image size, what the session saw and, when the bag has a
    camera_info, the errors: focal in % of the bag's, principal point in % of the image width."""
    if not session.engine.learns_intrinsics or "K_seen" not in curve:
        return None
    seen = np.array(curve["K_seen"])
    names = {"fx": (0, 0), "fy": (1, 1), "cx": (0, 2), "cy": (1, 2)}
    out = {"seen": {k: float(seen[i, j]) for k, (i, j) in names.items()}}
    W, H = curve["image_size"]
    learned = session.engine.served_K(seen, W, H)
    out["learned"] = {k: float(learned[i, j]) for k, (i, j) in names.items()}
    if curve.get("K_bag") is not None:
        bag = np.array(curve["K_bag"])
        out["bag"] = {k: float(bag[i, j]) for k, (i, j) in names.items()}
        out["error"] = {k: float(100 * ((learned[i, j] / bag[i, j] - 1) if k[0] == "f"
                                        else (learned[i, j] - bag[i, j]) / W)) for k, (i, j) in names.items()}
    return out


def plot_curves(curve: dict, path: Path, title: str) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(11, 3.6))
    if curve["frame"]:
        f, a = np.array(curve["frame"]), np.array(curve["abs_rel"])
        ax[0].plot(f, a, ".", alpha=0.35, label="per frame (prequential)")
        k = max(1, len(a) // 15)
        if len(a) >= k:
            ax[0].plot(f[k - 1:], np.convolve(a, np.ones(k) / k, mode="valid"), "-", lw=2, label=f"mean of {k}")
        ax[0].set_xlabel("frame")
        ax[0].set_ylabel("AbsRel (metric, no median scaling)")
        ax[0].legend()
    ax[0].set_title("depth error before learning from each frame")
    if curve["loss"]:
        ax[1].plot(curve["step"], curve["loss"], lw=0.8)
        ax[1].set_xlabel("adaptation step")
        ax[1].set_ylabel("photometric loss")
    ax[1].set_title("training loss")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(args: argparse.Namespace) -> int:
    from mono_depth_ros.adapt import AdaptConfig, CheckpointStore
    from mono_depth_ros.checkpoint import CheckpointError
    from mono_depth_ros.conventions import Topics
    from mono_depth_ros.egomotion import EgoMotionConfig, GatingConfig
    from mono_depth_ros.settings import AdaptationSettings, from_cli

    logging.basicConfig(level=logging.WARNING, format="[adapt] %(message)s")
    try:
        model, input_size, start = load_start(args.checkpoint)
        h, w = parse_size(args.train_size) if args.train_size else input_size
        ch, cw = parse_size(args.crop) if args.crop not in ("", "0") else (0, 0)
        m = int(model.size_multiple)   # crops rounded down to the network's multiple, like the node
        adapt_cfg = from_cli(AdaptConfig, args, train_height=h, train_width=w, crop_height=ch // m * m,
                             crop_width=cw // m * m, size_multiple=m, stereo=args.stereo,
                             object_motion=args.object_motion)
        run = from_cli(AdaptationSettings, args)        # --steps-per-frame, --anchor
        error = None
        if args.camera_info_error:
            error = tuple(float(v) for v in args.camera_info_error.split(","))
            if len(error) != 4:
                raise ValueError(f"--camera-info-error wants FX,FY,CX,CY, got {args.camera_info_error!r}")
        ego_cfg = from_cli(EgoMotionConfig, args)
        gating = from_cli(GatingConfig, args)
        from .anchors import load_anchor_images, resolve_anchor
        anchor, why = resolve_anchor(run.anchor, args.checkpoint)
        print(f"anchor: {anchor} ({why})")
        anchors = load_anchor_images(anchor)
        for b in args.bag:
            if not Path(b).exists():
                raise FileNotFoundError(f"bag not found: {b}")
            if args.stereo:
                from mono_depth_ros.bagio import bag_topics
                if Topics.BAG_RIGHT_IMAGE not in bag_topics(b):
                    raise ValueError(f"--stereo: {b} has no {Topics.BAG_RIGHT_IMAGE} (record the right camera, "
                                     "or `mono-depth generate --stereo`)")
    except (ValueError, CheckpointError, FileNotFoundError) as exc:
        print(f"mono-depth adapt: error: {exc}")
        return 2
    t0 = time.monotonic()
    session, curve = adapt_bag(args.bag, model, input_size, adapt_cfg, ego_cfg, gating, run.steps_per_frame,
                            args.eval_every, not args.quiet, anchors, error)
    wall = time.monotonic() - t0
    stats = session.stats()
    out = Path(args.out)
    report_dir = args.report or out.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    store = CheckpointStore(out.parent)
    meta = {"adapted_from": start, "bags": [str(b) for b in args.bag], "adapt_config": session.engine.config_dict(),
            "stats": {k: v for k, v in stats.items() if k != "rollback_reasons"}}
    intrinsics = _intrinsics_report(session, curve)
    if intrinsics:
        meta["intrinsics"] = intrinsics
    store.save(session.engine.model, session.engine.good_state(), input_size, stats["adapt_steps"],
               stats["adapt_frames"], meta=meta, name=out.name)
    report = {"checkpoint": str(out), "start": start, "wall_time_s": round(wall, 1),
              "steps_per_s": round(stats["adapt_steps"] / max(wall, 1e-9), 2), "stats": stats, "curve": curve,
              "intrinsics": intrinsics}
    (report_dir / "report.json").write_text(json.dumps(report, indent=1, default=float))
    from mono_depth_ros.bagio import is_synthetic
    kind = " (synthetic)" if all(is_synthetic(b) for b in args.bag) else ""
    png = plot_curves(curve, report_dir / "curves.png",
                      f"adaptation on {', '.join(Path(b).name for b in args.bag)}{kind}")
    first = np.mean(curve["abs_rel"][:10]) if curve["abs_rel"] else float("nan")
    last = np.mean(curve["abs_rel"][-10:]) if curve["abs_rel"] else float("nan")
    print(f"adapted {stats['adapt_frames']} frames with {stats['adapt_steps']} steps in {wall:.0f} s "
          f"({report['steps_per_s']} steps/s), rollbacks {stats['adapt_rollbacks']}, "
          f"ego-motion source {stats['egomotion_source']}")
    print(f"prequential AbsRel: first 10 evaluations {first:.3f} -> last 10 {last:.3f}")
    if intrinsics:
        print("intrinsics: " + ", ".join(f"{k} {v:.2f}" for k, v in intrinsics["learned"].items())
              + ("" if "error" not in intrinsics else "; error vs the bag's camera_info: "
                 + ", ".join(f"{k} {v:+.2f}%" for k, v in intrinsics["error"].items())))
    print(f"wrote {out}\n      {report_dir / 'report.json'}\n      {png}")
    return 0
