"""Bags as users share them (issue 14): a bare .mcap / .db3 file, and ROS 1 .bag files."""
import shutil
import subprocess
import sys
import time

import pytest

from .rosutil import ROOT

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def bare_mcap(tmp_path_factory):
    """A synthetic drive's storage file on its own, without its rosbag2 folder (no metadata.yaml)."""
    from mono_depth_ros.tools.synth import generate_bag
    d = tmp_path_factory.mktemp("bare")
    bag = generate_bag(d / "drive", preset="A", seed=4, duration_s=2.0, width=128, height=64, progress=False,
                       contact_sheet=False, sensors="camera,depth_gt,pose_gt,odom,tf,tf_static")
    (mcap,) = bag.glob("*.mcap")
    bare = d / "shared" / "drive.mcap"
    bare.parent.mkdir()
    shutil.copy(mcap, bare)
    return bare


def _cli(*argv, timeout=240):
    return subprocess.run([sys.executable, "-m", "mono_depth_ros", *map(str, argv)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_bare_mcap_and_db3_open_like_a_folder(bare_mcap, tmp_path):
    from mono_depth_ros.bagio import bag_topics, iter_messages
    from mono_depth_ros.tools.synth import generate_bag
    topics = bag_topics(bare_mcap)
    assert topics["/camera/image_raw"] == "sensor_msgs/msg/Image"
    assert sum(1 for _ in iter_messages(bare_mcap, ["/camera/image_raw"])) == 21
    db = generate_bag(tmp_path / "db", preset="A", seed=4, duration_s=1.0, width=64, height=32, progress=False,
                      contact_sheet=False, sensors="odom,tf_static", storage="sqlite3")
    (db3,) = db.glob("*.db3")
    bare_db3 = tmp_path / "drive.db3"
    shutil.copy(db3, bare_db3)
    assert bag_topics(bare_db3) == bag_topics(db) == {"/odom": "nav_msgs/msg/Odometry",
                                                      "/tf_static": "tf2_msgs/msg/TFMessage"}


@pytest.mark.ros
def test_replay_a_bare_mcap(bare_mcap):
    r = _cli("replay", bare_mcap, "--quiet", "--rate", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "replayed" in r.stdout and "no metadata.yaml" not in r.stdout
    n = int(r.stdout.split("replayed ")[1].split()[0])
    assert n >= 20 * 4   # image, depth, pose, odom (+ tf)


def test_evaluate_adapt_and_egomotion_eval_open_a_bare_mcap(bare_mcap, tmp_path):
    r = _cli("evaluate", "--bag", bare_mcap, "--size", "bag", "--max-frames", "4")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "AbsRel" in r.stdout or "abs_rel" in r.stdout
    r = _cli("egomotion-eval", "--bag", bare_mcap, "--sources", "odom", "tf", "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    r = _cli("adapt", bare_mcap, "--out", tmp_path / "a.pt", "--steps-per-frame", "0.1", "--anchor", "none",
             "--eval-every", "0", "--quiet", "--train-size", "64x128")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "a.pt").exists()


# --- ROS 1 bags (item 7) ------------------------------------------------------------------------------------

STAMP0 = 1_700_000_000_000_000_000


def _write_ros1_bag(path, with_custom=False):
    """A ROS 1 bag written with rosbags' rosbag1 writer: Image, CameraInfo, Odometry, TFMessage (5 each)."""
    import numpy as np
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    ts.register(get_types_from_msg("geometry_msgs/TransformStamped[] transforms", "tf2_msgs/msg/TFMessage"))
    if with_custom:
        ts.register(get_types_from_msg("float64 value\nstring note", "my_pkg/msg/Blob"))
    M = ts.types
    Time, Header = M["builtin_interfaces/msg/Time"], M["std_msgs/msg/Header"]
    Vec, Pt, Quat = M["geometry_msgs/msg/Vector3"], M["geometry_msgs/msg/Point"], M["geometry_msgs/msg/Quaternion"]
    with Writer(path) as w:
        conns = {
            "/camera/image_raw": w.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=ts),
            "/camera/camera_info": w.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo",
                                                    typestore=ts),
            "/odom": w.add_connection("/odom", "nav_msgs/msg/Odometry", typestore=ts),
            "/tf": w.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=ts),
        }
        if with_custom:
            conns["/custom"] = w.add_connection("/custom", "my_pkg/msg/Blob", typestore=ts)
        for k in range(5):
            ns = STAMP0 + k * 100_000_000
            hdr = Header(seq=k, stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="camera_optical_frame")
            rgb = np.arange(4 * 3 * 3, dtype=np.uint8).reshape(3, 4, 3) + k
            msgs = {
                "/camera/image_raw": M["sensor_msgs/msg/Image"](
                    header=hdr, height=3, width=4, encoding="rgb8", is_bigendian=0, step=12, data=rgb.ravel()),
                "/camera/camera_info": M["sensor_msgs/msg/CameraInfo"](
                    header=hdr, height=3, width=4, distortion_model="plumb_bob", D=np.zeros(5),
                    K=np.array([50.0, 0, 2, 0, 50, 1.5, 0, 0, 1]), R=np.eye(3).ravel(),
                    P=np.array([50.0, 0, 2, 0, 0, 50, 1.5, 0, 0, 0, 1, 0]), binning_x=0, binning_y=0,
                    roi=M["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                              do_rectify=False)),
                "/odom": M["nav_msgs/msg/Odometry"](
                    header=Header(seq=k, stamp=hdr.stamp, frame_id="odom"), child_frame_id="base_link",
                    pose=M["geometry_msgs/msg/PoseWithCovariance"](
                        pose=M["geometry_msgs/msg/Pose"](position=Pt(x=float(k), y=2.0, z=0.0),
                                                         orientation=Quat(x=0.0, y=0.0, z=0.0, w=1.0)),
                        covariance=np.zeros(36)),
                    twist=M["geometry_msgs/msg/TwistWithCovariance"](
                        twist=M["geometry_msgs/msg/Twist"](linear=Vec(x=10.0, y=0.0, z=0.0),
                                                           angular=Vec(x=0.0, y=0.0, z=0.1)),
                        covariance=np.zeros(36))),
                "/tf": M["tf2_msgs/msg/TFMessage"](transforms=[M["geometry_msgs/msg/TransformStamped"](
                    header=Header(seq=k, stamp=hdr.stamp, frame_id="odom"), child_frame_id="base_link",
                    transform=M["geometry_msgs/msg/Transform"](translation=Vec(x=float(k), y=2.0, z=0.0),
                                                               rotation=Quat(x=0.0, y=0.0, z=0.0, w=1.0)))]),
            }
            if with_custom:
                msgs["/custom"] = M["my_pkg/msg/Blob"](value=1.0, note="x")
            for topic, msg in msgs.items():
                w.write(conns[topic], ns, ts.serialize_ros1(msg, conns[topic].msgtype))


@pytest.mark.ros
def test_ros1_bag_replays_as_ros2_messages(tmp_path):
    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import CameraInfo, Image
    from tf2_msgs.msg import TFMessage

    bag = tmp_path / "drive.bag"
    _write_ros1_bag(bag)
    got = {"/camera/image_raw": [], "/camera/camera_info": [], "/odom": [], "/tf": []}
    rclpy.init()
    node = rclpy.create_node("ros1_replay_listener")
    try:
        for topic, cls in (("/camera/image_raw", Image), ("/camera/camera_info", CameraInfo), ("/odom", Odometry),
                           ("/tf", TFMessage)):
            node.create_subscription(cls, topic, lambda m, t=topic: got[t].append(m), QoSProfile(depth=100))
        player = subprocess.Popen([sys.executable, "-m", "mono_depth_ros", "replay", str(bag), "--quiet",
                                   "--no-clock", "--wait-subscribers", "15"], cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True)
        end = time.monotonic() + 40
        while time.monotonic() < end and (player.poll() is None or min(map(len, got.values())) < 5):
            rclpy.spin_once(node, timeout_sec=0.05)
            if player.poll() is not None and time.monotonic() > end - 35 and min(map(len, got.values())) < 5:
                end = min(end, time.monotonic() + 3)     # the player is done: a little more for the last ones
        out = player.communicate(timeout=10)[0]
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    assert player.returncode == 0 and "replayed 20 messages" in out, out
    # Delivery over DDS on a loaded 2-core machine may lose a sample at start (discovery): every message that
    # arrived must be the right conversion of the one with its stamp, and nearly all must arrive.
    assert all(len(v) >= 4 for v in got.values()), ({t: len(v) for t, v in got.items()}, out)

    def index(msg):
        stamp = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        k, rest = divmod(stamp - STAMP0, 100_000_000)
        assert rest == 0 and 0 <= k < 5, stamp
        return k

    for img in got["/camera/image_raw"]:
        k = index(img)
        assert (img.width, img.height, img.encoding, img.step) == (4, 3, "rgb8", 12)
        assert bytes(img.data) == bytes(range(k, k + 36))
        assert img.header.frame_id == "camera_optical_frame"
    for info in got["/camera/camera_info"]:
        index(info)
        assert list(info.k) == [50.0, 0, 2, 0, 50, 1.5, 0, 0, 1] and info.distortion_model == "plumb_bob"
        assert len(info.d) == 5 and list(info.p)[:3] == [50.0, 0, 2]
    for odom in got["/odom"]:
        k = index(odom)
        assert (odom.pose.pose.position.x, odom.pose.pose.position.y, odom.child_frame_id) == (k, 2.0, "base_link")
        assert (odom.twist.twist.linear.x, odom.twist.twist.angular.z) == (10.0, 0.1)
    for tf in got["/tf"]:
        (t,) = tf.transforms
        k = index(t)
        assert (t.header.frame_id, t.child_frame_id, t.transform.translation.x) == ("odom", "base_link", k)


@pytest.mark.ros
def test_ros1_types_without_a_ros2_equivalent_are_refused_by_name(tmp_path):
    bag = tmp_path / "custom.bag"
    _write_ros1_bag(bag, with_custom=True)
    r = _cli("replay", bag, "--quiet", "--no-clock", timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "/custom (my_pkg/msg/Blob)" in r.stdout and "no ROS 2 equivalent" in r.stdout
    r = _cli("replay", bag, "--quiet", "--no-clock", "--rate", "5", "--topics", "/odom", "/tf", timeout=60)
    assert r.returncode == 0 and "replayed 10 messages" in r.stdout, r.stdout + r.stderr


def test_ros1_bag_reads_as_ros2_messages_in_the_offline_tools(tmp_path, capsys):
    """evaluate / adapt / egomotion-eval read bags through bagio.iter_messages: ROS 1 comes out as ROS 2."""
    from mono_depth_ros.bagio import iter_messages
    from mono_depth_ros.egomotion import cli as ego_cli
    bag = tmp_path / "drive.bag"
    _write_ros1_bag(bag, with_custom=True)
    with pytest.warns(UserWarning, match="/custom"):
        msgs = list(iter_messages(bag))
    info = next(m for t, _, m in msgs if t == "/camera/camera_info")
    assert list(info.k)[:3] == [50.0, 0, 2] and not hasattr(info.header, "seq")
    motion = ego_cli.load_bag(bag)
    assert [k for k, _ in motion.events].count("odometry") == 5 and [k for k, _ in motion.events].count("tf") == 5
    assert motion.events[0][1].frame_id == "odom"
