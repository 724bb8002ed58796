"""Load test of depth_node (NOT run in CI; a short version is a ``faults`` test).

A synthetic camera (``--rate`` Hz, ``--size`` WxH rgb8) with camera_info, odometry and static
extrinsics is published into a depth node running in its own process with adaptation on. For the
first ``--compare`` seconds nobody slow listens; then a deliberately slow ``points`` subscriber
(its own process, reliable QoS, sleeping ``--slow-delay`` s per cloud) joins. Reported:

* resident memory of the node over time and its growth after ``--warmup`` s;
* depth latency (receive time - image stamp) p50/p95/max per ``--window`` s window;
* images published vs the node's received / processed / dropped counters;
* depth rate without and with the slow points subscriber.

Run (10 minutes, the figures in docs/hardening.md)::

    source scripts/env.sh
    python -m mono_depth_ros.tools.loadtest --duration 600 --rate 30 --size 1280x720 --json out/load.json

Loopback only (``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``), domain ``ROS_DOMAIN_ID`` (default 77).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mono_depth_ros.msgconv import ns_to_stamp, stamp_to_ns
from mono_depth_ros.tools.process import stop_process

__all__ = ["run", "main"]

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("ROS_DOMAIN_ID", "77")
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(ROOT / "config" / "fastdds_shm.xml"))
    env.setdefault("RMW_FASTRTPS_USE_QOS_FROM_XML", "0")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
    return env


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def _image(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[: height // 3] = (120, 160, 220)
    img[height // 3:] = (90, 90, 95)
    for _ in range(12):
        x0, y0 = rng.integers(0, width - 40), rng.integers(0, height - 20)
        img[y0:y0 + rng.integers(10, height // 2), x0:x0 + rng.integers(20, width // 4)] = rng.integers(0, 255, 3)
    return img


def _slow_subscriber(delay: float) -> int:
    """A process with one reliable ``points`` subscription that takes ``delay`` s per message."""
    import rclpy
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2
    rclpy.init()
    node = rclpy.create_node("slow_points_subscriber")
    count = [0]

    def on_points(msg):
        count[0] += 1
        print(f"points {count[0]}", flush=True)
        time.sleep(delay)
    node.create_subscription(PointCloud2, "points", on_points,
                             QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE,
                                        history=HistoryPolicy.KEEP_LAST))
    try:
        rclpy.spin(node)
    except (KeyboardInterrupt, Exception):
        pass
    finally:
        rclpy.try_shutdown()
    return 0


def _pct(a, q):
    return float(np.percentile(a, q)) if len(a) else float("nan")


def run(duration: float = 600.0, rate: float = 30.0, size: tuple[int, int] = (1280, 720), warmup: float = 60.0,
        compare: float = 60.0, window: float = 60.0, slow_delay: float = 0.5, workdir: str | None = None,
        node_params: dict | None = None, log=print) -> dict:
    """Run the load test; returns the figures (see module docstring)."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from nav_msgs.msg import Odometry
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    os.environ.update({k: v for k, v in _env().items() if k in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_DOMAIN_ID",
                                                                 "FASTDDS_DEFAULT_PROFILES_FILE",
                                                                 "RMW_FASTRTPS_USE_QOS_FROM_XML")})
    work = Path(workdir or tempfile.mkdtemp(prefix="mono_depth_load_"))
    work.mkdir(parents=True, exist_ok=True)
    W, H = size
    params = {"adapt": "true", "adapt_anchor": "none", "checkpoint_dir": str(work / "checkpoints"),
              "checkpoint_period": "60.0", "publish_points": "true", "adapt_train_width": "320",
              "adapt_train_height": "96"}
    params.update({k: str(v) for k, v in (node_params or {}).items()})
    args = [sys.executable, "-u", "-m", "mono_depth_ros.ros.depth_node", "--ros-args"]
    for k, v in params.items():
        args += ["-p", f"{k}:={v}"]
    node_log = open(work / "node.log", "w")
    # SIGINT must reach the node even when this runs as a background job (SIGINT ignored there).
    dfl = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)  # noqa: E731
    node_proc = subprocess.Popen(args, stdout=node_log, stderr=subprocess.STDOUT, env=_env(), cwd=ROOT,
                                 preexec_fn=dfl)
    slow_proc = None
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("load_test_driver", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    load_before = os.getloadavg()
    try:
        end = time.monotonic() + 120
        while "depth node ready" not in (work / "node.log").read_text():
            if node_proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"node did not start:\n{(work / 'node.log').read_text()}")
            time.sleep(0.2)
        img_pub = node.create_publisher(Image, "image", qos_profile_sensor_data)
        info_pub = node.create_publisher(CameraInfo, "camera_info", 10)
        odom_pub = node.create_publisher(Odometry, "odom", 50)
        static_pub = node.create_publisher(TFMessage, "/tf_static", QoSProfile(
            depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        depth_t, depth_lat, diags = [], [], []

        def on_depth(m):
            now = time.time_ns()
            depth_t.append(time.monotonic())
            depth_lat.append((now - stamp_to_ns(m.header.stamp)) / 1e9)
        node.create_subscription(Image, "depth", on_depth, 10)
        node.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
        end = time.monotonic() + 30
        while img_pub.get_subscription_count() == 0 and time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)

        from geometry_msgs.msg import TransformStamped
        from scipy.spatial.transform import Rotation
        ts = TransformStamped()
        ts.header.frame_id, ts.child_frame_id = "base_link", "camera_optical_frame"
        ts.transform.translation.x, ts.transform.translation.z = 1.0, 1.5
        q = Rotation.from_matrix(np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)).as_quat()
        (ts.transform.rotation.x, ts.transform.rotation.y, ts.transform.rotation.z,
         ts.transform.rotation.w) = map(float, q)
        static_pub.publish(TFMessage(transforms=[ts]))

        frames = []
        for s in range(4):
            msg = Image()
            msg.header.frame_id = "camera_optical_frame"
            msg.height, msg.width, msg.encoding, msg.step = H, W, "rgb8", 3 * W
            msg.data = _image(W, H, s).tobytes()
            frames.append(msg)
        info = CameraInfo()
        info.header.frame_id = "camera_optical_frame"
        info.width, info.height = W, H
        f = 0.8 * W
        info.k = [f, 0.0, (W - 1) / 2, 0.0, f, (H - 1) / 2, 0.0, 0.0, 1.0]
        odom = Odometry()
        odom.header.frame_id, odom.child_frame_id = "odom", "base_link"
        odom.pose.pose.orientation.w = 1.0
        odom.twist.twist.linear.x = 8.0
        cov = np.zeros(36)
        cov[[0, 7, 35]] = 1e-4
        odom.pose.covariance = cov.tolist()

        log(f"load test: {W}x{H} rgb8 at {rate:g} Hz for {duration:g} s (warm-up {warmup:g} s, slow points "
            f"subscriber from {compare:g} s), node pid {node_proc.pid}, work dir {work}")
        t_start = time.monotonic()
        period = 1.0 / rate
        published = 0
        rss = []           # (t, MB)
        next_rss = t_start
        slow_at = None
        while True:
            now = time.monotonic()
            el = now - t_start
            if el >= duration:
                break
            if slow_proc is None and el >= compare:
                slow_proc = subprocess.Popen([sys.executable, "-u", "-m", "mono_depth_ros.tools.loadtest",
                                              "--slow-subscriber", "--slow-delay", str(slow_delay)],
                                             stdout=open(work / "slow_subscriber.log", "w"),
                                             stderr=subprocess.STDOUT, env=_env(), cwd=ROOT, preexec_fn=dfl)
                slow_at = el
            if now >= next_rss:
                rss.append((el, _rss_mb(node_proc.pid)))
                next_rss += 1.0
            due = t_start + published * period
            if now >= due:
                stamp = time.time_ns()
                msg = frames[published % len(frames)]
                msg.header.stamp.sec, msg.header.stamp.nanosec = ns_to_stamp(stamp)
                info.header.stamp = msg.header.stamp
                odom.header.stamp = msg.header.stamp
                odom.pose.pose.position.x = 8.0 * el
                info_pub.publish(info)
                odom_pub.publish(odom)
                img_pub.publish(msg)
                published += 1
            ex.spin_once(timeout_sec=max(0.0, min(0.005, due + period - time.monotonic())))
        t_end = time.monotonic()
        end = time.monotonic() + 2.5
        while time.monotonic() < end:
            ex.spin_once(timeout_sec=0.05)
        stats = {}
        for m in reversed(diags):
            vals = {kv.key: kv.value for kv in m.status[0].values} if m.status else {}
            if "frames_processed" in vals:
                stats = vals
                break
    finally:
        load_after = os.getloadavg()
        if slow_proc is not None:
            stop_process(slow_proc, timeout=10)
        stop_process(node_proc)
        node_log.close()
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)

    t_dep = np.array(depth_t) - t_start
    lat = np.array(depth_lat)
    windows = []
    w0 = 0.0
    while w0 < duration - 1e-9:
        sel = (t_dep >= w0) & (t_dep < w0 + window)
        windows.append({"from_s": w0, "to_s": min(duration, w0 + window), "n": int(sel.sum()),
                        "rate_hz": float(sel.sum() / min(window, duration - w0)),
                        "p50_ms": _pct(lat[sel], 50) * 1e3, "p95_ms": _pct(lat[sel], 95) * 1e3,
                        "max_ms": float(lat[sel].max() * 1e3) if sel.any() else float("nan")})
        w0 += window
    r = np.array(rss)
    after = r[r[:, 0] >= warmup, 1] if len(r) else np.array([])
    # The resident set can be a sawtooth (training steps touch memory, the adaptation thread hands it back
    # when it grows, memory.HeapTrimPolicy): compare its envelope, the peak of the first window after warm-up with the peak
    # of the last window, not two point samples that may fall on a tooth and a trough.
    env_w = min(60.0, (duration - warmup) / 2)
    first_win = r[(r[:, 0] >= warmup) & (r[:, 0] < warmup + env_w), 1] if len(r) else np.array([])
    last_win = r[r[:, 0] >= duration - env_w, 1] if len(r) else np.array([])
    slow_count = 0
    if (work / "slow_subscriber.log").exists():
        slow_count = sum(1 for ln in (work / "slow_subscriber.log").read_text().splitlines() if ln.startswith("points"))

    def rate_between(a, b):
        sel = (t_dep >= a) & (t_dep < b)
        return float(sel.sum() / (b - a)) if b > a else float("nan")
    settle = min(3.0, compare / 4)
    slow_from = (slow_at if slow_at is not None else duration) + settle
    out = {
        "config": {"duration_s": duration, "rate_hz": rate, "size": [W, H], "warmup_s": warmup,
                   "compare_s": compare, "window_s": window, "slow_delay_s": slow_delay, "node_params": params},
        "loadavg_before": load_before, "loadavg_after": load_after,
        "published": published, "publish_rate_hz": published / (t_end - t_start),
        "node": {k: stats.get(k) for k in ("frames_received", "frames_processed", "frames_dropped", "input_errors",
                                           "inference_ms_mean", "inference_rate_hz", "adapt_steps",
                                           "adapt_frames", "adapt_rollbacks", "checkpoint_saves")},
        "depth_received": int(len(lat)),
        "depth_rate_without_slow_points_hz": rate_between(settle, slow_at if slow_at is not None else duration),
        "depth_rate_with_slow_points_hz": rate_between(slow_from, duration) if slow_at is not None else None,
        "slow_subscriber_clouds": slow_count,
        "rss_mb": {"start": float(r[0, 1]) if len(r) else None,
                   "at_warmup": float(after[0]) if len(after) else None,
                   "end": float(r[-1, 1]) if len(r) else None, "max": float(np.nanmax(r[:, 1])) if len(r) else None,
                   "envelope_window_s": env_w,
                   "peak_first_window": float(first_win.max()) if len(first_win) else None,
                   "peak_last_window": float(last_win.max()) if len(last_win) else None,
                   "growth_after_warmup": float(last_win.max() - first_win.max())
                   if len(first_win) and len(last_win) else None,
                   "samples": [[float(a), float(b)] for a, b in r[:: max(1, len(r) // 60)]]},
        "latency_windows": windows,
        "work_dir": str(work),
    }
    return out


def format_report(res: dict) -> str:
    c = res["config"]
    n = res["node"]
    lines = [f"## depth_node load test: {c['size'][0]}x{c['size'][1]} rgb8 at {c['rate_hz']:g} Hz, "
             f"{c['duration_s']:g} s, adaptation {'off' if c['node_params'].get('adapt') == 'false' else 'on'}",
             f"load average before {res['loadavg_before'][0]:.2f}, after {res['loadavg_after'][0]:.2f} (1 min)",
             f"published {res['published']} images ({res['publish_rate_hz']:.1f} Hz); node received "
             f"{n['frames_received']}, processed {n['frames_processed']}, dropped {n['frames_dropped']}, "
             f"input errors {n['input_errors']}; inference {n['inference_ms_mean']} ms; adaptation steps "
             f"{n['adapt_steps']}, rollbacks {n['adapt_rollbacks']}, checkpoint saves {n['checkpoint_saves']}",
             f"depth rate without slow points subscriber {res['depth_rate_without_slow_points_hz']:.2f} Hz, with "
             f"{res['depth_rate_with_slow_points_hz'] or float('nan'):.2f} Hz (slow subscriber got "
             f"{res['slow_subscriber_clouds']} clouds)"]
    rs = res["rss_mb"]
    lines.append(f"RSS: start {rs['start']:.0f} MB, at warm-up end {rs['at_warmup'] or float('nan'):.0f} MB, end "
                 f"{rs['end']:.0f} MB, max {rs['max']:.0f} MB, growth after warm-up (peak of the last "
                 f"{rs['envelope_window_s']:.0f} s minus peak of the first {rs['envelope_window_s']:.0f} s after it) "
                 f"{rs['growth_after_warmup'] if rs['growth_after_warmup'] is not None else float('nan'):+.1f} MB")
    lines += ["", "| window [s] | depth images | rate [Hz] | latency p50 [ms] | p95 [ms] | max [ms] |",
              "|---|---:|---:|---:|---:|---:|"]
    for w in res["latency_windows"]:
        lines.append(f"| {w['from_s']:.0f}-{w['to_s']:.0f} | {w['n']} | {w['rate_hz']:.2f} | {w['p50_ms']:.0f} | "
                     f"{w['p95_ms']:.0f} | {w['max_ms']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mono_depth_ros.tools.loadtest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--duration", type=float, default=600.0, help="seconds of camera input (default 600)")
    p.add_argument("--rate", type=float, default=30.0, help="camera rate [Hz] (default 30)")
    p.add_argument("--size", default="1280x720", help="image size WxH (default 1280x720)")
    p.add_argument("--warmup", type=float, default=60.0, help="memory growth is measured after this [s]")
    p.add_argument("--compare", type=float, default=60.0,
                   help="the slow points subscriber joins after this [s] (depth rate before vs after)")
    p.add_argument("--window", type=float, default=60.0, help="latency window [s] (default 60)")
    p.add_argument("--slow-delay", type=float, default=0.5, help="seconds the slow subscriber takes per cloud")
    p.add_argument("--workdir", help="node log and checkpoints (default: a new temp dir)")
    p.add_argument("--json", help="also write the figures as JSON here")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra node parameter (repeatable), e.g. --param adapt=false")
    p.add_argument("--slow-subscriber", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.slow_subscriber:
        return _slow_subscriber(a.slow_delay)
    try:
        W, H = (int(x) for x in a.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must be WxH, got {a.size!r}")
    extra = {}
    for kv in a.param:
        if "=" not in kv:
            p.error(f"--param must be NAME=VALUE, got {kv!r}")
        k, v = kv.split("=", 1)
        extra[k.strip()] = v.strip()
    res = run(a.duration, a.rate, (W, H), a.warmup, a.compare, a.window, a.slow_delay, a.workdir, extra)
    print(format_report(res))
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        Path(a.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
