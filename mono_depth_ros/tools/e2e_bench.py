"""End-to-end latency through DDS: image stamp -> depth / points received in another process.

Three processes on this machine (loopback only): the depth node with adaptation on, a
publisher that plays a synthetic drive's camera, camera_info, odometry and TF with header
stamps rewritten to the wall clock, and this process, which subscribes to ``depth``,
``points`` and ``/diagnostics``. Latency = the middleware's receive time of the output minus
the image's header stamp (both system clock), so it covers the publisher's serialisation,
transport, the node's whole frame path and the transport back.

The drive plays in segments ``(wall seconds, rate)``: a warm-up, the measured 10 Hz segment and
a saturating 30 Hz segment (the bag played 3x faster: same images, time compressed, poses still
consistent with the stamps) that shows the inference rate the node sustains while adapting.
Used by ``mono-depth bench``; runnable alone: ``python -m mono_depth_ros.tools.e2e_bench --help``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from mono_depth_ros.conventions import Topics
from mono_depth_ros.msgconv import ns_to_stamp, stamp_to_ns
from mono_depth_ros.tools.process import stop_process

__all__ = ["run_e2e", "PLAN_FULL", "PLAN_QUICK"]

# The right camera's topics are played when the drive has them (`generate --stereo`): a node with
# `adapt_stereo: true` then learns from the pair (the remaps below connect them).
_TOPICS = (Topics.BAG_IMAGE, Topics.BAG_CAMERA_INFO, "/odom", "/tf", "/tf_static", Topics.BAG_RIGHT_IMAGE,
           Topics.BAG_RIGHT_CAMERA_INFO)
#: (label, wall seconds, playback rate): warm-up (not scored), 10 Hz, 30 Hz.
PLAN_FULL = (("warmup", 4.0, 1.0), ("10hz", 30.0, 1.0), ("30hz", 12.0, 3.0))
PLAN_QUICK = (("warmup", 2.0, 1.0), ("10hz", 3.0, 1.0), ("30hz", 2.0, 3.0))


def _bag_seconds(plan) -> float:
    return sum(d * r for _, d, r in plan)


# ----------------------------------------------------------------------------- publisher process
def _restamp(msg, f) -> None:
    """Rewrite every header stamp in ``msg`` (also each transform of a TFMessage) with ``f(ns) -> ns``."""
    def fix(header):
        ns = stamp_to_ns(header.stamp)
        header.stamp.sec, header.stamp.nanosec = ns_to_stamp(int(f(ns)))

    if hasattr(msg, "transforms"):
        for t in msg.transforms:
            fix(t.header)
    elif hasattr(msg, "header"):
        fix(msg.header)


def _publish(bag: Path, plan, out_json: Path, wait_s: float) -> int:
    import rclpy
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from rclpy.serialization import deserialize_message

    from mono_depth_ros.bagio import open_reader
    from mono_depth_ros.ros.conversions import message_class as _msg_class

    rclpy.init()
    node = rclpy.create_node("mono_depth_e2e_publisher")
    stamps: dict[str, list[int]] = {label: [] for label, _, _ in plan}
    with open_reader(bag) as reader:
        conns = [c for c in reader.connections if c.topic in _TOPICS]
        classes, pubs = {}, {}
        for c in conns:
            classes[c.topic] = _msg_class(c.msgtype)
            static = c.topic == "/tf_static"
            qos = QoSProfile(depth=10 if static else 50, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if static else DurabilityPolicy.VOLATILE)
            pubs[c.topic] = node.create_publisher(classes[c.topic], c.topic, qos)
        end = time.monotonic() + wait_s
        while pubs["/camera/image_raw"].get_subscription_count() == 0 and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.5)  # let discovery settle on the node's side for every topic
        t0_bag = reader.start_time
        mono0 = time.monotonic() + 0.2
        wall0 = time.time_ns() + 200_000_000
        seg_idx, seg_bag0, seg_mono0, seg_wall0 = 0, t0_bag, mono0, wall0
        seg_end_bag = t0_bag + int(plan[0][1] * plan[0][2] * 1e9)
        for conn, t, raw in reader.messages(connections=conns):
            while t >= seg_end_bag:  # next segment: continuous clocks, new rate
                label, dur, rate = plan[seg_idx]
                seg_mono0 += dur
                seg_wall0 += int(dur * 1e9)
                seg_bag0 = seg_end_bag
                seg_idx += 1
                if seg_idx == len(plan):
                    break
                seg_end_bag = seg_bag0 + int(plan[seg_idx][1] * plan[seg_idx][2] * 1e9)
            if seg_idx == len(plan):
                break
            label, _, rate = plan[seg_idx]
            due = seg_mono0 + (t - seg_bag0) / 1e9 / rate
            delay = due - time.monotonic()
            if delay > 0.002:
                time.sleep(delay - 0.001)
            while time.monotonic() < due:  # the last millisecond: spin for a punctual stamp
                pass
            msg = deserialize_message(bytes(raw), classes[conn.topic])
            b0, w0, r = seg_bag0, seg_wall0, rate
            if conn.topic == "/tf_static":
                _restamp(msg, lambda ns: wall0)
            else:
                _restamp(msg, lambda ns: w0 + (ns - b0) / r)
            pubs[conn.topic].publish(msg)
            if conn.topic == "/camera/image_raw":
                stamps[label].append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
    time.sleep(0.2)
    out_json.write_text(json.dumps(stamps))
    node.destroy_node()
    rclpy.try_shutdown()
    return 0


# ----------------------------------------------------------------------------- measuring process
def _header_stamp_ns(raw: bytes) -> int:
    """Header stamp of a serialized message whose first field is std_msgs/Header (CDR, little endian)."""
    sec, nsec = struct.unpack_from("<iI", raw, 4)  # after the 4-byte encapsulation header
    return sec * 1_000_000_000 + nsec


def _stats(lat_ms: list[float]) -> dict:
    if not lat_ms:
        return {"n": 0, "p50_ms": float("nan"), "p95_ms": float("nan"), "max_ms": float("nan")}
    a = np.asarray(lat_ms)
    return {"n": int(a.size), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "max_ms": float(a.max())}


def _drive(bag: Path | None, seconds: float, workdir: Path, quiet: bool) -> Path:
    if bag is not None:
        return bag
    from mono_depth_ros.tools.synth import generate_bag

    out = workdir / f"drive_B_{seconds:.0f}s"
    if (out / "metadata.yaml").exists():
        print(f"[e2e] reusing the drive rendered by an earlier run: {out}", flush=True)
        return out
    print(f"[e2e] rendering a {seconds:.0f} s synthetic domain-B drive (640x192, 10 Hz) into {out}", flush=True)
    generate_bag(out, preset="B", seed=201, duration_s=seconds, width=640, height=192,
                 sensors=("camera", "odom", "tf", "tf_static"), progress=not quiet, contact_sheet=False)
    return out


def run_e2e(bag: Path | None = None, plan=PLAN_FULL, workdir: Path | None = None, quiet: bool = False,
            node_params: dict | None = None) -> dict:
    """Run node + publisher + this subscriber; return latency and rate figures per segment."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    # The project's Fast DDS profile (scripts/env.sh sets it; so do the tests and loadtest): without it the
    # 0.5 MB depth images cross loopback as UDP fragments, and a lost one waits ~100 ms for its resend
    # (measured: 10 Hz depth p95 127 ms instead of ~20 ms, points unaffected). Kept if already set.
    profile = Path(__file__).resolve().parents[2] / "config" / "fastdds_shm.xml"
    if profile.is_file():
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
        os.environ.setdefault("RMW_FASTRTPS_USE_QOS_FROM_XML", "0")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="mono_depth_e2e_"))
    workdir.mkdir(parents=True, exist_ok=True)
    bag = _drive(bag, _bag_seconds(plan) + 1.0, workdir, quiet)
    params = {"target_frame": "odom", "checkpoint_dir": str(workdir / "checkpoints"), "resume": False,
              "adapt": True, "checkpoint_period": 0.0}
    params.update(node_params or {})
    cmd = [sys.executable, "-u", "-m", "mono_depth_ros.ros.depth_node", "--ros-args",
           "-r", "image:=/camera/image_raw", "-r", "camera_info:=/camera/camera_info",
           "-r", f"{Topics.RIGHT_IMAGE}:={Topics.BAG_RIGHT_IMAGE}",
           "-r", f"{Topics.RIGHT_CAMERA_INFO}:={Topics.BAG_RIGHT_CAMERA_INFO}"]
    for k, v in params.items():
        cmd += ["-p", f"{k}:={str(v).lower() if isinstance(v, bool) else v}"]
    env = dict(os.environ, RCUTILS_LOGGING_BUFFERED_STREAM="0", RCUTILS_COLORIZED_OUTPUT="0")
    node_log = workdir / "node.log"
    node_proc = subprocess.Popen(cmd, stdout=open(node_log, "w"), stderr=subprocess.STDOUT, env=env,
                                 preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    rclpy.init()
    sub = rclpy.create_node("mono_depth_e2e_listener")
    got: dict[str, dict[int, int]] = {"depth": {}, "points": {}}
    diag: list[tuple[float, dict]] = []
    lock = threading.Lock()

    def on(kind):
        def cb(raw, info):
            rx = int(info.get("received_timestamp") or time.time_ns())
            with lock:
                got[kind].setdefault(_header_stamp_ns(raw), rx)
        return cb

    def on_diag(msg):
        for st in msg.status:
            vals = {kv.key: kv.value for kv in st.values}
            if "adapt_steps" in vals or "frames_dropped" in vals:
                with lock:
                    diag.append((time.monotonic(), vals))

    qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE)
    sub.create_subscription(Image, "/depth", on("depth"), qos, raw=True)
    sub.create_subscription(PointCloud2, "/points", on("points"), qos, raw=True)
    sub.create_subscription(DiagnosticArray, "/diagnostics", on_diag, 20)
    ex = SingleThreadedExecutor()
    ex.add_node(sub)
    spinner = threading.Thread(target=ex.spin, daemon=True)
    spinner.start()
    stamps_path = workdir / "published.json"
    try:
        end = time.monotonic() + 180
        while "depth node ready" not in node_log.read_text():
            if node_proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError(f"the depth node did not start; its log: {node_log}\n"
                                   + node_log.read_text()[-2000:])
            time.sleep(0.2)
        plan_arg = ",".join(f"{label}:{d:g}:{r:g}" for label, d, r in plan)
        pub = subprocess.run([sys.executable, "-m", "mono_depth_ros.tools.e2e_bench", "--publisher", str(bag),
                              "--plan", plan_arg, "--stamps-out", str(stamps_path)], env=env,
                             capture_output=True, text=True, timeout=120 + _bag_seconds(plan) * 2)
        if pub.returncode != 0:
            raise RuntimeError(f"publisher failed: {pub.stderr[-2000:]}")
        time.sleep(1.5)  # the last frames' outputs
    finally:
        stop_process(node_proc)
        ex.shutdown()
        sub.destroy_node()
        rclpy.try_shutdown()
    published = json.loads(stamps_path.read_text())
    result: dict = {"plan": [list(p) for p in plan], "node_params": params, "segments": {}}
    for label, dur, rate in plan:
        stamps = published.get(label, [])
        seg = {"published": len(stamps), "input_hz": len(stamps) / dur if dur else 0.0}
        for kind in ("depth", "points"):
            lat = [(got[kind][s] - s) / 1e6 for s in stamps if s in got[kind]]
            seg[kind] = _stats(lat)
            seg[kind]["dropped"] = len(stamps) - len(lat)
        if stamps:
            seg["depth_hz"] = seg["depth"]["n"] / dur
        result["segments"][label] = seg
    steps = [int(v["adapt_steps"]) for _, v in diag if "adapt_steps" in v]
    rates = [float(v["adapt_steps_per_s"]) for _, v in diag if "adapt_steps_per_s" in v]
    result["adapt_steps_total"] = max(steps) if steps else 0
    result["adapt_steps_per_s_last"] = rates[-1] if rates else 0.0
    right = [int(v["adapt_right_frames"]) for _, v in diag if "adapt_right_frames" in v]
    result["adapt_right_frames"] = max(right) if right else 0   # stereo: right images the adaptation took
    backends = [v.get("inference_backend") for _, v in diag if v.get("inference_backend")]
    result["inference_backend"] = backends[-1] if backends else "?"
    result["fastdds_profile"] = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")   # transport settings used
    result["node_log"] = str(node_log)
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bag", type=Path, help="drive with camera, odom and tf (default: render one)")
    p.add_argument("--quick", action="store_true", help="seconds-long segments (harness check)")
    p.add_argument("--workdir", type=Path, help="where the node's log, checkpoints and a rendered drive go")
    p.add_argument("--node-param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra depth_node parameter, e.g. num_threads=2 (repeatable)")
    p.add_argument("--compare", metavar="VARIANTS",
                   help="semicolon-separated node variants run one after the other, interleaved over --rounds; each "
                        "is 'off' (adaptation off) or comma-separated NAME=VALUE parameters, e.g. "
                        "'off;adapt_process=true;adapt_process=false'. Prints a table of every run")
    p.add_argument("--rounds", type=int, default=1, help="--compare: rounds over the variants (default 1)")
    p.add_argument("--out", type=Path, help="--compare: write the runs as JSON here")
    p.add_argument("--publisher", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--plan", help=argparse.SUPPRESS)
    p.add_argument("--stamps-out", type=Path, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.publisher:
        plan = tuple((s.split(":")[0], float(s.split(":")[1]), float(s.split(":")[2])) for s in a.plan.split(","))
        return _publish(a.publisher, plan, a.stamps_out, wait_s=60.0)
    extra = {}
    for item in a.node_param:
        if "=" not in item:
            p.error(f"--node-param {item!r}: expected NAME=VALUE")
        k, v = item.split("=", 1)
        extra[k] = v
    plan = PLAN_QUICK if a.quick else PLAN_FULL
    if a.compare:
        return _compare(a, plan, extra)
    res = run_e2e(a.bag, plan, a.workdir, node_params=extra)
    print(json.dumps(res, indent=1))
    return 0


def _variant(text: str) -> dict:
    if text.strip() == "off":
        return {"adapt": False}
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        if "=" not in item:
            raise SystemExit(f"--compare: {item!r} is not NAME=VALUE")
        k, v = item.split("=", 1)
        out[k] = v
    return out


def _compare(a, plan, extra: dict) -> int:
    """Variants of the node on the same drive, interleaved (rounds x variants), one table."""
    variants = [v.strip() for v in a.compare.split(";") if v.strip()]
    workdir = Path(a.workdir or tempfile.mkdtemp(prefix="mono_depth_e2e_cmp_"))
    bag = _drive(a.bag, _bag_seconds(plan) + 1.0, workdir, False)
    runs = []
    for r in range(a.rounds):
        for i, v in enumerate(variants):
            print(f"[e2e] round {r + 1}/{a.rounds}: {v}", flush=True)
            res = run_e2e(bag, plan, workdir / f"r{r}_v{i}", quiet=True, node_params={**extra, **_variant(v)})
            runs.append({"round": r + 1, "variant": v, "load_avg_1min": round(os.getloadavg()[0], 2), **res})
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(runs, indent=1))
    print("\n| round | variant | 10 Hz depth p50 / p95 ms | 30 Hz depth rate | dropped 10 / 30 Hz | adaptation steps "
          "| load |")
    print("|---:|---|---|---:|---|---:|---:|")
    for run in runs:
        s10, s30 = run["segments"].get("10hz", {}), run["segments"].get("30hz", {})
        d10, d30 = s10.get("depth", {}), s30.get("depth", {})
        print(f"| {run['round']} | {run['variant']} | {d10.get('p50_ms', float('nan')):.1f} / "
              f"{d10.get('p95_ms', float('nan')):.1f} | {s30.get('depth_hz', float('nan')):.1f} Hz | "
              f"{d10.get('dropped', '-')} / {d30.get('dropped', '-')} | {run['adapt_steps_total']}"
              f"{' (%d right frames)' % run['adapt_right_frames'] if run.get('adapt_right_frames') else ''} | "
              f"{run['load_avg_1min']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
