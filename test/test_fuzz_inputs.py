"""Property-based fuzzing of the message decoders and the ego-motion provider (issue 14, deliver 4).

Random and mutated Image, CompressedImage, CameraInfo, Odometry, Imu, NavSatFix and TFMessage messages
(real rclpy message classes) go through the same functions the node calls:

* ``ros/conversions.py``: ``image_to_rgb`` / ``compressed_to_rgb`` (the network's input) and
  ``camera_info_to_K``: each returns a valid value or raises the package's ``InputError``; nothing else;
* ``egomotion/samples.py`` converters + ``EgoMotionProvider.add_*``: never raise (bad samples are counted
  and refused); every pose the provider answers with is finite and a rigid transform.

The number of cases is printed at the end of the module (docs/hardening.md quotes it).
"""
import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

pytest.importorskip("rclpy")

pytestmark = [pytest.mark.faults]

CASES = {}
SETTINGS = dict(deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow,
                                                                        HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def report_case_count(request):
    yield
    total = sum(v for k, v in CASES.items() if k not in ("motion messages", "poses checked"))
    line = f"fuzz cases: {total} (" + ", ".join(f"{k} {v}" for k, v in sorted(CASES.items())) + ")"
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line)
    print(line)


def _count(name):
    CASES[name] = CASES.get(name, 0) + 1


# ------------------------------------------------------------------ value strategies

u32 = st.one_of(st.integers(0, 64), st.sampled_from([0, 1, 2**31 - 1, 2**31, 2**32 - 1]),
                st.integers(0, 2**32 - 1))
i32 = st.integers(-2**31, 2**31 - 1)
any_float = st.floats(allow_nan=True, allow_infinity=True)
weird_float = st.one_of(st.sampled_from([0.0, -0.0, 1.0, -1.0, 1e-308, 1e308, -1e308, math.nan, math.inf,
                                         -math.inf, 5e-324]), any_float)
small_float = st.floats(-50, 50, allow_nan=False, allow_infinity=False)
maybe_weird = st.one_of(small_float, small_float, weird_float)    # mostly plausible, sometimes broken
frames = st.one_of(st.sampled_from(["odom", "base_link", "/odom", "map", "camera_optical_frame", ""]),
                   st.text(max_size=12))
ENCODINGS = ["rgb8", "bgr8", "mono8", "rgba8", "bgra8", "mono16", "16UC1", "32FC1", "rgb16", "bayer_rggb8",
             "bayer_bggr16", "yuv422", "8UC3", "16SC1", "64FC1", "8UC4", "uyvy", "nv21"]


def _stamp(msg_header, sec, nanosec):
    msg_header.stamp.sec, msg_header.stamp.nanosec = sec, nanosec


# ------------------------------------------------------------------ images

@st.composite
def images(draw):
    from sensor_msgs.msg import Image
    msg = Image()
    if draw(st.booleans()):                          # mutated valid image
        enc = draw(st.sampled_from(["rgb8", "bgr8", "mono8", "rgba8", "16UC1", "32FC1", "bayer_rggb8", "mono16"]))
        h, w = draw(st.integers(1, 12)), draw(st.integers(1, 12))
        bpp = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "16UC1": 2, "32FC1": 4, "bayer_rggb8": 1,
               "mono16": 2}[enc]
        pad = draw(st.integers(0, 5))
        step = w * bpp + pad
        if enc == "32FC1":
            with np.errstate(over="ignore"):
                vals = np.asarray(draw(st.lists(weird_float, min_size=h * w, max_size=h * w)), np.float32)
            rows = vals.reshape(h, w).view(np.uint8).reshape(h, w * 4)
            data = np.concatenate([rows, np.zeros((h, pad), np.uint8)], axis=1).tobytes()
        else:
            data = draw(st.binary(min_size=step * h, max_size=step * h))
        msg.height, msg.width, msg.encoding, msg.step = h, w, enc, step
        mutation = draw(st.sampled_from(["none", "truncate", "extend", "width", "height", "step", "encoding",
                                         "endian"]))
        if mutation == "truncate":
            data = data[:draw(st.integers(0, max(len(data) - 1, 0)))]
        elif mutation == "extend":
            data += draw(st.binary(max_size=64))
        elif mutation == "width":
            msg.width = draw(u32)
        elif mutation == "height":
            msg.height = draw(u32)
        elif mutation == "step":
            msg.step = draw(u32)
        elif mutation == "encoding":
            msg.encoding = draw(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=10)))
        elif mutation == "endian":
            msg.is_bigendian = 1
        msg.data = data
    else:                                             # random fields
        msg.height, msg.width, msg.step = draw(u32), draw(u32), draw(u32)
        msg.encoding = draw(st.one_of(st.sampled_from(ENCODINGS), st.text(max_size=10)))
        msg.is_bigendian = draw(st.integers(0, 255))
        msg.data = draw(st.binary(max_size=600))
    return msg


@settings(max_examples=1500, **SETTINGS)
@given(images())
def test_image_decoder(msg):
    from mono_depth_ros.ros.conversions import InputError, image_to_rgb
    _count("Image")
    try:
        rgb = image_to_rgb(msg)
    except InputError as exc:
        assert str(exc)
        return
    assert rgb.dtype == np.uint8 and rgb.shape == (msg.height, msg.width, 3)


@st.composite
def compressed_images(draw):
    import cv2
    from sensor_msgs.msg import CompressedImage
    msg = CompressedImage()
    msg.format = draw(st.sampled_from(["jpeg", "png", "rgb8; jpeg compressed bgr8", "", "tiff"]))
    if draw(st.booleans()):
        h, w = draw(st.integers(1, 24)), draw(st.integers(1, 24))
        img = np.frombuffer(draw(st.binary(min_size=h * w * 3, max_size=h * w * 3)), np.uint8).reshape(h, w, 3)
        ok, buf = cv2.imencode(draw(st.sampled_from([".jpg", ".png"])), img)
        data = bytearray(buf.tobytes())
        for _ in range(draw(st.integers(0, 4))):     # flip bytes (headers included)
            i = draw(st.integers(0, len(data) - 1))
            data[i] = draw(st.integers(0, 255))
        if draw(st.booleans()):
            data = data[:draw(st.integers(0, len(data)))]
        msg.data = bytes(data)
    else:
        msg.data = draw(st.binary(max_size=300))
    return msg


@settings(max_examples=800, **SETTINGS)
@given(compressed_images())
def test_compressed_image_decoder(msg):
    from mono_depth_ros.ros.conversions import InputError, compressed_to_rgb
    _count("CompressedImage")
    try:
        rgb = compressed_to_rgb(msg)
    except InputError as exc:
        assert str(exc)
        return
    assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.size > 0


@settings(max_examples=800, **SETTINGS)
@given(k=st.lists(maybe_weird, min_size=9, max_size=9), width=u32, height=u32,
       d=st.lists(weird_float, max_size=14), model=st.text(max_size=12), plausible=st.booleans())
def test_camera_info_decoder(k, width, height, d, model, plausible):
    from sensor_msgs.msg import CameraInfo

    from mono_depth_ros.ros.conversions import InputError, camera_info_to_K
    _count("CameraInfo")
    info = CameraInfo()
    if plausible:                                      # a real K with one field broken
        k = [500.0, 0.0, 320.0, 0.0, 500.0, 240.0, 0.0, 0.0, 1.0][:] if k[0] > 0 else k
        k[abs(hash(tuple(map(str, d)))) % 9] = d[0] if d else k[0]
    info.k, info.width, info.height, info.d, info.distortion_model = k, width, height, d, model
    try:
        K = camera_info_to_K(info)
    except InputError as exc:
        assert str(exc)
        return
    assert np.all(np.isfinite(K)) and K[0, 0] > 0 and K[1, 1] > 0
    assert np.all(np.isfinite(np.linalg.inv(K))), K


# ------------------------------------------------------------------ ego-motion messages -> provider

def _quat(draw):
    kind = draw(st.sampled_from(["unit", "unit", "random", "zero", "scaled"]))
    if kind == "unit":
        q = np.asarray(draw(st.lists(st.floats(-1, 1), min_size=4, max_size=4)))
        n = np.linalg.norm(q)
        return list(q / n) if n > 1e-3 else [0.0, 0.0, 0.0, 1.0]
    if kind == "zero":
        return [0.0, 0.0, 0.0, 0.0]
    q = draw(st.lists(maybe_weird, min_size=4, max_size=4))
    return [v * 3 for v in q] if kind == "scaled" else q


@st.composite
def motion_messages(draw):
    """A short stream of odometry / TF / IMU / GPS messages, mostly on a plausible drive, partly broken."""
    from geometry_msgs.msg import TransformStamped
    from nav_msgs.msg import Odometry
    from sensor_msgs.msg import Imu, NavSatFix
    from tf2_msgs.msg import TFMessage

    n = draw(st.integers(1, 40))
    t0 = draw(st.sampled_from([0, 1_700_000_000, 2**31 - 100]))
    out = []
    for k in range(n):
        broken = draw(st.integers(0, 5)) == 0
        sec = t0 + k // 10 if not (broken and draw(st.booleans())) else draw(i32)
        nanosec = (k % 10) * 100_000_000 if not broken else draw(u32)
        kind = draw(st.sampled_from(["odom", "tf", "imu", "gps"]))
        v = maybe_weird if broken else small_float
        if kind == "odom":
            m = Odometry()
            _stamp(m.header, sec, nanosec)
            m.header.frame_id, m.child_frame_id = ("odom", "base_link") if not broken else (draw(frames), draw(frames))
            p = m.pose.pose.position
            p.x, p.y, p.z = k * 0.5 + draw(v) * 0.01, draw(v) * 0.01, draw(v) * 0.01
            if broken:
                p.x = draw(maybe_weird)
            o = m.pose.pose.orientation
            o.x, o.y, o.z, o.w = _quat(draw) if broken else [0.0, 0.0, 0.0, 1.0]
            t = m.twist.twist
            t.linear.x, t.linear.y, t.angular.z = draw(v), draw(v), draw(v) * 0.01
            m.pose.covariance = draw(st.lists(maybe_weird, min_size=36, max_size=36)) if broken else [0.01] * 36
            out.append(("odom", m))
        elif kind == "tf":
            m = TFMessage()
            for _ in range(draw(st.integers(0, 3))):
                ts = TransformStamped()
                _stamp(ts.header, sec, nanosec)
                ts.header.frame_id, ts.child_frame_id = ("odom", "base_link") if not broken else (
                    draw(frames), draw(frames))
                tr = ts.transform.translation
                tr.x, tr.y, tr.z = k * 0.5 + (draw(maybe_weird) if broken else 0.0), 0.0, 0.0
                r = ts.transform.rotation
                r.x, r.y, r.z, r.w = _quat(draw) if broken else [0.0, 0.0, 0.0, 1.0]
                m.transforms.append(ts)
            out.append(("tf", m))
        elif kind == "imu":
            m = Imu()
            _stamp(m.header, sec, nanosec)
            m.header.frame_id = "base_link"
            m.angular_velocity.x, m.angular_velocity.y, m.angular_velocity.z = draw(v), draw(v), draw(v)
            a = m.linear_acceleration
            a.x, a.y, a.z = draw(v), draw(v), 9.81 + draw(v)
            o = m.orientation
            o.x, o.y, o.z, o.w = _quat(draw)
            if draw(st.booleans()):
                m.orientation_covariance = [-1.0] + [0.0] * 8
            out.append(("imu", m))
        else:
            m = NavSatFix()
            _stamp(m.header, sec, nanosec)
            m.status.status = draw(st.sampled_from([-1, 0, 1, 2])) if broken else 0
            m.latitude = 48.0 + k * 1e-5 if not broken else draw(weird_float)
            m.longitude = 11.0 if not broken else draw(weird_float)
            m.altitude = 500.0 if not broken else draw(weird_float)
            m.position_covariance = draw(st.lists(maybe_weird, min_size=9, max_size=9)) if broken else [1.0] * 9
            m.position_covariance_type = draw(st.integers(0, 3))
            out.append(("gps", m))
    return out


def _assert_rigid(T):
    assert T.shape == (4, 4) and np.all(np.isfinite(T)), T
    R = T[:3, :3]
    assert np.abs(R.T @ R - np.eye(3)).max() < 1e-6 and abs(np.linalg.det(R) - 1) < 1e-6, T
    assert np.array_equal(T[3], [0, 0, 0, 1])


def test_absurd_but_finite_odometry_gives_no_non_finite_pose():
    """Found by the fuzzer: +-1e308 m positions / m/s speeds overflowed into NaN poses marked OK."""
    from mono_depth_ros.egomotion import SOURCES, EgoMotionConfig, EgoMotionProvider, OdometrySample
    p = EgoMotionProvider(EgoMotionConfig())
    for k, x in enumerate([1e308, -1e308, 1e308, -1e308]):
        p.add_odometry(OdometrySample(k * 100_000_000, [x, 0, 0], [0, 0, 0, 1], [1e308, 0, 0], [0, 0, 0],
                                      np.eye(6) * 0.01))
    for src in SOURCES:
        rp = p.relative_pose(200_000_000, 100_000_000, [src])       # 1e308 - (-1e308) m: overflows
        assert not rp.ok and rp.T_target_source is None
    assert p.counters["query_non_finite_odom"] >= 1


@settings(max_examples=800, **SETTINGS)
@given(msgs=motion_messages(), queries=st.lists(st.tuples(st.integers(0, 45), st.integers(0, 45)), max_size=10))
def test_egomotion_provider(msgs, queries):
    from mono_depth_ros.egomotion import SOURCES, EgoMotionConfig, EgoMotionProvider
    from mono_depth_ros.egomotion.samples import (from_imu_msg, from_navsatfix_msg, from_odometry_msg,
                                                  from_tf_message)
    _count("motion streams")
    CASES["motion messages"] = CASES.get("motion messages", 0) + len(msgs)
    provider = EgoMotionProvider(EgoMotionConfig())
    stamps = []
    for kind, m in msgs:
        if kind == "odom":
            s = from_odometry_msg(m)
            provider.add_odometry(s)
        elif kind == "tf":
            for s in from_tf_message(m):
                provider.add_transform(s)
        elif kind == "imu":
            s = from_imu_msg(m)
            provider.add_imu(s)
        else:
            s = from_navsatfix_msg(m)
            provider.add_gps(s)
        if kind != "tf":
            stamps.append(s.stamp_ns)
    if not stamps:
        return
    stamps = sorted(stamps)
    for a, b in queries:
        t_target, t_source = stamps[a % len(stamps)], stamps[b % len(stamps)]
        for src in SOURCES:
            rp = provider.relative_pose(t_target, t_source, [src])
            if rp.ok:
                _assert_rigid(rp.T_target_source)
                CASES["poses checked"] = CASES.get("poses checked", 0) + 1
    assert all(isinstance(v, int) for v in provider.counters.values())
