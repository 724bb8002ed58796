"""``record`` writes rosbag2's metadata, read back with independent readers (issue 14 item 10).

A real publisher (this process, rclpy over DDS on loopback) with its own QoS; ``mono-depth record`` in a
real process; the bag read with the ``mcap`` + ``mcap-ros2-support`` PyPI readers, not rosbags.
"""
import os
import subprocess
import sys
import time

import pytest
import yaml

from .rosutil import ROOT

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_record_metadata_matches_rosbag2_and_reads_back_with_mcap(tmp_path):
    import rclpy
    from geometry_msgs.msg import TransformStamped
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String
    from tf2_msgs.msg import TFMessage

    out = tmp_path / "rec"
    rclpy.init()
    node = rclpy.create_node("record_metadata_publisher")
    try:
        chat_qos = QoSProfile(depth=7, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.BEST_EFFORT,
                              durability=DurabilityPolicy.VOLATILE)
        chat = node.create_publisher(String, "/rec_chatter", chat_qos)
        static = node.create_publisher(TFMessage, "/rec_tf_static", QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL))
        ts = TransformStamped()
        ts.header.frame_id, ts.child_frame_id = "base_link", "camera_link"
        ts.transform.translation.x = 1.5
        ts.transform.rotation.w = 1.0
        static.publish(TFMessage(transforms=[ts]))
        env = dict(os.environ, ROS_DISTRO="jazzy")
        rec = subprocess.Popen([sys.executable, "-m", "mono_depth_ros", "record", str(out), "--topics",
                                "/rec_chatter", "/rec_tf_static", "--duration", "4", "--wait", "10"], cwd=ROOT,
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        i, end = 0, time.monotonic() + 30
        while rec.poll() is None and time.monotonic() < end:
            chat.publish(String(data=f"hello {i}"))
            i += 1
            rclpy.spin_once(node, timeout_sec=0.05)
        log = rec.communicate(timeout=30)[0]
        assert rec.returncode == 0, log
    finally:
        node.destroy_node()
        rclpy.try_shutdown()

    meta = yaml.safe_load((out / "metadata.yaml").read_text())["rosbag2_bagfile_information"]
    assert meta["version"] == 9 and meta["ros_distro"] == "jazzy" and meta["storage_identifier"] == "mcap"
    topics = {t["topic_metadata"]["name"]: t["topic_metadata"] for t in meta["topics_with_message_count"]}
    q = topics["/rec_chatter"]["offered_qos_profiles"]
    assert isinstance(q, list) and len(q) == 1, q       # v9: a YAML list, one per publisher
    # What discovery tells (and so what rosbag2 writes too): reliability, durability, liveliness and
    # durations; history/depth are not sent over the wire (rmw reports unknown/0).
    assert (q[0]["reliability"], q[0]["durability"], q[0]["liveliness"]) == ("best_effort", "volatile", "automatic")
    assert q[0]["deadline"] == {"sec": 9223372036, "nsec": 854775807}   # rmw's "infinite"
    assert topics["/rec_tf_static"]["offered_qos_profiles"][0]["durability"] == "transient_local"
    assert topics["/rec_chatter"]["type_description_hash"].startswith("RIHS01_")

    (mcap_file,) = out.glob("*.mcap")
    with open(mcap_file, "rb") as fh:
        reader = make_reader(fh, decoder_factories=[DecoderFactory()])
        summary = reader.get_summary()
        channels = {c.topic: c for c in summary.channels.values()}
        assert channels["/rec_chatter"].metadata["topic_type_hash"] == topics["/rec_chatter"]["type_description_hash"]
        assert yaml.safe_load(channels["/rec_chatter"].metadata["offered_qos_profiles"]) == q
        embedded = next(m for m in reader.iter_metadata() if m.name == "rosbag2")
        inner = yaml.safe_load(embedded.metadata["serialized_metadata"])
        assert inner["ros_distro"] == "jazzy" and inner["version"] == 9
        texts, statics = [], []
        for _, channel, _, msg in reader.iter_decoded_messages():
            if channel.topic == "/rec_chatter":
                texts.append(msg.data)
            else:
                statics.append(msg)
    assert len(texts) >= 20 and all(t.startswith("hello ") for t in texts)
    nums = [int(t.split()[1]) for t in texts]
    assert nums == sorted(nums)
    assert statics and statics[0].transforms[0].child_frame_id == "camera_link"
    assert statics[0].transforms[0].transform.translation.x == 1.5


def test_ros_distro_defaults_to_kilted(monkeypatch):
    from mono_depth_ros.ros.record import ros_distro
    monkeypatch.delenv("ROS_DISTRO", raising=False)
    assert ros_distro() == "kilted"
    monkeypatch.setenv("ROS_DISTRO", "humble")
    assert ros_distro() == "humble"
