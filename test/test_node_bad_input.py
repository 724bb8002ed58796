"""Bad input into depth_node over real DDS: one clear throttled error each, the node keeps running
and resumes when good input arrives. Also: parameter validation at start and at runtime."""
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from .rosutil import ROOT, NodeProcess, make_camera_info, make_image, spin_until, textured_image
from .test_node_dds import _qos_sensor, _wait_ready, ros_node  # noqa: F401  (fixture)

rclpy = pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow]

W, H = 320, 96


def _pump(node, ex, pubs, make_msgs, seconds):
    """Publish make_msgs() pairs at ~20 Hz for ``seconds``."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for pub, msg in zip(pubs, make_msgs()):
            if msg is not None:
                pub.publish(msg)
        spin_until(node, lambda: False, 0.05, ex)


@pytest.mark.faults
def test_bad_inputs_logged_once_node_survives_and_resumes(tmp_path, ros_node):
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    node, ex = ros_node
    proc = NodeProcess(tmp_path, params={"input_width": W, "input_height": H, "error_throttle": 60.0,
                                         "target_frame": "odom", "tf_timeout": 0.05})
    try:
        _wait_ready(proc)
        img_pub = node.create_publisher(Image, "image", _qos_sensor())
        info_pub = node.create_publisher(CameraInfo, "camera_info", 10)
        depths, clouds = [], []
        node.create_subscription(Image, "depth", lambda m: depths.append(m), 10)
        node.create_subscription(PointCloud2, "points", lambda m: clouds.append(m), 10)
        assert spin_until(node, lambda: img_pub.get_subscription_count() > 0, 20, ex)
        good = make_image(textured_image(W, H))
        info = make_camera_info(W, H, 200.0)

        # 1. Images but no camera_info yet.
        _pump(node, ex, [img_pub], lambda: [good], 1.0)
        assert proc.wait_for_log("no camera_info received", 5)
        assert not depths

        # 2. camera_info whose size differs from the image.
        _pump(node, ex, [info_pub, img_pub], lambda: [make_camera_info(640, 480, 200.0), good], 1.0)
        assert proc.wait_for_log("camera_info size 640x480 differs from image size 320x96", 5)
        assert not depths

        # 3. Unsupported encoding.
        bad_enc = make_image(textured_image(W, H))
        bad_enc.encoding = "yuv_fancy_42"
        _pump(node, ex, [info_pub, img_pub], lambda: [info, bad_enc], 1.0)
        assert proc.wait_for_log("unsupported image encoding 'yuv_fancy_42'", 5)

        # 4. Zero-size image.
        zero = make_image(np.zeros((1, 1, 3), np.uint8))
        zero.height = zero.width = 0
        zero.data = b""
        _pump(node, ex, [img_pub], lambda: [zero], 1.0)
        assert proc.wait_for_log("image has zero size (0x0)", 5)

        # 5. Truncated data.
        trunc = make_image(textured_image(W, H))
        trunc.data = bytes(trunc.data)[: W * 3 * 10]
        _pump(node, ex, [img_pub], lambda: [trunc], 1.0)
        assert proc.wait_for_log("truncated image data", 5)
        assert not depths and proc.alive()

        # 6. Good input: depth resumes; the cloud needs TF that nobody publishes -> dropped with a warning.
        _pump(node, ex, [info_pub, img_pub], lambda: [info, good], 2.0)
        assert spin_until(node, lambda: len(depths) > 3, 10, ex), proc.log()
        assert proc.wait_for_log("input OK again", 5)
        assert proc.wait_for_log("point cloud dropped: no transform odom <- camera_optical_frame", 5)
        assert not clouds

        # Throttled: each problem appears once although it was sent ~20 times.
        log = proc.log()
        for text in ("no camera_info received", "differs from image size", "unsupported image encoding",
                     "image has zero size", "truncated image data", "point cloud dropped"):
            assert log.count(text) == 1, f"{text!r} logged {log.count(text)} times\n{log}"
        assert proc.alive()
    finally:
        assert proc.stop() == 0, "node did not shut down cleanly on SIGINT"


@pytest.mark.faults
def test_compressed_input_and_corrupt_compressed(tmp_path, ros_node):
    from sensor_msgs.msg import CameraInfo, CompressedImage, Image

    node, ex = ros_node
    proc = NodeProcess(tmp_path, params={"input_width": W, "input_height": H, "use_compressed": True,
                                         "publish_points": False})
    try:
        _wait_ready(proc)
        pub = node.create_publisher(CompressedImage, "image/compressed", _qos_sensor())
        info_pub = node.create_publisher(CameraInfo, "camera_info", 10)
        depths = []
        node.create_subscription(Image, "depth", lambda m: depths.append(m), 10)
        assert spin_until(node, lambda: pub.get_subscription_count() > 0, 20, ex)
        rgb = textured_image(2 * W, 2 * H)
        ok, jpg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        good = CompressedImage(format="jpeg", data=jpg.tobytes())
        good.header.frame_id = "camera_optical_frame"
        corrupt = CompressedImage(format="jpeg", data=b"\xff\xd8garbage" * 10)
        info = make_camera_info(2 * W, 2 * H, 400.0)
        _pump(node, ex, [info_pub, pub], lambda: [info, corrupt], 1.0)
        assert proc.wait_for_log("could not be decoded", 5)
        _pump(node, ex, [info_pub, pub], lambda: [info, good], 2.0)
        assert spin_until(node, lambda: len(depths) > 0, 10, ex), proc.log()
        assert (depths[0].width, depths[0].height) == (W, H)
    finally:
        proc.stop()


@pytest.mark.faults
@pytest.mark.parametrize("param,value,expect", [
    ("min_depth", "-1.0", "min_depth"),
    ("device", "tpu", "'device' = 'tpu' is not one of"),
    ("input_width", "650", "input_width"),
    ("model", "resnet999", "'model' = 'resnet999' is not one of"),
])
def test_invalid_parameters_refused_at_start(param, value, expect):
    r = subprocess.run([sys.executable, "-m", "mono_depth_ros.ros.depth_node", "--ros-args", "-p",
                        f"{param}:={value}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "cannot start" in r.stderr and expect in r.stderr, r.stderr


@pytest.mark.faults
def test_invalid_runtime_change_refused(tmp_path, ros_node):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    node, ex = ros_node
    proc = NodeProcess(tmp_path, params={"input_width": W, "input_height": H})
    try:
        _wait_ready(proc)
        cli = node.create_client(SetParameters, "/mono_depth/set_parameters")
        assert cli.wait_for_service(timeout_sec=20)

        def set_param(name, value):
            if isinstance(value, bool):
                pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
            elif isinstance(value, int):
                pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
            elif isinstance(value, float):
                pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
            else:
                pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
            fut = cli.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=pv)]))
            assert spin_until(node, fut.done, 10, ex)
            return fut.result().results[0]

        assert set_param("point_stride", 4).successful
        r = set_param("point_stride", 1000)
        assert not r.successful and "point_stride" in r.reason
        r = set_param("voxel_size", -1.0)
        assert not r.successful
        r = set_param("input_width", 320)  # shape-affecting: read-only
        assert not r.successful and "read-only" in r.reason, r.reason
        assert proc.alive()
    finally:
        proc.stop()
