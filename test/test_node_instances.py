"""Several nodes, own checkpoints; adaptation gating and anchor defaults (issue 14 items 5 and 9)."""
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

from .rosutil import ROOT, NodeProcess


def _adapted_checkpoint(folder):
    from mono_depth_ros.adapt.persistence import CheckpointStore
    from mono_depth_ros.checkpoint import load_checkpoint, shipped_checkpoint_path
    model, meta = load_checkpoint(shipped_checkpoint_path())
    return CheckpointStore(folder).save(model, model.state_dict(), tuple(meta["input_size"]), 7, 7)


@pytest.mark.ros
@pytest.mark.slow
def test_nodes_in_two_namespaces_keep_their_own_checkpoints(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    front_dir = home / ".ros" / "mono_depth_ros" / "front" / "mono_depth"
    saved = _adapted_checkpoint(front_dir)
    nodes = {ns: NodeProcess(tmp_path, params={"checkpoint_dir": "''", "input_width": 320, "input_height": 96},
                             remaps={"__ns": f"/{ns}"}, name=ns) for ns in ("front", "rear")}
    try:
        for ns, proc in nodes.items():
            assert proc.wait_for_log("depth node ready", 90), proc.log()
            assert f"checkpoints: {home}/.ros/mono_depth_ros/{ns}/mono_depth" in proc.log(), proc.log()
        assert f"resuming from adapted checkpoint {saved}" in nodes["front"].log()
        assert "resuming" not in nodes["rear"].log(), nodes["rear"].log()
    finally:
        for proc in nodes.values():
            proc.stop()


def test_shipped_params_file_leaves_checkpoint_dir_per_node():
    params = yaml.safe_load((ROOT / "config" / "mono_depth.yaml").read_text())
    (node_params,) = [v["ros__parameters"] for v in params.values()]
    assert node_params["checkpoint_dir"] == ""
    assert node_params["adapt_anchor"] == "auto"


def test_checkpoint_dir_for_names_namespace_and_node():
    from mono_depth_ros.ros.params import checkpoint_dir_for
    assert checkpoint_dir_for("/front/mono_depth") != checkpoint_dir_for("/mono_depth")
    assert checkpoint_dir_for("/a/b/cam_depth") == "~/.ros/mono_depth_ros/a/b/cam_depth"


# --- item 9: gating and anchor ----------------------------------------------------------------------------------

def _turning_selector(gating):
    """A camera that moves 0.5 m and turns 20 degrees between frames 0.1 s apart (hand-held sweep)."""
    from scipy.spatial.transform import Rotation

    from mono_depth_ros.conventions import to_ns
    from mono_depth_ros.egomotion import (EgoMotionConfig, EgoMotionProvider, FrameSelector, OdometrySample)
    p = EgoMotionProvider(EgoMotionConfig(priority=("odom",)))
    yaw_rate = math.radians(200.0)
    for t in np.arange(0, 3.0 + 1e-9, 0.01):
        p.add_odometry(OdometrySample(to_ns(t), [5.0 * t, 0, 0], Rotation.from_euler("z", yaw_rate * t).as_quat(),
                                      [5.0, 0, 0], [0, 0, yaw_rate], np.eye(6) * 0.01))
    sel = FrameSelector(p, gating)
    for t in np.arange(0.0, 3.0 + 1e-9, 0.1):
        sel.add_frame(to_ns(round(t, 3)))
    return sel.select(to_ns(1.5))


def test_rotation_limit_is_configurable():
    from mono_depth_ros.egomotion import GatingConfig
    assert not _turning_selector(GatingConfig()).ok                                    # 15 deg default
    r = _turning_selector(GatingConfig(max_rotation_rad=math.radians(40.0)))
    assert r.ok and all(math.degrees(p.rotation_rad) > 15 for p in r.poses)


def test_rotation_parameter_declared_with_range_and_cli_option():
    from mono_depth_ros.adapt.offline import add_arguments
    from mono_depth_ros.ros.params import _BY_NAME, ConfigError, NodeConfig, validate
    spec = _BY_NAME["adapt_max_rotation"]
    assert spec.default == 15.0 and spec.range == (0.1, 180.0) and spec.read_only
    for bad in (0.0, 181.0):
        with pytest.raises(ConfigError, match="adapt_max_rotation"):
            validate(NodeConfig(adapt_max_rotation=bad))
    import argparse
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args(["b", "--out", "x.pt"]).max_rotation == 15.0
    assert p.parse_args(["b", "--out", "x.pt", "--max-rotation", "40"]).max_rotation == 40.0


def test_auto_anchor_is_synthetic_only_for_the_shipped_weights(tmp_path):
    from mono_depth_ros.adapt.anchors import resolve_anchor
    from mono_depth_ros.checkpoint import shipped_checkpoint_path
    own = tmp_path / "mine.pt"
    shutil.copy(shipped_checkpoint_path(), own)
    assert resolve_anchor("auto", "")[0] == "synthetic_A"
    assert resolve_anchor("auto", str(shipped_checkpoint_path()))[0] == "synthetic_A"
    anchor, why = resolve_anchor("auto", str(own))
    assert anchor == "none" and "own checkpoint" in why
    assert resolve_anchor("synthetic_A", str(own))[0] == "synthetic_A"     # explicit choice kept
    assert resolve_anchor(str(tmp_path), "")[0] == str(tmp_path)


@pytest.mark.ros
@pytest.mark.slow
def test_node_with_own_checkpoint_logs_no_synthetic_anchor(tmp_path):
    from mono_depth_ros.checkpoint import shipped_checkpoint_path
    own = tmp_path / "mine.pt"
    shutil.copy(shipped_checkpoint_path(), own)
    proc = NodeProcess(tmp_path, params={"checkpoint": str(own), "adapt_anchor": "auto", "adapt_max_rotation": 40.0,
                                         "input_width": 320, "input_height": 96})
    try:
        assert proc.wait_for_log("depth node ready", 90), proc.log()
        assert "adaptation anchor: none (auto: own checkpoint" in proc.log()
    finally:
        proc.stop()
    r = subprocess.run([sys.executable, "-m", "mono_depth_ros.ros.depth_node", "--ros-args", "-p",
                        "adapt_max_rotation:=0.0"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "adapt_max_rotation" in r.stderr, r.stderr
