"""``mono-depth demo``: the README's main job, end to end over real DDS.

1. generates the synthetic drives if they are not there yet (exact GT): a domain-B
   drive to adapt on, and held-out domain-A and domain-B drives to score on;
2. scores the starting weights on the held-out drives (before);
3. starts ``depth_node`` in its own process (sim time, adaptation on, cloud in ``odom``) and
   the ground-truth scorer ``depth_scorer`` (:mod:`.score_node`: ``depth`` against ``depth_gt``)
   in another, and replays the domain-B drive into them in real time, with ``/clock``;
4. stops the node (it writes its adapted checkpoint on shutdown) and scores that
   checkpoint on the same held-out drives (after);
5. writes what a person looks at: the before/after table (markdown + JSON), a depth
   strip PNG (image / before / after / GT on held-out B), adaptation curves PNG
   (prequential AbsRel per frame, scored before learning from it), the drive's fused
   point cloud (PLY, odom frame) and the node's log.

Every figure is on synthetic data.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

__all__ = ["add_arguments", "main"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", type=Path, default=Path("data"), help="where drives are generated / reused")
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (images, PLY, tables, logs)")
    p.add_argument("--duration", type=float, default=120.0, help="length of the domain-B drive adapted on [s]")
    p.add_argument("--heldout", type=float, default=20.0, help="length of each held-out drive [s]")
    p.add_argument("--width", type=int, default=640, help="image width of the generated drives")
    p.add_argument("--height", type=int, default=192, help="image height of the generated drives")
    p.add_argument("--checkpoint", default="", help="starting weights (empty: shipped weights)")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor (1 = real time)")
    from mono_depth_ros.settings import BY_NAME
    p.add_argument("--lr", type=float, default=BY_NAME["adapt_lr"].default,
                   help="adaptation learning rate (the node's adapt_lr)")
    p.add_argument("--no-adapt", action="store_true", help="run the node without adaptation")
    p.add_argument("--reference-step", action="store_true",
                   help="adapt with the reference training step (release 0.2: whole frames, every scale upsampled) "
                        "instead of the fast one, to compare how many steps the node takes")
    p.add_argument("--adapt-thread", action="store_true",
                   help="train on a thread of the node (adapt_process: false, as release 0.2's node did) instead of "
                        "in the node's training process")
    p.add_argument("--repeat", type=int, default=1,
                   help="run the node N times on the same drive (fresh weights each time) and report mean ± std")
    p.add_argument("--quick", action="store_true", help="CI smoke test: 6 s drive and 3 s held-out drives at 320x96")


def _drive(args, preset: str, seed: int, duration: float) -> Path:
    from mono_depth_ros.tools.synth import generate_bag
    name = f"drive_{preset}_seed{seed}_{duration:g}s_{args.width}x{args.height}"
    bag = args.data_dir / name
    if (bag / "metadata.yaml").exists():
        print(f"[demo]   reusing {bag}")
        return bag
    print(f"[demo]   generating {bag} (synthetic domain {preset}, {duration:g} s)")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    generate_bag(bag, preset=preset, seed=seed, duration_s=duration, width=args.width, height=args.height,
                 progress=True)
    return bag


def _score(model, input_size, bag):
    """(summary dict, frames) of ``model`` on a held-out drive (metric: no median scaling)."""
    from mono_depth_ros.learning.data import load_bag
    from mono_depth_ros.inference import DepthPredictor
    from mono_depth_ros.learning.evaluate import evaluate_frames
    frames = load_bag(bag, need_depth=True)
    return evaluate_frames(DepthPredictor(model, input_size), [frames]).summary(), frames


def _start_node(args, out: Path) -> tuple[subprocess.Popen, Path]:
    log = out / "node.log"
    cmd = [sys.executable, "-u", "-m", "mono_depth_ros.ros.depth_node", "--ros-args",
           "-p", "use_sim_time:=true", "-p", "target_frame:=odom", "-p", "point_stride:=4",
           "-p", f"checkpoint_dir:={out / 'checkpoints'}", "-p", "resume:=false",
           "-p", f"adapt:={'false' if args.no_adapt else 'true'}", "-p", f"adapt_lr:={args.lr}",
           "-p", "checkpoint_period:=30.0", "-p", f"adapt_step:={'reference' if args.reference_step else 'fast'}",
           "-p", f"adapt_process:={'false' if args.adapt_thread else 'true'}",
           "-r", "image:=/camera/image_raw", "-r", "camera_info:=/camera/camera_info"]
    if args.checkpoint:
        cmd += ["-p", f"checkpoint:={args.checkpoint}"]
    env = dict(os.environ, RCUTILS_LOGGING_BUFFERED_STREAM="0", RCUTILS_COLORIZED_OUTPUT="0")
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    return proc, log


def _start_scorer(out: Path) -> tuple[subprocess.Popen, Path]:
    """The ground-truth scorer: /depth against the drive's /camera/depth_gt -> /depth/metrics."""
    log = out / "scorer.log"
    cmd = [sys.executable, "-u", "-m", "mono_depth_ros.tools.score_node", "--ros-args",
           "-p", "use_sim_time:=true", "-r", "depth_gt:=/camera/depth_gt"]
    env = dict(os.environ, RCUTILS_LOGGING_BUFFERED_STREAM="0", RCUTILS_COLORIZED_OUTPUT="0")
    return subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env), log


def _wait_log(log: Path, text: str, proc, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if text in log.read_text():
            return True
        time.sleep(0.2)
    return False


def _run_node(args, out: Path, bag: Path) -> dict:
    """Node + replay over DDS. Returns what was heard: clouds, prequential metrics, diagnostics."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import PointCloud2

    from mono_depth_ros.ros.conversions import cloud_to_xyz
    from mono_depth_ros.ros.replay import replay
    from mono_depth_ros.tools.process import stop_process

    proc, log = _start_node(args, out)
    scorer, scorer_log = _start_scorer(out)
    rclpy.init()
    listener = rclpy.create_node("mono_depth_demo_listener")
    player = rclpy.create_node("mono_depth_demo_player")
    heard = {"clouds": [], "metrics": [], "diag": [], "log": log, "scorer_log": scorer_log}

    def on_cloud(m):
        if len(heard["clouds"]) % 2 == 0 or len(heard["clouds"]) < 600:
            xyz = cloud_to_xyz(m)
            heard["clouds"].append(xyz[np.isfinite(xyz).all(1)])

    def on_metrics(m):
        vals = {kv.key: float(kv.value) for kv in m.status[0].values}
        heard["metrics"].append(vals)

    def on_diag(m):
        vals = {kv.key: kv.value for kv in m.status[0].values}
        if "adapt_steps" in vals:
            heard["diag"].append((time.monotonic(), vals))

    listener.create_subscription(PointCloud2, "/points", on_cloud, 50)
    listener.create_subscription(DiagnosticArray, "/depth/metrics", on_metrics, 50)
    listener.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 10)
    ex = SingleThreadedExecutor()
    ex.add_node(listener)
    threading.Thread(target=ex.spin, daemon=True).start()
    try:
        if not _wait_log(log, "depth node ready", proc, 120):
            print(log.read_text()[-3000:])
            raise RuntimeError("the depth node did not start (its log is above)")
        if not _wait_log(scorer_log, "depth scorer ready", scorer, 60):
            print(scorer_log.read_text()[-3000:])
            raise RuntimeError("the depth scorer did not start (its log is above)")
        print(f"[demo]   replaying {bag.name} into the node (real DDS, /clock, rate {args.rate:g})")
        replay(player, bag, rate=args.rate, wait_subscribers=30.0, progress=True)
        time.sleep(2.5)
    finally:
        stop_process(proc, timeout=60)  # SIGINT: the node saves its adapted checkpoint on shutdown
        stop_process(scorer, timeout=15)   # after the node: its last depth images are scored
        ex.shutdown()
        listener.destroy_node()
        player.destroy_node()
        rclpy.try_shutdown()
    return heard


def main(args: argparse.Namespace) -> int:
    from mono_depth_ros.ros.domain import exit_if_invalid_domain_id
    exit_if_invalid_domain_id("mono-depth demo")
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.repeat < 1:
        print(f"mono-depth demo: error: --repeat must be >= 1, got {args.repeat}")
        return 2
    if args.quick:
        args.duration, args.heldout, args.width, args.height = 6.0, 3.0, 320, 96
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_begin = time.monotonic()
    print("[demo] 1/5 synthetic drives")
    adapt_bag = _drive(args, "B", 201, args.duration)
    held = {"A": _drive(args, "A", 900, args.heldout), "B": _drive(args, "B", 901, args.heldout)}

    from mono_depth_ros.adapt.offline import load_start
    from mono_depth_ros.checkpoint import load_checkpoint
    model0, input_size, start_desc = load_start(args.checkpoint)
    print(f"[demo] 2/5 scoring the starting weights ({start_desc}) on the held-out drives")
    before = {d: _score(model0, input_size, bag) for d, bag in held.items()}

    results = []
    for run in range(args.repeat):
        run_out = out if args.repeat == 1 else out / f"run{run + 1}"
        run_out.mkdir(parents=True, exist_ok=True)
        tag = "" if args.repeat == 1 else f" (run {run + 1}/{args.repeat})"
        print(f"[demo] 3/5 depth node + real-time replay of the domain-B drive{tag}"
              + ("" if not args.no_adapt else " (adaptation off)")
              + (", reference step" if args.reference_step else "")
              + (", training on a thread of the node" if args.adapt_thread else ""))
        heard = _run_node(args, run_out, adapt_bag)
        ckpt = run_out / "checkpoints" / "adapted.pt"
        print(f"[demo] 4/5 scoring the adapted checkpoint on the same held-out drives{tag}")
        if ckpt.exists() and not args.no_adapt:
            model1, meta1 = load_checkpoint(ckpt)
            after = {d: _score(model1, input_size, bag) for d, bag in held.items()}
        else:
            print("[demo]   no adapted checkpoint was written (adaptation off or nothing learned)")
            model1, meta1, after = model0, {}, before
        print(f"[demo] 5/5 pictures, point cloud, tables{tag}")
        results.append(_report(args, run_out, adapt_bag, held, before, after, model0, model1, input_size, heard,
                               meta1, t_begin))
    if args.repeat > 1:
        _summary(args, out, results)
    return 0


def _summary(args, out: Path, results: list[dict]) -> dict:
    """Mean ± std over the repeated runs (the issue-17 acceptance figures), printed and written."""
    def col(fn):
        v = np.array([fn(r) for r in results], dtype=float)
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "runs": v.tolist()}

    s = {"runs": len(results), "step": "reference" if args.reference_step else "fast",
         "training": "thread" if args.adapt_thread else "process",
         "B_abs_rel": col(lambda r: r["after"]["B"]["raw"]["abs_rel"]),
         "B_scale": col(lambda r: r["after"]["B"]["raw"]["scale_ratio"]),
         "A_abs_rel": col(lambda r: r["after"]["A"]["raw"]["abs_rel"]),
         "A_change": col(lambda r: r["relative_change_abs_rel"]["A"]),
         "B_change": col(lambda r: r["relative_change_abs_rel"]["B"]),
         "adapt_steps": col(lambda r: float(r["node"].get("adapt_steps", 0))),
         "adapt_steps_per_s": col(lambda r: r["adapt_steps_per_s_overall"]),
         "learned_share": col(lambda r: float(r["node"].get("adapt_learned_share", 0.0))),
         "frames_dropped": col(lambda r: float(r["node"].get("frames_dropped", 0))),
         "start": {d: results[0]["before"][d]["raw"]["abs_rel"] for d in ("A", "B")}}
    (out / "summary.json").write_text(json.dumps(s, indent=2))

    rows = ((f"held-out B AbsRel (start {s['start']['B']:.3f})", "B_abs_rel", "{:.3f}"),
            ("held-out B scale median(gt/pred)", "B_scale", "{:.3f}"),
            (f"held-out A AbsRel (start {s['start']['A']:.3f})", "A_abs_rel", "{:.3f}"),
            ("held-out A change", "A_change", "{:+.1%}"),
            ("adaptation steps", "adapt_steps", "{:.0f}"),
            ("steps/s over the drive", "adapt_steps_per_s", "{:.2f}"),
            ("share of moving frames learned from", "learned_share", "{:.0%}"),
            ("frames dropped", "frames_dropped", "{:.0f}"))
    lines = [f"## {s['runs']} runs, {s['step']} step (SYNTHETIC drives, metric depth: no median scaling)", "",
             "| | mean ± std over runs | runs |", "|---|---|---|"]
    for label, key, fmt in rows:
        lines.append(f"| {label} | {fmt.format(s[key]['mean'])} ± {fmt.format(s[key]['std'])} | "
                     + ", ".join(fmt.format(v) for v in s[key]["runs"]) + " |")
    text = "\n".join(lines)
    (out / "summary.md").write_text("# mono_depth_ros demo, repeated (SYNTHETIC data)\n\n" + text + "\n")
    print("\n" + text)
    print(f"\nwrote {out / 'summary.md'} and {out / 'summary.json'}")
    return s


def _table(before, after) -> str:
    rows = ["| held-out drive (synthetic) | weights | AbsRel | SqRel | RMSE | δ<1.25 | scale median(gt/pred) |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for d in ("A", "B"):
        for name, res in (("start", before), ("adapted", after)):
            m = res[d][0]["raw"]
            rows.append(f"| domain {d} | {name} | {m['abs_rel']:.3f} | {m['sq_rel']:.3f} | {m['rmse']:.2f} | "
                        f"{m['a1']:.3f} | {m['scale_ratio']:.3f} |")
    return "\n".join(rows)


def _report(args, out, adapt_bag, held, before, after, model0, model1, input_size, heard, meta1, t_begin) -> int:
    import cv2

    from mono_depth_ros.inference import DepthPredictor
    from mono_depth_ros.learning.evaluate import predict_frames
    from mono_depth_ros.preprocess import resize_depth
    from mono_depth_ros.pointcloud import colorize_depth, voxel_downsample

    table = _table(before, after)
    rel = {d: (after[d][0]["raw"]["abs_rel"] - before[d][0]["raw"]["abs_rel"]) / before[d][0]["raw"]["abs_rel"]
           for d in ("A", "B")}
    diag = heard["diag"][-1][1] if heard["diag"] else {}
    # Depth strip on held-out B: image | start | adapted | ground truth.
    frames = before["B"][1]
    idx = np.linspace(0, len(frames) - 1, 4).astype(int)
    imgs = frames.images[idx]
    p0 = predict_frames(DepthPredictor(model0, input_size), imgs, frames.K)
    p1 = predict_frames(DepthPredictor(model1, input_size), imgs, frames.K)
    rows = [np.concatenate([p0[i].rgb, colorize_depth(p0[i].depth), colorize_depth(p1[i].depth),
                            colorize_depth(resize_depth(frames.depths[idx[i]], p0[i].depth.shape))], axis=1)
            for i in range(len(idx))]
    strip_path = out / "depth_strip.png"
    cv2.imwrite(str(strip_path), cv2.cvtColor(np.concatenate(rows, 0), cv2.COLOR_RGB2BGR))
    # Curves: prequential AbsRel during the drive, adaptation steps.
    curves_path = out / "curves.png"
    _plot(heard, curves_path, before, after)
    ply_path = out / "fused_cloud.ply"
    if heard["clouds"]:
        import open3d as o3d
        pts, _ = voxel_downsample(np.concatenate(heard["clouds"], 0), None, 0.15)
        o3d.io.write_point_cloud(str(ply_path), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(float))))
    preq = [m["abs_rel"] for m in heard["metrics"]]
    result = {
        "adapt_drive": str(adapt_bag), "heldout": {d: str(b) for d, b in held.items()},
        "before": {d: v[0] for d, v in before.items()}, "after": {d: v[0] for d, v in after.items()},
        "relative_change_abs_rel": rel, "node": diag, "prequential_frames": len(preq),
        "prequential_abs_rel_first_20": float(np.mean(preq[:20])) if preq else None,
        "prequential_abs_rel_last_20": float(np.mean(preq[-20:])) if preq else None,
        "adapt_steps_per_s_overall": float(diag.get("adapt_steps", 0) or 0) / max(args.duration / args.rate, 1e-9),
        "adapted_checkpoint_meta": {k: v for k, v in meta1.items() if k in ("training", "meta", "created")},
        "wall_time_s": round(time.monotonic() - t_begin, 1),
    }
    (out / "metrics.json").write_text(json.dumps(result, indent=2, default=str))
    md = (f"# mono_depth_ros demo (SYNTHETIC data)\n\nAdapted online on `{adapt_bag.name}` (domain B, "
          f"{args.duration:g} s, replayed in real time into the node over DDS).\n\n{table}\n\n"
          f"AbsRel change: domain B {rel['B']:+.1%}, domain A {rel['A']:+.1%} (metric depth, no median scaling).\n")
    (out / "metrics.md").write_text(md)
    print("\n## Before / after online adaptation (SYNTHETIC drives, metric depth: no median scaling)\n")
    print(table)
    print(f"\nAbsRel change: held-out B {rel['B']:+.1%}, held-out A {rel['A']:+.1%}")
    if diag:
        print(f"node: {diag.get('frames_processed')} frames processed, {diag.get('frames_dropped')} dropped, "
              f"inference {diag.get('inference_ms_mean')} ms at {diag.get('inference_rate_hz')} Hz; "
              f"adaptation {diag.get('adapt_steps')} steps ({result['adapt_steps_per_s_overall']:.2f} steps/s over "
              f"the drive, {float(diag.get('adapt_learned_share', 0)):.0%} of the moving frames learned from), "
              f"rollbacks {diag.get('adapt_rollbacks')}, ego-motion source {diag.get('egomotion_source')}")
    if preq:
        print(f"prequential AbsRel on the drive (before learning each frame): first 20 frames "
              f"{result['prequential_abs_rel_first_20']:.3f} -> last 20 {result['prequential_abs_rel_last_20']:.3f}")
    print("\nwrote:")
    for p in (out / "metrics.md", out / "metrics.json", strip_path, curves_path, ply_path, heard["log"],
              heard["scorer_log"],
              out / "checkpoints" / "adapted.pt"):
        if Path(p).exists():
            print(f"  {p}")
    print(f"[demo] done in {result['wall_time_s']} s")
    return result


def _plot(heard, path: Path, before, after) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(12, 3.8))
    a = np.array([m["abs_rel"] for m in heard["metrics"]])
    if len(a):
        ax[0].plot(a, ".", alpha=0.3, label="per frame")
        k = max(1, min(20, len(a) // 5))
        ax[0].plot(np.arange(k - 1, len(a)), np.convolve(a, np.ones(k) / k, "valid"), lw=2, label=f"mean of {k}")
    ax[0].axhline(before["B"][0]["raw"]["abs_rel"], color="gray", ls="--", label="held-out B, start")
    ax[0].axhline(after["B"][0]["raw"]["abs_rel"], color="green", ls="--", label="held-out B, adapted")
    ax[0].set_xlabel("frame of the drive")
    ax[0].set_ylabel("AbsRel (metric)")
    ax[0].set_title("depth error, scored before learning from each frame")
    ax[0].legend(fontsize=8)
    if heard["diag"]:
        t0 = heard["diag"][0][0]
        t = [d[0] - t0 for d in heard["diag"]]
        ax[1].plot(t, [int(d[1]["adapt_steps"]) for d in heard["diag"]], label="adaptation steps")
        ax[1].set_xlabel("wall time [s]")
        ax[1].set_ylabel("steps")
        ax2 = ax[1].twinx()
        loss = [float(d[1]["adapt_loss_avg"]) if d[1].get("adapt_loss_avg") not in (None, "None") else np.nan
                for d in heard["diag"]]
        ax2.plot(t, loss, color="C1", label="loss (running mean)")
        ax2.set_ylabel("photometric loss")
    ax[1].set_title("online adaptation")
    fig.suptitle("mono_depth_ros online adaptation (synthetic domain B)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
