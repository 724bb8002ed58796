"""End-to-end tests of depth_node over real DDS: the node runs in its own process.

The test process publishes images, camera_info, /tf and /tf_static and
subscribes to the node's outputs (loopback only, fresh ROS_DOMAIN_ID per run).
"""
import time

import numpy as np
import pytest
from scipy.spatial.transform import Rotation, Slerp

from mono_depth_ros.conventions import scale_intrinsics

from .rosutil import NodeProcess, make_camera_info, make_image, make_transform, spin_until, textured_image

rclpy = pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow]

OPT = "camera_optical_frame"


@pytest.fixture
def ros_node():
    from rclpy.context import Context
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(f"test_client_{int(time.time() * 1000) % 100000}", context=ctx)
    from rclpy.executors import SingleThreadedExecutor
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    yield node, ex
    ex.shutdown()
    node.destroy_node()
    rclpy.shutdown(context=ctx)


def _qos_sensor():
    from rclpy.qos import qos_profile_sensor_data
    return qos_profile_sensor_data


def _collect(node, msg_type, topic, store, qos=10):
    return node.create_subscription(msg_type, topic, lambda m: store.append(m), qos)


def _wait_ready(proc, timeout=90):
    assert proc.wait_for_log("depth node ready", timeout), f"node did not start:\n{proc.log()}"


def _stamp_ns(stamp):
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def test_depth_and_cloud_match_backprojection_through_tf(tmp_path, ros_node):
    """Depth image, depth/camera_info and the TF-projected cloud, checked point by point to 1e-4 m."""
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from tf2_msgs.msg import TFMessage

    node, ex = ros_node
    proc = NodeProcess(tmp_path, params={"input_width": 320, "input_height": 96, "target_frame": "odom",
                                         "point_stride": 4, "tf_timeout": 0.5})
    try:
        _wait_ready(proc)
        W, H, fx = 640, 192, 300.0
        img_pub = node.create_publisher(Image, "image", _qos_sensor())
        info_pub = node.create_publisher(CameraInfo, "camera_info", 10)
        tf_pub = node.create_publisher(TFMessage, "/tf", 100)
        static_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        tfs_pub = node.create_publisher(TFMessage, "/tf_static", static_qos)
        depths, infos, clouds = [], [], []
        _collect(node, Image, "depth", depths)
        _collect(node, CameraInfo, "depth/camera_info", infos)
        _collect(node, PointCloud2, "points", clouds)

        # base_link -> optical frame (REP 103 rotation + offset), static.
        R_bo = np.array([[0, 0, 1], [-1, 0, 0], [0, -1, 0]], float)
        q_bo = Rotation.from_matrix(R_bo).as_quat()
        t_bo = np.array([1.2, 0.1, 1.6])
        tfs_pub.publish(TFMessage(transforms=[make_transform("base_link", OPT, 0, t_bo, q_bo)]))

        rgb = textured_image(W, H, seed=3)
        info = make_camera_info(W, H, fx, cx=318.2, cy=97.6)
        t0 = 1_000 * 1_000_000_000
        # odom -> base_link at t0-50ms and t0+50ms; the image at t0 sits exactly halfway.
        pa, pb = np.array([10.0, 2.0, 0.0]), np.array([11.0, 2.2, 0.05])
        ra = Rotation.from_euler("xyz", [0.01, -0.02, 0.3])
        rb = Rotation.from_euler("xyz", [0.015, -0.01, 0.35])
        ok = spin_until(node, lambda: proc.wait_for_log("ready", 0) and img_pub.get_subscription_count() > 0
                        and node.count_subscribers("/tf") > 0, 30, ex)
        assert ok, "node did not subscribe"
        for k in range(40):
            ts = t0 + k * 1_000_000  # distinct stamps; only frames at t0 + k ms
            tf_pub.publish(TFMessage(transforms=[
                make_transform("odom", "base_link", t0 - 50_000_000, pa, ra.as_quat()),
                make_transform("odom", "base_link", t0 + 100_000_000, pb, rb.as_quat())]))
            info.header.stamp.sec, info.header.stamp.nanosec = divmod(ts, 1_000_000_000)
            info_pub.publish(info)
            msg = make_image(rgb)
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(ts, 1_000_000_000)
            img_pub.publish(msg)
            if spin_until(node, lambda: len(clouds) > 0 and len(depths) > 0, 0.3, ex):
                break
        assert spin_until(node, lambda: clouds and depths and infos, 20, ex), f"no output\n{proc.log()}"

        cloud = clouds[0]
        stamp = _stamp_ns(cloud.header.stamp)
        depth_msg = next(d for d in depths if _stamp_ns(d.header.stamp) == stamp)
        info_msg = next(i for i in infos if _stamp_ns(i.header.stamp) == stamp)
        # Depth image: REP 118 encoding, network size, same stamp & optical frame as the input.
        assert depth_msg.encoding == "32FC1" and (depth_msg.width, depth_msg.height) == (320, 96)
        assert depth_msg.header.frame_id == OPT and depth_msg.step == 320 * 4
        depth = np.frombuffer(bytes(depth_msg.data), np.float32).reshape(96, 320)
        assert np.isfinite(depth).all() and depth.min() >= 0.1 - 1e-6 and depth.max() <= 100.0 + 1e-3
        # depth/camera_info: size of the depth image, K scaled from the input K.
        assert (info_msg.width, info_msg.height) == (320, 96) and info_msg.header.frame_id == OPT
        K_expected = scale_intrinsics(np.array(info.k).reshape(3, 3), 0.5, 0.5)
        np.testing.assert_allclose(np.array(info_msg.k).reshape(3, 3), K_expected, atol=1e-9)
        # Cloud: fields, frame = target_frame, organised at stride 4.
        assert [f.name for f in cloud.fields] == ["x", "y", "z", "rgb"]
        assert cloud.header.frame_id == "odom" and (cloud.width, cloud.height) == (80, 24)
        xyz = np.frombuffer(bytes(cloud.data), np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"),
                                                         ("rgb", "<u4")]))
        got = np.stack([xyz["x"], xyz["y"], xyz["z"]], 1).astype(np.float64)
        # Expected: back-project the published depth with the published K, then T_odom_opt at the stamp.
        a = (stamp - (t0 - 50_000_000)) / 150_000_000
        R_ob = Slerp([0, 1], Rotation.concatenate([ra, rb]))([a]).as_matrix()[0]
        t_ob = (1 - a) * pa + a * pb
        v, u = np.mgrid[0:96:4, 0:320:4].astype(np.float64)
        K = K_expected
        d = depth[::4, ::4].astype(np.float64)
        p_opt = np.stack([(u - K[0, 2]) / K[0, 0] * d, (v - K[1, 2]) / K[1, 1] * d, d], -1).reshape(-1, 3)
        p_base = p_opt @ R_bo.T + t_bo
        p_odom = p_base @ R_ob.T + t_ob
        err = np.abs(got - p_odom).max()
        assert err <= 1e-4, f"max point error {err} m"
        assert proc.alive()
    finally:
        proc.stop()


def test_latest_frame_policy_bounds_latency_and_counts_drops(tmp_path, ros_node):
    """30 Hz into a network slower than 33 ms: latency stays bounded, frames are dropped and counted."""
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image

    node, ex = ros_node
    # ResNet-18 at 640x192 takes ~100 ms on this CPU: well beyond the 33 ms frame period.
    proc = NodeProcess(tmp_path, params={"model": "monodepth2_resnet18", "publish_points": False,
                                         "num_threads": 1})
    try:
        _wait_ready(proc)
        img_pub = node.create_publisher(Image, "image", _qos_sensor())
        info_pub = node.create_publisher(CameraInfo, "camera_info", 10)
        lat, diags = [], []

        def on_depth(m):
            lat.append((time.time_ns() - _stamp_ns(m.header.stamp)) / 1e9)

        node.create_subscription(Image, "depth", on_depth, 10)
        _collect(node, DiagnosticArray, "/diagnostics", diags)
        assert spin_until(node, lambda: img_pub.get_subscription_count() > 0, 20, ex)
        W, H = 640, 192
        info = make_camera_info(W, H, 300.0)
        frames = [make_image(textured_image(W, H, seed=s)) for s in range(4)]
        period, n = 1 / 30, 240  # 8 s
        start = time.monotonic()
        for i in range(n):
            msg = frames[i % 4]
            now = time.time_ns()
            msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(now, 1_000_000_000)
            info.header.stamp = msg.header.stamp
            info_pub.publish(info)
            img_pub.publish(msg)
            spin_until(node, lambda: time.monotonic() >= start + (i + 1) * period, 1.0, ex)
        spin_until(node, lambda: False, 2.5, ex)  # let the last diagnostics arrive
        assert len(lat) >= 10, f"only {len(lat)} depth images\n{proc.log()}"
        lat = np.array(lat)
        third = len(lat) // 3
        first, last = np.median(lat[:third]), np.median(lat[-third:])
        # Bounded: no backlog means the latency at the end is not larger than at the start.
        assert last < first + 0.15, f"latency grew: first third {first:.3f}s, last third {last:.3f}s"
        # The first output carries the network's first-call warm-up (1.77 s in a loaded CI run): the bound is on
        # the steady state. A queue of frames behind a slower network would hold latency at seconds, not this.
        steady = lat[1:]
        assert np.median(steady[-third:]) < 0.5, f"steady latency {np.median(steady[-third:]):.3f}s"
        vals = {kv.key: kv.value for kv in diags[-1].status[0].values}
        dropped, processed = int(vals["frames_dropped"]), int(vals["frames_processed"])
        assert dropped > 0, vals
        assert processed < n and processed + dropped <= n
        print(f"\nlatest-frame policy: {len(lat)} outputs for {n} inputs, latency median first/last third "
              f"{first * 1e3:.0f}/{last * 1e3:.0f} ms, first output {lat[0] * 1e3:.0f} ms, then max "
              f"{steady.max() * 1e3:.0f} ms, dropped {dropped}")
    finally:
        proc.stop()
