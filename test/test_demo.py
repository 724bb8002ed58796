"""The README's main job in its shortened form (CI smoke test): real node, real DDS, real bag."""
import json
import subprocess
import sys

import pytest

from .rosutil import ROOT

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_quick_writes_pictures_cloud_and_metrics(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "mono_depth_ros", "demo", "--quick", "--out", str(out),
                        "--data-dir", str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True,
                       timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads((out / "metrics.json").read_text())
    assert result["frames_evaluated"] >= 5
    raw = result["metrics"]["raw"]
    assert 0.0 <= raw["abs_rel"] < 10 and 0.0 <= raw["a1"] <= 1.0
    assert int(result["node"]["frames_processed"]) >= 5
    for name in ("depth_strip.png", "fused_cloud.ply", "metrics.md"):
        assert (out / name).stat().st_size > 100, name
    assert "AbsRel" in r.stdout
