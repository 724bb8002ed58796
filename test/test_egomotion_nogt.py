"""egomotion-eval on bags without ground truth (issue 14 item 8): sources against each other, and
against a TUM or KITTI trajectory file."""
import argparse
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mono_depth_ros.conventions import Topics
from mono_depth_ros.egomotion import cli as ego_cli
from mono_depth_ros.egomotion.simulate import simulate_drive, write_drive_bag

NO_GT = (Topics.BAG_ODOM, Topics.BAG_TF, Topics.BAG_TF_STATIC, Topics.BAG_IMU, Topics.BAG_GPS)


@pytest.fixture(scope="module")
def drives(tmp_path_factory):
    d = simulate_drive(12.0, seed=6)
    root = tmp_path_factory.mktemp("nogt")
    write_drive_bag(d, root / "with_gt")
    write_drive_bag(d, root / "no_gt", topics=NO_GT)
    return d, root


def run(argv, capsys):
    parser = argparse.ArgumentParser()
    ego_cli.add_arguments(parser)
    rc = ego_cli.main(parser.parse_args(argv))
    out = capsys.readouterr()
    return rc, (json.loads(out.out) if rc == 0 and "--json" in argv else out.out), out.err


def _same_numbers(a, b):
    assert a["pairs_moving"] == b["pairs_moving"] > 50
    for name, s in a["sources"].items():
        for key in ("n", "t_err_median_pct", "r_err_median_deg", "t_err_p95_pct"):
            assert s[key] == pytest.approx(b["sources"][name][key], rel=1e-6, abs=1e-9), (name, key)


def test_without_ground_truth_sources_are_compared_with_each_other(drives, capsys):
    _, root = drives
    assert ego_cli.load_bag(root / "no_gt").gt_stamps_ns == []
    rc, rep, err = run(["--bag", str(root / "no_gt"), "--json"], capsys)
    assert rc == 0, err
    assert rep["reference"] == "source odom" and "comparing with source odom" in err
    assert "odom" not in rep["sources"] and set(rep["sources"]) == {"odom_twist", "tf", "imu_gps", "imu_speed"}
    assert rep["sources"]["tf"]["n"] > 50 and rep["sources"]["tf"]["t_err_median_pct"] < 1e-6   # tf == odom here
    for s in ("imu_speed", "imu_gps"):
        assert rep["sources"][s]["n"] > 50 and np.isfinite(rep["sources"][s]["t_err_median_pct"])
    rc, rep, _ = run(["--bag", str(root / "no_gt"), "--reference", "imu_speed", "--sources", "odom", "--json"],
                     capsys)
    assert rc == 0 and rep["reference"] == "source imu_speed" and rep["sources"]["odom"]["n"] > 50
    rc, table, _ = run(["--bag", str(root / "no_gt")], capsys)
    assert rc == 0 and "vs source odom" in table


def test_tum_and_kitti_trajectories_give_the_ground_truth_numbers(drives, tmp_path, capsys):
    d, root = drives
    rc, gt, err = run(["--bag", str(root / "with_gt"), "--json"], capsys)
    assert rc == 0, err
    stamps, T = d.camera_stamps_ns, d.T_odom_camera_gt
    tum = tmp_path / "cam.tum"
    tum.write_text("# timestamp tx ty tz qx qy qz qw\n" + "".join(
        f"{s / 1e9:.9f} {' '.join(f'{v:.12f}' for v in M[:3, 3])} "
        f"{' '.join(f'{v:.15f}' for v in Rotation.from_matrix(M[:3, :3]).as_quat())}\n" for s, M in zip(stamps, T)))
    rc, rep, err = run(["--bag", str(root / "no_gt"), "--trajectory", str(tum), "--json"], capsys)
    assert rc == 0, err
    assert rep["reference"].startswith("trajectory") and "(tum)" in rep["reference"]
    _same_numbers(rep, gt)
    kitti, times = tmp_path / "poses.txt", tmp_path / "times.txt"
    kitti.write_text("".join(" ".join(f"{v:.15e}" for v in M[:3, :].ravel()) + "\n" for M in T))
    times.write_text("".join(f"{s / 1e9:.9f}\n" for s in stamps))
    rc, rep, err = run(["--bag", str(root / "no_gt"), "--trajectory", str(kitti), "--trajectory-format", "kitti",
                        "--trajectory-times", str(times), "--json"], capsys)
    assert rc == 0, err
    _same_numbers(rep, gt)
    # A base-frame trajectory (e.g. from a SLAM system) composed with /tf_static's extrinsics.
    base = tmp_path / "base.tum"
    T_base = T @ np.linalg.inv(d.T_base_camera)
    base.write_text("".join(
        f"{s / 1e9:.9f} {' '.join(f'{v:.12f}' for v in M[:3, 3])} "
        f"{' '.join(f'{v:.15f}' for v in Rotation.from_matrix(M[:3, :3]).as_quat())}\n" for s, M in zip(stamps, T_base)))
    rc, rep, err = run(["--bag", str(root / "no_gt"), "--trajectory", str(base), "--trajectory-frame", "base",
                        "--json"], capsys)
    assert rc == 0, err
    _same_numbers(rep, gt)


def test_bad_trajectory_files_are_named_with_their_line(drives, tmp_path, capsys):
    _, root = drives
    bad = tmp_path / "bad.tum"
    bad.write_text("1.0 0 0 0 0 0 0 1\n1.1 0 0 0 0 0 1\n")
    rc, _, err = run(["--bag", str(root / "no_gt"), "--trajectory", str(bad)], capsys)
    assert rc == 1 and "bad.tum:2" in err and "8 numbers" in err
    bad.write_text("1.0 0 0 0 0 0 0 1\n1.1 0 0 nan 0 0 0 1\n")
    rc, _, err = run(["--bag", str(root / "no_gt"), "--trajectory", str(bad)], capsys)
    assert rc == 1 and "bad.tum:2" in err and "non-finite" in err
    bad.write_text("1.0 0 0 0 0 0 0 2\n1.1 0 0 0 0 0 0 1\n")
    rc, _, err = run(["--bag", str(root / "no_gt"), "--trajectory", str(bad)], capsys)
    assert rc == 1 and "bad.tum:1" in err and "quaternion" in err
    kitti = tmp_path / "k.txt"
    kitti.write_text("1 0 0 0 0 1 0 0 0 0 1 0\n1 0 0 1 0 1 0 0 0 0 1 0\n")
    rc, _, err = run(["--bag", str(root / "no_gt"), "--trajectory", str(kitti), "--trajectory-format", "kitti"],
                     capsys)
    assert rc == 1 and "2 KITTI poses but 0 stamps" in err     # no images in this bag, no --trajectory-times
