"""The node's TfSource is a TransformLookup with both backends: /tf and /tf_static over real DDS, then
``lookup_full`` (camera(t0) -> camera(t1) through odom, over odom -> base_footprint -> base_link -> camera)
against the package's TfBuffer, the side of an extrapolation, and ``clear()``.

The own-buffer backend always runs; the tf2_ros backend runs with the ROS 2 tools built from
``../shared/ros2-src`` (see docs/integration.md), and skips where they are absent.
"""
import json
import subprocess
import sys
import textwrap

import pytest

from .ros2tools import SKIP_REASON, SRC, build_tools

PROBE = textwrap.dedent(r'''
    import json, sys, time
    import numpy as np
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from scipy.spatial.transform import Rotation
    from geometry_msgs.msg import TransformStamped
    from tf2_msgs.msg import TFMessage
    from mono_depth_ros.egomotion.samples import from_transform_stamped
    from mono_depth_ros.ros.tf import TF_QOS, TF_STATIC_QOS, TfSource
    from mono_depth_ros.tf_buffer import ExtrapolationError, TfBuffer, TfError, TransformLookup

    S = 1_000_000_000
    def T_of(rotvec, t):
        T = np.eye(4); T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix(); T[:3, 3] = t; return T
    def ts(stamp_ns, parent, child, T):
        m = TransformStamped()
        m.header.stamp.sec, m.header.stamp.nanosec = divmod(stamp_ns, S)
        m.header.frame_id, m.child_frame_id = parent, child
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        m.transform.translation.x, m.transform.translation.y, m.transform.translation.z = map(float, T[:3, 3])
        m.transform.rotation.x, m.transform.rotation.y, m.transform.rotation.z, m.transform.rotation.w = map(float, q)
        return m

    rclpy.init()
    node, pub_node = rclpy.create_node("tf_lookup_probe"), rclpy.create_node("tf_lookup_pub")
    src = TfSource(node, use_tf2_ros=(sys.argv[1] == "tf2_ros"))
    ex = SingleThreadedExecutor(); ex.add_node(node); ex.add_node(pub_node)
    pub = pub_node.create_publisher(TFMessage, "/tf", TF_QOS)
    pub_static = pub_node.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
    def spin_until(pred, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not pred():
            ex.spin_once(timeout_sec=0.02)
        return pred()
    assert spin_until(lambda: pub.get_subscription_count() > 0 and pub_static.get_subscription_count() > 0, 20)
    ref = TfBuffer(cache_time_s=100.0)
    statics = [ts(0, "base_footprint", "base_link", T_of([0.01, -0.02, 0.0], [0.05, 0.0, 0.3])),
               ts(0, "base_link", "cam", T_of([-1.2, 0.0, -1.2], [1.5, 0.0, 1.2]))]
    pub_static.publish(TFMessage(transforms=statics))
    for m in statics:
        ref.set_transform(from_transform_stamped(m), static=True)
    t0 = 100 * S
    for k in range(21):                       # 2 s at 10 Hz along an arc
        t = t0 + k * S // 10
        m = ts(t, "odom", "base_footprint", T_of([0, 0, 0.3 * k / 10], [4.0 * k / 10, 0.5 * (k / 10) ** 2, 0.0]))
        pub.publish(TFMessage(transforms=[m]))
        ref.set_transform(from_transform_stamped(m))
        spin_until(lambda: False, 0.01)
    def ready():
        try:
            src.lookup("odom", "cam", t0 + 2 * S); return True
        except TfError:
            return False
    assert spin_until(ready, 20), "the transforms never arrived"
    out = {"backend": src.backend, "protocol": isinstance(src, TransformLookup)}
    a, b = t0 + 12 * S // 10, t0 + 15 * S // 10
    T = src.lookup_full("cam", b, "cam", a, "odom")
    out["err"] = float(np.abs(T - ref.lookup_full("cam", b, "cam", a, "odom")).max())
    out["travel"] = float(np.linalg.norm(T[:3, 3]))
    for name, (tt, ts_) in {"future": (t0 + 25 * S // 10, a), "past": (b, t0 - S)}.items():
        try:
            src.lookup_full("cam", tt, "cam", ts_, "odom"); out[name] = "no error"
        except ExtrapolationError as exc:
            out[name] = exc.future
    src.clear()
    try:
        src.lookup_full("cam", b, "cam", a, "odom"); out["after_clear"] = "still there"
    except TfError:
        out["after_clear"] = "gone"
    out["static_after_clear"] = float(np.abs(src.lookup("base_link", "cam") - ref.lookup("base_link", "cam")).max())
    print("RESULT " + json.dumps(out))
''')


def _probe(backend: str, env=None) -> dict:
    res = subprocess.run([sys.executable, "-c", PROBE, backend], env=env, text=True, capture_output=True,
                         timeout=120)
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")]
    assert res.returncode == 0 and lines, f"probe failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    return json.loads(lines[-1][len("RESULT "):])


def _check(r: dict, backend: str) -> None:
    assert r["backend"] == backend and r["protocol"] is True
    assert r["travel"] > 1.0                     # 0.3 s of a 4 m/s drive: a real comparison
    assert r["err"] < 1e-6, r                    # same chain, same interpolation (tf2: float64 too)
    assert r["future"] is True and r["past"] is False, r
    assert r["after_clear"] == "gone" and r["static_after_clear"] < 1e-9, r


def test_own_buffer_backend_over_dds():
    _check(_probe("mono_depth_ros"), "mono_depth_ros")


def test_tf2_ros_backend_over_dds():
    if not SRC.is_dir():
        pytest.skip(SKIP_REASON)
    _check(_probe("tf2_ros", build_tools().env()), "tf2_ros")
