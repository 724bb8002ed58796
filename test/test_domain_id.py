"""An unusable ROS_DOMAIN_ID is refused at start, in one line, with exit code 2 (issue 14 item 13)."""
import os
import subprocess
import sys

import pytest

from mono_depth_ros.ros.domain import MAX_DOMAIN_ID, domain_id_error

from .rosutil import ROOT


@pytest.mark.parametrize("value", ["0", "42", "101", "232", "", " 7 "])
def test_valid_domain_ids_pass(value):
    assert domain_id_error({"ROS_DOMAIN_ID": value}) is None
    assert domain_id_error({}) is None


@pytest.mark.parametrize("value", ["233", "1000", "-1", "abc", "4.5", "0x10"])
def test_invalid_domain_ids_name_the_variable_and_range(value):
    err = domain_id_error({"ROS_DOMAIN_ID": value})
    assert err is not None and "ROS_DOMAIN_ID" in err and f"0..{MAX_DOMAIN_ID}" in err


ENTRY_POINTS = {
    "node": [sys.executable, "-m", "mono_depth_ros.ros.depth_node"],
    "replay": [sys.executable, "-m", "mono_depth_ros", "replay", "does_not_matter.mcap"],
    "record": [sys.executable, "-m", "mono_depth_ros", "record", "/tmp/never_written", "--topics", "/x"],
    "demo": [sys.executable, "-m", "mono_depth_ros", "demo", "--quick", "--out", "/tmp/never_written_demo"],
}


@pytest.mark.parametrize("entry", sorted(ENTRY_POINTS))
@pytest.mark.parametrize("value", ["233", "front"])
def test_entry_points_refuse_a_bad_domain_before_rclpy(entry, value):
    env = dict(os.environ, ROS_DOMAIN_ID=value)
    r = subprocess.run(ENTRY_POINTS[entry], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and f"ROS_DOMAIN_ID={value} is not valid" in lines[0], r.stderr
    assert "Traceback" not in r.stderr and "port" not in r.stdout.lower()
    assert not os.path.exists("/tmp/never_written") and not os.path.exists("/tmp/never_written_demo")
