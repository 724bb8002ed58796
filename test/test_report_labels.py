"""Evaluation reports: "synthetic" only for the generator's drives; a colour scale that fits the scene
(issue 14 item 11)."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from .rosutil import ROOT


@pytest.fixture(scope="module")
def bags(tmp_path_factory):
    """A synthetic drive (folder and bare mcap) and the same messages re-recorded by another writer
    (no generator marker): what a user's own recording with ground truth looks like."""
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from mono_depth_ros.bagio import open_reader
    from mono_depth_ros.tools.synth import generate_bag
    d = tmp_path_factory.mktemp("labels")
    synth = generate_bag(d / "synth", preset="A", seed=4, duration_s=1.0, width=128, height=64, progress=False,
                         contact_sheet=False, sensors="camera,depth_gt,pose_gt")
    bare = d / "synth_bare.mcap"
    shutil.copy(next(synth.glob("*.mcap")), bare)
    ts = get_typestore(Stores.ROS2_KILTED)
    with open_reader(synth) as r, Writer(d / "recorded", version=9, storage_plugin=StoragePlugin.MCAP) as w:
        conns = {c.id: w.add_connection(c.topic, c.msgtype, typestore=ts) for c in r.connections}
        for c, t, raw in r.messages():
            w.write(conns[c.id], t, raw)
    return {"synthetic": synth, "bare": bare, "recorded": d / "recorded"}


def test_is_synthetic_reads_the_generator_marker(bags):
    from mono_depth_ros.bagio import is_synthetic
    assert is_synthetic(bags["synthetic"]) and is_synthetic(bags["bare"])
    assert not is_synthetic(bags["recorded"])


@pytest.mark.slow
def test_report_title_says_synthetic_only_for_synthetic_bags(bags, tmp_path):
    titles = {}
    for name in ("recorded", "bare"):
        rep = tmp_path / name
        r = subprocess.run([sys.executable, "-m", "mono_depth_ros", "evaluate", "--bag", str(bags[name]), "--size",
                            "bag", "--report", str(rep)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        titles[name] = (rep / "metrics.md").read_text().splitlines()[0]
    assert titles == {"recorded": "# Evaluation", "bare": "# Evaluation (synthetic data)"}


def test_indoor_depth_spreads_over_the_colour_map(tmp_path):
    import cv2

    from mono_depth_ros.learning.report import depth_strip, display_range
    h, w = 48, 64
    gt = np.tile(np.linspace(0.5, 4.0, w, dtype=np.float32), (h, 1))[None]     # an indoor room, 0.5-4 m
    img = np.zeros((1, h, w, 3), np.uint8)
    path = depth_strip(img, gt.copy(), gt, tmp_path / "strip.png", rows=1)
    strip = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    gt_panel = strip[:, 2 * w:3 * w].astype(float).sum(axis=2)
    near = gt_panel[:, : w // 2]                                     # 0.5-2.25 m: one colour before the fix
    assert len(np.unique(near.round())) > 15, "near half washed out"
    assert gt_panel.max() - gt_panel.min() > 400                    # the whole map, dark to bright
    lo, hi = display_range(gt)
    assert 0.5 <= lo < 0.7 and 3.8 < hi <= 4.0
    road = np.concatenate([np.full(100, np.inf), np.linspace(3.0, 78.0, 1000)])
    assert display_range(road)[1] > 70                              # a road keeps its far range
