"""``mono-depth egomotion-eval``: relative-pose accuracy of each ego-motion source on a bag.

For camera frames ``--dt`` seconds apart (ground truth: ``Topics.BAG_POSE_GT``,
the optical-frame pose in ``map``), every source's relative camera pose is
compared with the true one::

    T_gt  = inv(T_map_cam(t)) @ T_map_cam(s)        (s = t - dt)
    t_err = |t_est - t_gt| / |t_gt| * 100           (% of distance travelled)
    r_err = angle(inv(R_gt) @ R_est) in degrees

Pairs whose true travel is below ``--min-travel`` are skipped (the % is
meaningless there, and the frame selector never trains on them).
All samples are fed first, in bag order, then queried (offline).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from ..conventions import BASE_FRAME, CAMERA_OPTICAL_FRAME, NS_PER_S, ODOM_FRAME, Topics
from .provider import SOURCES, EgoMotionConfig, EgoMotionProvider
from .samples import (from_imu_msg, from_navsatfix_msg, from_odometry_msg, from_tf_message,
                      pose_from_pose_msg, stamp_to_ns)
from .static_tf import lookup_static
from .timeseries import PoseStatus

__all__ = ["add_arguments", "main", "BagMotion", "load_bag", "feed_provider", "evaluate", "format_table"]

BAG_TOPICS = (Topics.BAG_ODOM, Topics.BAG_TF, Topics.BAG_TF_STATIC, Topics.BAG_IMU, Topics.BAG_GPS,
              Topics.BAG_POSE_GT)


def iter_bag(path, topics):
    """(topic, stamp_ns, msg) for ``topics`` in bag order.

    Uses ``mono_depth_ros.bagio.iter_messages`` when available, else rosbags directly.
    """
    try:
        from ..bagio import iter_messages
    except ImportError:
        iter_messages = None
    if iter_messages is not None:
        yield from iter_messages(path, topics)
        return
    from pathlib import Path

    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    with AnyReader([Path(path)], default_typestore=get_typestore(Stores.ROS2_HUMBLE)) as reader:
        conns = [c for c in reader.connections if c.topic in set(topics)]
        for conn, ts, raw in reader.messages(connections=conns):
            yield conn.topic, ts, reader.deserialize(raw, conn.msgtype)


@dataclass
class BagMotion:
    """Everything ego-motion needs from a bag, as plain samples in bag order."""

    events: list = field(default_factory=list)      # (kind, sample): kind in odometry|tf|imu|gps
    static: list = field(default_factory=list)      # TransformSample from /tf_static
    gt_stamps_ns: list = field(default_factory=list)
    gt_T_map_camera: list = field(default_factory=list)

    def T_base_camera(self, base_frame: str = BASE_FRAME, camera_frame: str = CAMERA_OPTICAL_FRAME) -> np.ndarray:
        return lookup_static(self.static, base_frame, camera_frame)


def load_bag(path) -> BagMotion:
    """Read the motion topics of a synthetic bag (names from ``conventions.Topics``)."""
    out = BagMotion()
    for topic, _, msg in iter_bag(path, BAG_TOPICS):
        if topic == Topics.BAG_ODOM:
            out.events.append(("odometry", from_odometry_msg(msg)))
        elif topic == Topics.BAG_TF:
            out.events.extend(("tf", t) for t in from_tf_message(msg))
        elif topic == Topics.BAG_TF_STATIC:
            out.static.extend(from_tf_message(msg))
        elif topic == Topics.BAG_IMU:
            out.events.append(("imu", from_imu_msg(msg)))
        elif topic == Topics.BAG_GPS:
            out.events.append(("gps", from_navsatfix_msg(msg)))
        elif topic == Topics.BAG_POSE_GT:
            out.gt_stamps_ns.append(stamp_to_ns(msg.header.stamp))
            out.gt_T_map_camera.append(pose_from_pose_msg(msg.pose))
    return out


def feed_provider(provider: EgoMotionProvider, events) -> None:
    """Feed (kind, sample) events in order."""
    add = {"odometry": provider.add_odometry, "tf": provider.add_transform,
           "imu": provider.add_imu, "gps": provider.add_gps}
    for kind, sample in events:
        add[kind](sample)


def _pairs(stamps: np.ndarray, dt_ns: int, tol_ns: int) -> list[tuple[int, int]]:
    """Index pairs (i_source, i_target) with stamp[i_target] - stamp[i_source] ~= dt."""
    out = []
    for i, s in enumerate(stamps):
        j = int(np.searchsorted(stamps, s + dt_ns))
        for k in (j - 1, j):
            if i < k < len(stamps) and abs(stamps[k] - s - dt_ns) <= tol_ns:
                out.append((i, k))
                break
    return out


def evaluate(motion: BagMotion, sources=SOURCES, dt_s: float = 0.1, min_travel_m: float = 0.2,
             config: EgoMotionConfig | None = None, T_base_camera: np.ndarray | None = None) -> dict:
    """Per-source relative-pose errors vs ground truth.

    Returns:
        {"dt_s", "min_travel_m", "pairs", "pairs_moving", "sources": {name: {
        "n", "coverage", "t_err_median_pct", "t_err_p95_pct", "r_err_median_deg",
        "r_err_p95_deg", "t_err_median_m", "used": {reported source: count}}}}
    """
    cfg = config or EgoMotionConfig()
    # Offline: keep everything, feed everything, then query.
    cfg = dataclasses.replace(cfg, buffer_s=1e7)
    provider = EgoMotionProvider(cfg, motion.T_base_camera() if T_base_camera is None else T_base_camera)
    feed_provider(provider, motion.events)
    order = np.argsort(motion.gt_stamps_ns)
    stamps = np.asarray(motion.gt_stamps_ns, dtype=np.int64)[order]
    T_gt = np.asarray(motion.gt_T_map_camera)[order]
    pairs = _pairs(stamps, int(round(dt_s * NS_PER_S)), int(round(0.25 * dt_s * NS_PER_S)))
    moving = []
    for i, k in pairs:
        T_rel = np.linalg.inv(T_gt[k]) @ T_gt[i]
        if np.linalg.norm(T_rel[:3, 3]) >= min_travel_m:
            moving.append((i, k, T_rel))
    report = {"dt_s": dt_s, "min_travel_m": min_travel_m, "pairs": len(pairs), "pairs_moving": len(moving),
              "sources": {}, "counters": None}
    for name in sources:
        t_pct, t_m, r_deg, used = [], [], [], {}
        for i, k, T_rel in moving:
            rp = provider.relative_pose(int(stamps[k]), int(stamps[i]), [name])
            if rp.status is not PoseStatus.OK:
                continue
            used[rp.source] = used.get(rp.source, 0) + 1
            err_t = float(np.linalg.norm(rp.T_target_source[:3, 3] - T_rel[:3, 3]))
            t_m.append(err_t)
            t_pct.append(100.0 * err_t / float(np.linalg.norm(T_rel[:3, 3])))
            R_err = T_rel[:3, :3].T @ rp.T_target_source[:3, :3]
            r_deg.append(math.degrees(Rotation.from_matrix(R_err).magnitude()))

        def stat(v, q):
            return float(np.percentile(v, q)) if v else None
        report["sources"][name] = {
            "n": len(t_pct), "coverage": len(t_pct) / max(len(moving), 1),
            "t_err_median_pct": stat(t_pct, 50), "t_err_p95_pct": stat(t_pct, 95),
            "r_err_median_deg": stat(r_deg, 50), "r_err_p95_deg": stat(r_deg, 95),
            "t_err_median_m": stat(t_m, 50), "used": used}
    report["counters"] = provider.counters
    return report


def format_table(report: dict) -> str:
    """Markdown table of :func:`evaluate`'s report."""
    def f(v, fmt):
        return "n/a" if v is None else format(v, fmt)
    lines = [f"Relative camera pose error, frames {report['dt_s']} s apart "
             f"({report['pairs_moving']} of {report['pairs']} pairs moved >= {report['min_travel_m']} m)",
             "",
             "| source | pairs | coverage | t err median (%) | t err p95 (%) | r err median (deg) "
             "| r err p95 (deg) | used |",
             "|---|---|---|---|---|---|---|---|"]
    for name, s in report["sources"].items():
        used = ", ".join(f"{k}:{v}" for k, v in s["used"].items()) or "-"
        lines.append(f"| {name} | {s['n']} | {s['coverage']:.0%} | {f(s['t_err_median_pct'], '.2f')} "
                     f"| {f(s['t_err_p95_pct'], '.2f')} | {f(s['r_err_median_deg'], '.3f')} "
                     f"| {f(s['r_err_p95_deg'], '.3f')} | {used} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bag", required=True, help="rosbag2 folder with odometry/TF/IMU/GPS and "
                        f"ground-truth camera poses on {Topics.BAG_POSE_GT}")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=SOURCES,
                        help="sources to evaluate (each on its own)")
    parser.add_argument("--dt", type=float, default=0.1, help="seconds between the two camera frames")
    parser.add_argument("--min-travel", type=float, default=0.2,
                        help="skip pairs whose true camera travel is below this (m)")
    parser.add_argument("--base-frame", default=BASE_FRAME, help="base frame (TF child of --odom-frame)")
    parser.add_argument("--odom-frame", default=ODOM_FRAME, help="odometry frame for the tf source")
    parser.add_argument("--camera-frame", default=CAMERA_OPTICAL_FRAME,
                        help="camera optical frame (T_base_camera from /tf_static)")
    parser.add_argument("--imu-rotation", default="auto", choices=("auto", "gyro", "orientation"),
                        help="IMU rotation: integrate the gyro, slerp the IMU orientation, or orientation when given")
    parser.add_argument("--gps-fit", default=EgoMotionConfig.gps_fit, choices=("imu", "poly"),
                        help="GPS track model: IMU-aided path fit or quadratic polynomial")
    parser.add_argument("--gps-window", type=float, default=EgoMotionConfig.gps_window_s,
                        help="GPS window of the poly fit (s)")
    parser.add_argument("--gps-imu-window", type=float, default=EgoMotionConfig.gps_imu_window_s,
                        help="GPS window of the IMU-aided fit (s)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="PATH",
                        help="also write the report as JSON to PATH ('-' or no value: stdout, instead of the table)")


def main(args: argparse.Namespace) -> int:
    try:
        motion = load_bag(args.bag)
    except Exception as e:  # bagio.BagError, rosbags errors: report, don't trace back
        print(f"egomotion-eval: cannot read {args.bag}: {e}", file=sys.stderr)
        return 1
    if not motion.gt_stamps_ns:
        print(f"egomotion-eval: no ground truth on {Topics.BAG_POSE_GT} in {args.bag}", file=sys.stderr)
        return 1
    try:
        T_base_camera = motion.T_base_camera(args.base_frame, args.camera_frame)
    except LookupError as e:
        print(f"egomotion-eval: {e}", file=sys.stderr)
        return 1
    cfg = EgoMotionConfig(odom_frame=args.odom_frame, base_frame=args.base_frame,
                          imu_rotation=args.imu_rotation, gps_fit=args.gps_fit, gps_window_s=args.gps_window,
                          gps_imu_window_s=args.gps_imu_window)
    report = evaluate(motion, args.sources, args.dt, args.min_travel, cfg, T_base_camera)
    report["bag"] = str(args.bag)
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(report, fh, indent=2)
    return 0
