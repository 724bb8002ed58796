"""Helpers for tests that run real ROS 2 processes over DDS (loopback only, see conftest.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The node's camera inputs remapped to the synthetic bags' topics (for replayed drives).
BAG_REMAPS = {"image": "/camera/image_raw", "camera_info": "/camera/camera_info", "depth_gt": "/camera/depth_gt"}


class NodeProcess:
    """The depth node in its own process; its log goes to a file the test can read."""

    def __init__(self, tmp_path: Path, params: dict | None = None, remaps: dict | None = None,
                 module: str = "mono_depth_ros.ros.depth_node", name: str = "node", env: dict | None = None):
        self.log_path = tmp_path / f"{name}.log"
        args = [sys.executable, "-u", "-m", module, "--ros-args"]
        params = dict(params or {})
        params.setdefault("checkpoint_dir", str(tmp_path / "checkpoints"))  # never the user's ~/.ros
        params.setdefault("adapt_anchor", "none")  # rendering anchors costs seconds; the demo test covers them
        for k, v in params.items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            args += ["-p", f"{k}:={v}"]
        for k, v in (remaps or {}).items():
            args += ["-r", f"{k}:={v}"]
        env = dict(os.environ if env is None else env)  # e.g. test/ros2tools.py's overlay with real tf2_ros
        env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
        env["RCUTILS_COLORIZED_OUTPUT"] = "0"
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for_log(self, text: str, timeout: float = 60.0) -> bool:
        end = time.monotonic() + timeout
        while True:
            if text in self.log():
                return True
            if self.proc.poll() is not None or time.monotonic() >= end:
                return text in self.log()
            time.sleep(0.1)

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs."""
        import signal
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self._log.close()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, sig=None) -> int:
        import signal
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGINT)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def spin_until(node, predicate, timeout: float, executor=None) -> bool:
    """Spin ``node`` until ``predicate()`` is true or ``timeout`` seconds pass."""
    import rclpy
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        if executor is not None:
            executor.spin_once(timeout_sec=0.02)
        else:
            rclpy.spin_once(node, timeout_sec=0.02)
    return predicate()


def make_camera_info(width: int, height: int, fx: float, cx: float | None = None, cy: float | None = None,
                     frame_id: str = "camera_optical_frame"):
    from sensor_msgs.msg import CameraInfo
    info = CameraInfo()
    info.header.frame_id = frame_id
    info.width, info.height = width, height
    cx = (width - 1) / 2 if cx is None else cx
    cy = (height - 1) / 2 if cy is None else cy
    info.k = [fx, 0.0, cx, 0.0, fx, cy, 0.0, 0.0, 1.0]
    info.p = [fx, 0.0, cx, 0.0, 0.0, fx, cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    info.r = [1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0]
    info.d = [0.0] * 5
    info.distortion_model = "plumb_bob"
    return info


def make_image(rgb, frame_id: str = "camera_optical_frame", encoding: str = "rgb8"):
    from sensor_msgs.msg import Image
    msg = Image()
    msg.header.frame_id = frame_id
    msg.height, msg.width = rgb.shape[:2]
    msg.encoding = encoding
    msg.step = rgb.shape[1] * (rgb.shape[2] if rgb.ndim == 3 else 1) * rgb.dtype.itemsize
    msg.data = rgb.tobytes()
    return msg


def make_transform(parent: str, child: str, stamp_ns: int, t, q_xyzw):
    from geometry_msgs.msg import TransformStamped
    ts = TransformStamped()
    ts.header.frame_id = parent
    ts.child_frame_id = child
    ts.header.stamp.sec, ts.header.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    ts.transform.translation.x, ts.transform.translation.y, ts.transform.translation.z = map(float, t)
    (ts.transform.rotation.x, ts.transform.rotation.y, ts.transform.rotation.z,
     ts.transform.rotation.w) = map(float, q_xyzw)
    return ts


def textured_image(width: int, height: int, seed: int = 0):
    """A structured, textured RGB test image (sky band, road, blocks) — real content for the network."""
    import numpy as np
    rng = np.random.default_rng(seed)
    img = np.zeros((height, width, 3), np.uint8)
    img[: height // 3] = (120, 160, 220)
    img[height // 3:] = (90, 90, 95)
    for _ in range(12):
        x0, y0 = rng.integers(0, width - 20), rng.integers(0, height - 10)
        img[y0:y0 + rng.integers(5, height // 2), x0:x0 + rng.integers(10, width // 4)] = rng.integers(0, 255, 3)
    noise = rng.integers(-20, 20, img.shape)
    return np.clip(img.astype(int) + noise, 0, 255).astype(np.uint8)


def replay_in_thread(node, bag, rate=1.0) -> threading.Event:
    """Replay ``bag`` through ``node``'s publishers (with /clock) in a thread; the event is set when it ends."""
    from mono_depth_ros.ros.replay import replay
    done = threading.Event()

    def run():
        try:
            replay(node, bag, rate=rate, wait_subscribers=20.0, progress=False)
        finally:
            done.set()
    threading.Thread(target=run, daemon=True).start()
    return done


def diagnostics(node, ex, timeout=5.0) -> dict[str, str]:
    """The depth node's latest /diagnostics values (the status that carries ``adapt_steps``), key -> text."""
    from diagnostic_msgs.msg import DiagnosticArray
    got = []
    sub = node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: got.append(m), 10)
    spin_until(node, lambda: any("adapt_steps" in {kv.key for kv in m.status[0].values} for m in got), timeout, ex)
    node.destroy_subscription(sub)
    mine = [m for m in got if "adapt_steps" in {kv.key for kv in m.status[0].values}]
    assert mine, [m.status[0].name for m in got]
    return {kv.key: kv.value for kv in mine[-1].status[0].values}
