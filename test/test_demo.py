"""The README's main job in its shortened form (CI smoke test): real node, real DDS, real bags."""
import json
import subprocess
import sys

import pytest

from .rosutil import ROOT

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_demo_quick_writes_tables_pictures_cloud_and_checkpoint(tmp_path):
    out = tmp_path / "demo"
    r = subprocess.run([sys.executable, "-m", "mono_depth_ros", "demo", "--quick", "--out", str(out),
                        "--data-dir", str(tmp_path / "data")], cwd=ROOT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads((out / "metrics.json").read_text())
    for d in ("A", "B"):
        for when in ("before", "after"):
            m = result[when][d]["raw"]
            assert 0 < m["abs_rel"] < 10 and 0 <= m["a1"] <= 1 and m["images"] >= 20, (when, d, m)
    assert result["prequential_frames"] >= 5
    assert "depth scorer ready" in (out / "scorer.log").read_text()   # prequential figures: the separate scorer
    assert int(result["node"]["frames_processed"]) >= 20
    for name in ("depth_strip.png", "curves.png", "fused_cloud.ply", "metrics.md", "checkpoints/adapted.pt"):
        assert (out / name).stat().st_size > 100, name
    assert "Before / after online adaptation" in r.stdout and "AbsRel change" in r.stdout
