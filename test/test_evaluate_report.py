"""evaluate --report: tables, depth strip and fused cloud of a checkpoint on a GT bag."""
import json
import subprocess
import sys

import pytest

from .rosutil import ROOT


@pytest.fixture(scope="module")
def gt_bag(tmp_path_factory):
    from mono_depth_ros.tools.synth import generate_bag
    out = tmp_path_factory.mktemp("ev") / "gt"
    generate_bag(out, preset="A", seed=4, duration_s=2.0, width=320, height=96, progress=False,
                 contact_sheet=False, sensors="camera,depth_gt,pose_gt")
    return out


def test_evaluate_report_writes_everything(tmp_path, gt_bag):
    import open3d as o3d
    rep = tmp_path / "report"
    r = subprocess.run([sys.executable, "-m", "mono_depth_ros", "evaluate", "--bag", str(gt_bag), "--report", str(rep),
                        "--stride", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    m = json.loads((rep / "metrics.json").read_text())["metrics"]["raw"]
    assert 0 < m["abs_rel"] < 1.0
    assert "AbsRel" in (rep / "metrics.md").read_text()
    assert (rep / "depth_strip.png").stat().st_size > 1000
    cloud = o3d.io.read_point_cloud(str(rep / "fused_cloud.ply"))
    assert len(cloud.points) > 500 and cloud.has_colors()
