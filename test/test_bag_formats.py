"""Bags as users share them (issue 14): a bare .mcap / .db3 file, and ROS 1 .bag files."""
import shutil
import subprocess
import sys

import pytest

from .rosutil import ROOT

pytestmark = [pytest.mark.slow]


@pytest.fixture(scope="module")
def bare_mcap(tmp_path_factory):
    """A synthetic drive's storage file on its own, without its rosbag2 folder (no metadata.yaml)."""
    from mono_depth_ros.synth import generate_bag
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
    from mono_depth_ros.synth import generate_bag
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
