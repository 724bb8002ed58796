"""Offline path: the same relative poses from Odometry samples, TF samples and a bag; the CLI."""
import argparse
import json

import numpy as np
import pytest

from mono_depth_ros.egomotion import EgoMotionConfig, EgoMotionProvider, PoseStatus
from mono_depth_ros.egomotion import cli as ego_cli
from mono_depth_ros.egomotion.simulate import simulate_drive, write_drive_bag

pytest.importorskip("rosbags")


@pytest.fixture(scope="module")
def drive_bag(tmp_path_factory):
    d = simulate_drive(12.0, seed=5)
    path = tmp_path_factory.mktemp("ego") / "drive"
    write_drive_bag(d, path)
    return d, path


def poses(provider, stamps, source):
    out = []
    for s, t in zip(stamps[:-3], stamps[3:]):
        rp = provider.relative_pose(int(t), int(s), [source])
        assert rp.status is PoseStatus.OK and rp.source == source
        out.append(rp.T_target_source)
    return np.asarray(out)


def test_odometry_tf_and_bag_give_the_same_relative_poses(drive_bag):
    d, path = drive_bag
    from_odom = EgoMotionProvider(EgoMotionConfig(priority=("odom",)), d.T_base_camera)
    d.feed(from_odom, ("odometry",))
    from_tf = EgoMotionProvider(EgoMotionConfig(priority=("tf",)), d.T_base_camera)
    d.feed(from_tf, ("transforms",))
    motion = ego_cli.load_bag(path)
    T_base_cam = motion.T_base_camera()
    np.testing.assert_allclose(T_base_cam, d.T_base_camera, atol=1e-12)   # from /tf_static
    from_bag = EgoMotionProvider(EgoMotionConfig(buffer_s=1e6), T_base_cam)
    ego_cli.feed_provider(from_bag, motion.events, motion.static)
    stamps = d.camera_stamps_ns[::4]
    ref = poses(from_odom, stamps, "odom")
    np.testing.assert_allclose(poses(from_tf, stamps, "tf"), ref, atol=1e-12)
    np.testing.assert_allclose(poses(from_bag, stamps, "odom"), ref, atol=1e-12)
    np.testing.assert_allclose(poses(from_bag, stamps, "tf"), ref, atol=1e-12)
    # Ground truth from the bag is the simulator's.
    np.testing.assert_allclose(np.asarray(motion.gt_T_map_camera), d.T_odom_camera_gt, atol=1e-12)


def run_cli(argv):
    parser = argparse.ArgumentParser()
    ego_cli.add_arguments(parser)
    return ego_cli.main(parser.parse_args(argv))


def test_cli_table_and_json(drive_bag, tmp_path, capsys):
    _, path = drive_bag
    out = tmp_path / "report.json"
    assert run_cli(["--bag", str(path), "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| source |" in table and "| odom |" in table and "| imu_gps |" in table
    report = json.loads(out.read_text())
    assert set(report["sources"]) == {"odom", "odom_twist", "tf", "imu_gps", "imu_speed"}
    assert report["sources"]["odom"]["t_err_median_pct"] < 2.0
    assert report["sources"]["odom"]["r_err_median_deg"] < 0.1
    assert report["sources"]["imu_gps"]["n"] > 0


def test_cli_json_to_stdout_and_errors(drive_bag, tmp_path, capsys):
    _, path = drive_bag
    assert run_cli(["--bag", str(path), "--sources", "tf", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sources"]["tf"]["n"] > 0
    assert run_cli(["--bag", str(tmp_path / "missing")]) == 1
    assert "cannot read" in capsys.readouterr().err
    assert run_cli(["--bag", str(path), "--camera-frame", "nope"]) == 1


def test_cli_is_registered():
    from mono_depth_ros.cli import SUBCOMMANDS

    assert SUBCOMMANDS["egomotion-eval"][0] == "mono_depth_ros.egomotion.cli"
