"""``mono-depth demo``: the README's main job, end to end over real DDS.

1. generates a synthetic domain-B drive if it is not there yet (exact GT);
2. starts ``depth_node`` in its own process (sim time, cloud in ``odom``);
3. replays the drive into it (recorded timing, /clock) and listens to its outputs;
4. writes what a person looks at: a depth strip PNG (image / prediction / GT /
   error), the drive's fused point cloud (PLY, odom frame), a metrics table
   (markdown + JSON, metric depth: no median scaling) and the node's log.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
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
    p.add_argument("--preset", default="B", help="domain of the replayed drive")
    p.add_argument("--seed", type=int, default=101, help="seed of the replayed drive")
    p.add_argument("--duration", type=float, default=20.0, help="drive length [s]")
    p.add_argument("--width", type=int, default=640, help="image width of the generated drive")
    p.add_argument("--height", type=int, default=192, help="image height of the generated drive")
    p.add_argument("--checkpoint", default="", help="weights for the node (empty: shipped weights)")
    p.add_argument("--rate", type=float, default=1.0, help="replay speed factor")
    p.add_argument("--quick", action="store_true", help="CI smoke test: 4 s drive at 320x96")


def _ensure_drive(args) -> Path:
    from mono_depth_ros.synth import generate_bag
    name = f"drive_{args.preset}_seed{args.seed}_{args.duration:g}s_{args.width}x{args.height}"
    bag = args.data_dir / name
    if (bag / "metadata.yaml").exists():
        print(f"[demo] reusing drive {bag}")
        return bag
    print(f"[demo] generating synthetic drive {bag} (domain {args.preset}, {args.duration:g} s)")
    args.data_dir.mkdir(parents=True, exist_ok=True)
    generate_bag(bag, preset=args.preset, seed=args.seed, duration_s=args.duration, width=args.width,
                 height=args.height, progress=True)
    return bag


def _start_node(args, out: Path, net_size: tuple[int, int]) -> tuple[subprocess.Popen, Path]:
    log = out / "node.log"
    cmd = [sys.executable, "-u", "-m", "mono_depth_ros.ros.depth_node", "--ros-args",
           "-p", "use_sim_time:=true", "-p", "target_frame:=odom", "-p", "point_stride:=4",
           "-p", f"input_width:={net_size[1]}", "-p", f"input_height:={net_size[0]}",
           "-p", f"checkpoint_dir:={out / 'checkpoints'}", "-p", "resume:=false",
           "-r", "image:=/camera/image_raw", "-r", "camera_info:=/camera/camera_info"]
    if args.checkpoint:
        cmd += ["-p", f"checkpoint:={args.checkpoint}"]
    env = dict(os.environ, RCUTILS_LOGGING_BUFFERED_STREAM="0", RCUTILS_COLORIZED_OUTPUT="0")
    proc = subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    return proc, log


def _wait_log(log: Path, text: str, proc, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and proc.poll() is None:
        if text in log.read_text():
            return True
        time.sleep(0.2)
    return False


def main(args: argparse.Namespace) -> int:
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    if args.quick:
        args.duration, args.width, args.height = 4.0, 320, 96
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    t_begin = time.monotonic()
    bag = _ensure_drive(args)
    net_size = (args.height // 32 * 32, args.width // 32 * 32)

    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import Image, PointCloud2

    from mono_depth_ros.bagio import depth_to_numpy, image_to_numpy, iter_messages
    from mono_depth_ros.conventions import Topics
    from mono_depth_ros.ros.conversions import cloud_to_xyz, stamp_to_ns
    from mono_depth_ros.ros.replay import replay

    proc, log = _start_node(args, out, net_size)
    rclpy.init()
    listener = rclpy.create_node("mono_depth_demo_listener")
    player = rclpy.create_node("mono_depth_demo_player")
    depths: dict[int, np.ndarray] = {}
    clouds: list[np.ndarray] = []
    diags: list = []

    def on_depth(m):
        depths[stamp_to_ns(m.header.stamp)] = np.frombuffer(bytes(m.data), np.float32).reshape(m.height, m.width)

    def on_cloud(m):
        if len(clouds) < 400:
            xyz = cloud_to_xyz(m)
            clouds.append(xyz[np.isfinite(xyz).all(1)])

    listener.create_subscription(Image, "/depth", on_depth, 50)
    listener.create_subscription(PointCloud2, "/points", on_cloud, 50)
    listener.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diags.append(m), 10)
    ex = SingleThreadedExecutor()
    ex.add_node(listener)
    spin = threading.Thread(target=ex.spin, daemon=True)
    spin.start()
    try:
        print("[demo] starting depth_node (its log: %s)" % log)
        if not _wait_log(log, "depth node ready", proc, 120):
            print(log.read_text())
            print("[demo] error: the depth node did not start")
            return 1
        print(f"[demo] replaying {bag} into the node over DDS")
        replay(player, bag, rate=args.rate, wait_subscribers=20.0, progress=True)
        time.sleep(2.0)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        ex.shutdown()
        listener.destroy_node()
        player.destroy_node()
        rclpy.try_shutdown()

    if not depths:
        print(log.read_text()[-3000:])
        print("[demo] error: the node published no depth")
        return 1
    return _report(args, out, bag, depths, clouds, diags, log, t_begin,
                   iter_messages, image_to_numpy, depth_to_numpy, Topics)


def _report(args, out, bag, depths, clouds, diags, log, t_begin, iter_messages, image_to_numpy, depth_to_numpy,
            Topics) -> int:
    import cv2

    from mono_depth_ros.metrics import MetricAccumulator, format_markdown
    from mono_depth_ros.pointcloud import colorize_depth, voxel_downsample

    acc = MetricAccumulator()
    stamps = sorted(depths)
    show = set(stamps[:: max(1, len(stamps) // 4)][:4])
    rows = []
    images = {}
    for topic, t, msg in iter_messages(bag, [Topics.BAG_IMAGE, Topics.BAG_DEPTH_GT]):
        if t not in depths and (topic != Topics.BAG_IMAGE or t not in show):
            continue
        if topic == Topics.BAG_IMAGE:
            images[t] = image_to_numpy(msg)
            continue
        gt = depth_to_numpy(msg)
        pred = depths[t]
        if gt.shape != pred.shape:
            gt = cv2.resize(gt, (pred.shape[1], pred.shape[0]), interpolation=cv2.INTER_NEAREST)
        acc.add(gt, pred)
        if t in show:
            rows.append((t, gt, pred))
    summary = acc.summary()
    table = format_markdown(summary)

    # Depth strip: image | prediction | ground truth | |error|/gt.
    strip = []
    for t, gt, pred in sorted(rows, key=lambda r: r[0]):
        img = images.get(t)
        if img is None:
            continue
        h, w = pred.shape
        img = cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)
        ok = np.isfinite(gt) & (gt < 80)
        err = np.zeros_like(pred)
        err[ok] = np.abs(pred[ok] - gt[ok]) / np.maximum(gt[ok], 1e-3)
        err_rgb = cv2.applyColorMap(np.clip(err / 0.5 * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[..., ::-1]
        strip.append(np.concatenate([img, colorize_depth(pred, 0.5, 80.0), colorize_depth(gt, 0.5, 80.0),
                                     err_rgb], axis=1))
    strip_path = out / "depth_strip.png"
    if strip:
        sheet = np.concatenate(strip, axis=0)
        cv2.imwrite(str(strip_path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    # Fused cloud of the drive in odom.
    ply_path = out / "fused_cloud.ply"
    if clouds:
        import open3d as o3d
        pts = np.concatenate(clouds, 0)
        pts, _ = voxel_downsample(pts, None, 0.2)
        o3d.io.write_point_cloud(str(ply_path), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.astype(float))))
    node_stats = {}
    if diags:
        node_stats = {kv.key: kv.value for kv in diags[-1].status[0].values}
    result = {"bag": str(bag), "frames_evaluated": acc.count, "metrics": summary, "node": node_stats,
              "wall_time_s": round(time.monotonic() - t_begin, 1)}
    (out / "metrics.json").write_text(json.dumps(result, indent=2))
    (out / "metrics.md").write_text(f"# mono_depth_ros demo (synthetic data)\n\nbag: `{bag}`\n\n{table}\n")
    print("\n## Depth of the node on the replayed drive (SYNTHETIC domain %s, metric: no median scaling)\n"
          % args.preset)
    print(table)
    if node_stats:
        print(f"\nnode: {node_stats.get('frames_processed')} frames processed, "
              f"{node_stats.get('frames_dropped')} dropped, inference {node_stats.get('inference_ms_mean')} ms, "
              f"weights {node_stats.get('weights')}")
    print("\nwrote:")
    for p in (strip_path, ply_path, out / "metrics.md", out / "metrics.json", log):
        if p.exists():
            print(f"  {p}")
    print(f"[demo] done in {result['wall_time_s']} s")
    return 0
