"""The ``pose`` ego-motion source: a localiser's PoseWithCovarianceStamped / PoseStamped (AMCL, robot_localization).

Fed through the one input table (``EgoMotionFeed.on_message("pose", msg)``, what the node and the bag
feeders call) with real rosbags message objects; then over a synthetic bag through ``train``'s pose pairs
and ``egomotion-eval``.
"""
import argparse
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mono_depth_ros.conventions import T_BASE_OPTICAL_ROTATION, Topics, to_ns
from mono_depth_ros.egomotion import EgoMotionConfig, PoseStatus, stamp_to_ns
from mono_depth_ros.egomotion import cli as ego_cli
from mono_depth_ros.egomotion.feed import EgoMotionFeed
from mono_depth_ros.tools.synth.bag import _Msgs

M = _Msgs()
T_OPT = np.eye(4)
T_OPT[:3, :3] = T_BASE_OPTICAL_ROTATION


def _T(x, y, yaw) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_euler("z", yaw).as_matrix()
    T[:2, 3] = x, y
    return T


def _msg(t_s, T, covariance=True, var=0.01, frame="map"):
    hdr = M.header(to_ns(t_s), frame)
    if not covariance:
        return M.t["geometry_msgs/msg/PoseStamped"](header=hdr, pose=M.pose(T))
    cov = np.diag([var, var, 1e3, 1e3, 1e3, var]).reshape(-1)
    return M.t["geometry_msgs/msg/PoseWithCovarianceStamped"](
        header=hdr, pose=M.t["geometry_msgs/msg/PoseWithCovariance"](pose=M.pose(T), covariance=cov))


def _feed():
    feed = EgoMotionFeed(EgoMotionConfig(priority=("pose",)))
    feed.set_extrinsics(T_OPT)
    return feed


@pytest.mark.parametrize("covariance", [True, False], ids=["PoseWithCovarianceStamped", "PoseStamped"])
def test_known_answer_arc(covariance):
    """x = 10 t along a 0.5 rad/s arc, poses at 20 Hz: base(0.6) <- base(0.4) is the closed form."""
    feed = _feed()
    for t in np.arange(0.0, 1.0001, 0.05):
        feed.on_message("pose", _msg(t, _T(10 * t, 2 * t * t, 0.5 * t), covariance))
    rp = feed.provider.relative_pose(to_ns(0.6), to_ns(0.4))
    assert rp.status is PoseStatus.OK and rp.source == "pose"
    T_exp = np.linalg.inv(_T(6.0, 0.72, 0.3)) @ _T(4.0, 0.32, 0.2)
    np.testing.assert_allclose(rp.T_base_target_source, T_exp, atol=1e-9)
    np.testing.assert_allclose(rp.T_target_source, T_OPT.T @ T_exp @ T_OPT, atol=1e-9)
    assert feed.provider.relative_pose(to_ns(1.05), to_ns(0.9)).status is PoseStatus.NOT_YET
    assert feed.egomotion_stats()["egomotion_source"] == "pose"


def test_refused_poses_are_counted():
    feed = _feed()
    for t in np.arange(0.0, 0.5001, 0.05):
        feed.on_message("pose", _msg(t, _T(10 * t, 0, 0)))
    feed.on_message("pose", _msg(0.52, _T(5.2, 0, 0), var=float("nan")))       # unknown covariance
    feed.on_message("pose", _msg(0.54, _T(5.4, 0, 0), var=1e9))                # "unknown" marker
    feed.on_message("pose", _msg(0.56, _T(5.6, 0, 0), frame="odom"))           # another world frame
    bad = _msg(0.58, _T(5.8, 0, 0))
    bad.pose.pose.orientation.w = 3.0                                           # not a rotation
    feed.on_message("pose", bad)
    c = feed.provider.counters
    assert (c["pose_received"], c["pose_rejected_covariance"], c["pose_ignored_other_frame"],
            c["pose_rejected_bad_values"]) == (15, 2, 1, 1)
    assert feed.provider.relative_pose(to_ns(0.55), to_ns(0.4)).status is PoseStatus.NOT_YET  # none entered
    feed.reset_time("test")                           # a reset forgets the world frame too
    feed.on_message("pose", _msg(10.0, _T(0, 0, 0), frame="odom"))
    assert feed.provider.counters["pose_ignored_other_frame"] == 1


@pytest.fixture(scope="module")
def pose_bag(tmp_path_factory):
    from mono_depth_ros.tools.synth.bag import generate_bag
    out = tmp_path_factory.mktemp("posebag") / "drive"
    return generate_bag(out, preset="A", seed=3, duration_s=4.0, width=64, height=24, progress=False,
                        contact_sheet=False, sensors=["camera", "pose_gt", "tf_static", "pose"])


def test_bag_paths_train_pairs_and_egomotion_eval(pose_bag, capsys):
    from mono_depth_ros import bagio
    from mono_depth_ros.learning.egoposes import egomotion_pairs

    assert bagio.bag_topics(pose_bag)[Topics.BAG_POSE] == "geometry_msgs/msg/PoseWithCovarianceStamped"
    stamps = [stamp_to_ns(m.header.stamp) for _, _, m in bagio.iter_messages(pose_bag, [Topics.BAG_IMAGE])]
    pairs = egomotion_pairs(pose_bag, stamps, EgoMotionConfig(priority=("pose",)))
    assert len(pairs) > 10 and set(pairs.source_used) == {"pose"}
    # egomotion-eval: only the pose source has inputs in this bag; its error vs ground truth is bounded by
    # the localiser's stated noise (2 cm, 0.1 deg white: a few % of 1 m of travel).
    parser = argparse.ArgumentParser()
    ego_cli.add_arguments(parser)
    assert ego_cli.main(parser.parse_args(["--bag", str(pose_bag), "--json"])) == 0
    rep = json.loads(capsys.readouterr().out)
    assert list(rep["sources"]) == ["pose"]
    s = rep["sources"]["pose"]
    assert s["n"] > 20 and s["coverage"] == 1.0
    assert 0.5 < s["t_err_median_pct"] < 10.0 and s["r_err_median_deg"] < 0.5
