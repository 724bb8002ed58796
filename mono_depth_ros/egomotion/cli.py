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

Real bags have no ground-truth topic. The reference is then, in this order:

* ``--trajectory FILE --trajectory-format tum|kitti``: poses from another system
  (motion capture, a SLAM/VIO run, the KITTI odometry GT). TUM lines are
  ``t x y z qx qy qz qw`` (t in seconds); KITTI lines are a 3x4 row-major matrix
  without time, stamped by ``--trajectory-times`` (one time in seconds per line) or
  else by the bag's images on ``--image-topic``, in order. ``--trajectory-frame``
  says whether the poses are the camera optical frame's (TUM RGB-D, KITTI) or the
  base frame's (composed with ``T_base_camera`` from ``/tf_static``);
* otherwise one of the bag's own sources (``--reference``, default: the first of
  odom, tf, imu_speed, imu_gps that answers): the others are compared with it, on
  stamps ``--dt`` / 2 apart (sources against each other, not against the truth).
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

from ..tf_buffer import TfBuffer, TfError
from ..conventions import BASE_FRAME, CAMERA_OPTICAL_FRAME, NS_PER_S, ODOM_FRAME, Topics
from .provider import SOURCE_INPUTS, SOURCES, EgoMotionConfig, EgoMotionProvider
from ..msgconv import pose_to_matrix, stamp_to_ns
from .samples import MOTION_INPUTS, from_tf_message
from .timeseries import PoseStatus

__all__ = ["add_arguments", "main", "BagMotion", "load_bag", "feed_provider", "evaluate", "sources_with_inputs", "format_table",
           "load_trajectory", "TRAJECTORY_FORMATS"]

TRAJECTORY_FORMATS = ("tum", "kitti")
#: Reference source when a bag has neither ground truth nor a trajectory file (first that answers).
REFERENCE_ORDER = ("odom", "tf", "imu_speed", "imu_gps", "odom_twist")

#: bag topic -> ego-motion input kind (every row of MOTION_INPUTS).
MOTION_TOPICS = {spec.bag_topic: kind for kind, spec in MOTION_INPUTS.items()}
BAG_TOPICS = (*MOTION_TOPICS, Topics.BAG_TF_STATIC, Topics.BAG_POSE_GT)


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

    events: list = field(default_factory=list)      # (kind, sample): kind a key of MOTION_INPUTS
    static: list = field(default_factory=list)      # TransformSample from /tf_static
    gt_stamps_ns: list = field(default_factory=list)
    gt_T_map_camera: list = field(default_factory=list)
    image_stamps_ns: list = field(default_factory=list)   # header stamps on the image topic (KITTI timing)

    def T_base_camera(self, base_frame: str = BASE_FRAME, camera_frame: str = CAMERA_OPTICAL_FRAME) -> np.ndarray:
        """(4,4) base <- camera from the bag's /tf_static, through the package's transform buffer.

        Raises:
            LookupError: the frames are not connected by static transforms.
        """
        buffer = TfBuffer()
        for t in self.static:
            buffer.set_transform(t, static=True)
        try:
            return buffer.lookup(base_frame, camera_frame)
        except TfError as exc:
            raise LookupError(f"no static transform chain from {camera_frame!r} to {base_frame!r}: {exc}") from None


def load_bag(path, image_topic: str | None = None) -> BagMotion:
    """Read the motion topics of a bag (names from ``conventions.Topics``), and the header stamps
    of ``image_topic`` when given."""
    out = BagMotion()
    for topic, _, msg in iter_bag(path, BAG_TOPICS + ((image_topic,) if image_topic else ())):
        if topic == image_topic:
            out.image_stamps_ns.append(stamp_to_ns(msg.header.stamp))
            continue
        if topic in MOTION_TOPICS:
            kind = MOTION_TOPICS[topic]
            out.events.extend((kind, s) for s in MOTION_INPUTS[kind].convert(msg))
        elif topic == Topics.BAG_TF_STATIC:
            out.static.extend(from_tf_message(msg))
        elif topic == Topics.BAG_POSE_GT:
            out.gt_stamps_ns.append(stamp_to_ns(msg.header.stamp))
            out.gt_T_map_camera.append(pose_to_matrix(msg.pose))
    return out


def feed_provider(provider: EgoMotionProvider, events, static=()) -> None:
    """Feed the /tf_static samples ``static``, then (kind, sample) events in order."""
    for t in static:
        provider.add_transform(t, static=True)
    add = {kind: getattr(provider, spec.add) for kind, spec in MOTION_INPUTS.items()}
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


def load_trajectory(path, fmt: str, stamps_ns=None) -> tuple[np.ndarray, np.ndarray]:
    """(stamps_ns (N,) int64, T_world_frame (N,4,4)) from a TUM or KITTI trajectory file.

    TUM: ``t x y z qx qy qz qw`` per line (t in seconds; ``#`` comments; spaces or commas).
    KITTI: 12 numbers per line, the 3x4 ``[R|t]`` row-major; ``stamps_ns`` gives their times.
    Raises:
        ValueError: unreadable file, wrong column count, non-finite values, a non-unit quaternion
            or rotation, or (KITTI) a pose count that differs from the stamps'; the message names
            the file and, where it applies, the line.
    """
    if fmt not in TRAJECTORY_FORMATS:
        raise ValueError(f"trajectory format must be one of {TRAJECTORY_FORMATS}, got {fmt!r}")
    rows = []
    try:
        with open(path) as fh:
            for lineno, line in enumerate(fh, 1):
                text = line.split("#", 1)[0].replace(",", " ").strip()
                if not text:
                    continue
                try:
                    vals = [float(v) for v in text.split()]
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: not a list of numbers: {line.strip()[:60]!r}") from None
                want = 8 if fmt == "tum" else 12
                if len(vals) != want:
                    raise ValueError(f"{path}:{lineno}: {fmt} lines have {want} numbers, this one {len(vals)}")
                if not all(math.isfinite(v) for v in vals):
                    raise ValueError(f"{path}:{lineno}: non-finite value")
                rows.append((lineno, vals))
    except OSError as exc:
        raise ValueError(f"cannot read trajectory {path}: {exc}") from None
    if len(rows) < 2:
        raise ValueError(f"{path}: fewer than 2 poses")
    T = np.tile(np.eye(4), (len(rows), 1, 1))
    if fmt == "tum":
        stamps = np.array([round(v[0] * NS_PER_S) for _, v in rows], dtype=np.int64)
        for n, (lineno, v) in enumerate(rows):
            q = np.asarray(v[4:8])
            if abs(float(q @ q) - 1.0) > 0.01:
                raise ValueError(f"{path}:{lineno}: quaternion norm {np.linalg.norm(q):.3f} is not 1")
            T[n, :3, :3] = Rotation.from_quat(q).as_matrix()
            T[n, :3, 3] = v[1:4]
    else:
        if stamps_ns is None or len(stamps_ns) != len(rows):
            raise ValueError(f"{path}: {len(rows)} KITTI poses but "
                             f"{'no' if stamps_ns is None else len(stamps_ns)} stamps for them "
                             "(--trajectory-times, or the bag's images on --image-topic)")
        stamps = np.asarray(stamps_ns, dtype=np.int64)
        for n, (lineno, v) in enumerate(rows):
            M = np.asarray(v).reshape(3, 4)
            if np.abs(M[:, :3].T @ M[:, :3] - np.eye(3)).max() > 1e-3 or np.linalg.det(M[:, :3]) < 0:
                raise ValueError(f"{path}:{lineno}: the 3x3 part is not a rotation")
            T[n, :3, :] = M
    order = np.argsort(stamps, kind="stable")
    return stamps[order], T[order]


def _grid_stamps(motion: BagMotion, dt_s: float) -> np.ndarray:
    """Query stamps when a source is the reference: dt/2 apart over the motion data, 0.5 s in from its ends."""
    ev = [s.stamp_ns for _, s in motion.events]
    margin = int(0.5 * NS_PER_S)
    if not ev or max(ev) - min(ev) <= 2 * margin:
        return np.zeros(0, np.int64)
    return np.arange(min(ev) + margin, max(ev) - margin, int(round(dt_s * NS_PER_S / 2)), dtype=np.int64)


def sources_with_inputs(motion: BagMotion) -> list[str]:
    """The sources whose input kinds all occur in the bag (all of them when none does)."""
    kinds = {k for k, _ in motion.events}
    return [s for s in SOURCES if set(SOURCE_INPUTS[s]) <= kinds] or list(SOURCES)


def evaluate(motion: BagMotion, sources=None, dt_s: float = 0.1, min_travel_m: float = 0.2,
             config: EgoMotionConfig | None = None, T_base_camera: np.ndarray | None = None,
             reference: str | tuple | None = None) -> dict:
    """Per-source relative-pose errors vs a reference.

    ``reference``: None = the bag's ground truth (``motion.gt_*``); ``(label, stamps_ns, T_world_camera)``
    = a trajectory; a source name = that source (compared sources exclude it).

    Returns:
        {"reference", "dt_s", "min_travel_m", "pairs", "pairs_moving", "sources": {name: {
        "n", "coverage", "t_err_median_pct", "t_err_p95_pct", "r_err_median_deg",
        "r_err_p95_deg", "t_err_median_m", "used": {reported source: count}}}}
    """
    sources = sources_with_inputs(motion) if sources is None else sources
    cfg = config or EgoMotionConfig()
    # Offline: keep everything, feed everything, then query.
    cfg = dataclasses.replace(cfg, buffer_s=1e7)
    provider = EgoMotionProvider(cfg, motion.T_base_camera() if T_base_camera is None else T_base_camera)
    feed_provider(provider, motion.events, motion.static)
    if isinstance(reference, str):
        label = f"source {reference}"
        stamps = _grid_stamps(motion, dt_s)
        sources = [s for s in sources if s != reference]

        def T_rel_of(i, k):
            rp = provider.relative_pose(int(stamps[k]), int(stamps[i]), [reference])
            return rp.T_target_source if rp.status is PoseStatus.OK else None
    else:
        if reference is None:
            label, st, Ts = "ground truth", motion.gt_stamps_ns, motion.gt_T_map_camera
        else:
            label, st, Ts = reference
        order = np.argsort(np.asarray(st, dtype=np.int64), kind="stable")
        stamps = np.asarray(st, dtype=np.int64)[order]
        T_gt = np.asarray(Ts)[order]

        def T_rel_of(i, k):
            return np.linalg.inv(T_gt[k]) @ T_gt[i]
    pairs = _pairs(stamps, int(round(dt_s * NS_PER_S)), int(round(0.25 * dt_s * NS_PER_S)))
    moving = []
    for i, k in pairs:
        T_rel = T_rel_of(i, k)
        if T_rel is not None and np.linalg.norm(T_rel[:3, 3]) >= min_travel_m:
            moving.append((i, k, T_rel))
    report = {"reference": label, "dt_s": dt_s, "min_travel_m": min_travel_m, "pairs": len(pairs),
              "pairs_moving": len(moving), "sources": {}, "counters": None}
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
    lines = [f"Relative camera pose error vs {report.get('reference', 'ground truth')}, "
             f"frames {report['dt_s']} s apart "
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
    parser.add_argument("--bag", required=True, help="bag (rosbag2 folder, bare mcap/db3, ROS 1 .bag) with "
                        f"odometry/TF/IMU/GPS; ground truth from {Topics.BAG_POSE_GT} when present")
    parser.add_argument("--trajectory", default=None, metavar="FILE",
                        help="reference trajectory for bags without ground truth (see --trajectory-format)")
    parser.add_argument("--trajectory-format", choices=TRAJECTORY_FORMATS, default="tum",
                        help="tum: 't x y z qx qy qz qw' per line; kitti: 3x4 row-major per line, no time")
    parser.add_argument("--trajectory-frame", choices=("camera", "base"), default="camera",
                        help="whose poses the trajectory holds: the camera optical frame's or the base frame's")
    parser.add_argument("--trajectory-times", default=None, metavar="FILE",
                        help="KITTI: one time in seconds per line (default: the bag's --image-topic stamps)")
    parser.add_argument("--image-topic", default=Topics.BAG_IMAGE, help="images that stamp a KITTI trajectory")
    parser.add_argument("--reference", default="auto", choices=("auto", *SOURCES),
                        help="without ground truth or --trajectory: the source the others are compared with "
                             f"(auto: first that answers of {', '.join(REFERENCE_ORDER)})")
    parser.add_argument("--sources", nargs="+", default=None, choices=SOURCES,
                        help="sources to evaluate (each on its own; default: every source whose inputs the bag has)")
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
    kitti_from_images = args.trajectory and args.trajectory_format == "kitti" and not args.trajectory_times
    try:
        motion = load_bag(args.bag, args.image_topic if kitti_from_images else None)
    except Exception as e:  # bagio.BagError, rosbags errors: report, don't trace back
        print(f"egomotion-eval: cannot read {args.bag}: {e}", file=sys.stderr)
        return 1
    try:
        T_base_camera = motion.T_base_camera(args.base_frame, args.camera_frame)
    except LookupError as e:
        print(f"egomotion-eval: {e}", file=sys.stderr)
        return 1
    cfg = EgoMotionConfig(odom_frame=args.odom_frame, base_frame=args.base_frame,
                          imu_rotation=args.imu_rotation, gps_fit=args.gps_fit, gps_window_s=args.gps_window,
                          gps_imu_window_s=args.gps_imu_window)
    sources = list(args.sources) if args.sources else sources_with_inputs(motion)
    try:
        if args.trajectory:
            stamps = None
            if args.trajectory_format == "kitti":
                if args.trajectory_times:
                    stamps = [round(t * NS_PER_S) for t in np.atleast_1d(np.loadtxt(args.trajectory_times))]
                else:
                    stamps = sorted(motion.image_stamps_ns)
            st, T = load_trajectory(args.trajectory, args.trajectory_format, stamps)
            if args.trajectory_frame == "base":
                T = T @ T_base_camera
            reference = (f"trajectory {args.trajectory} ({args.trajectory_format})", st, T)
        elif motion.gt_stamps_ns:
            reference = None
        else:
            reference = _pick_reference(motion, args.reference, cfg, T_base_camera, args.dt)
    except (ValueError, OSError) as e:
        print(f"egomotion-eval: {e}", file=sys.stderr)
        return 1
    report = evaluate(motion, sources, args.dt, args.min_travel, cfg, T_base_camera, reference)
    report["bag"] = str(args.bag)
    if args.json == "-":
        print(json.dumps(report, indent=2))
    else:
        print(format_table(report))
        if args.json:
            with open(args.json, "w") as fh:
                json.dump(report, fh, indent=2)
    return 0


def _pick_reference(motion: BagMotion, wanted: str, cfg, T_base_camera, dt_s: float) -> str:
    """The source to compare the others with (no ground truth, no trajectory)."""
    if not motion.events:
        raise ValueError(f"no ground truth on {Topics.BAG_POSE_GT}, no --trajectory and no motion topics "
                         "(odometry, /tf, IMU, GPS) to compare")
    candidates = REFERENCE_ORDER if wanted == "auto" else (wanted,)
    provider = EgoMotionProvider(dataclasses.replace(cfg, buffer_s=1e7), T_base_camera)
    feed_provider(provider, motion.events, motion.static)
    stamps = _grid_stamps(motion, dt_s)
    mid = len(stamps) // 2
    for name in candidates:
        if len(stamps) > 2 and provider.relative_pose(int(stamps[mid + 1]), int(stamps[mid]),
                                                      [name]).status is PoseStatus.OK:
            print(f"egomotion-eval: no ground truth in the bag: comparing with source {name}", file=sys.stderr)
            return name
    raise ValueError(f"no ground truth, no --trajectory, and reference source(s) {list(candidates)} give no poses")
