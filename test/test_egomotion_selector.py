"""FrameSelector: source frames chosen by motion, not by index; gating."""
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mono_depth_ros.conventions import to_ns
from mono_depth_ros.egomotion import (EgoMotionConfig, EgoMotionProvider, FrameSelector, GatingConfig,
                                      OdometrySample, PoseStatus)


def speed(t):
    """0 m/s until 2 s, 0.9 m/s until 4 s, then 10 m/s."""
    return 0.0 if t < 2.0 else (0.9 if t < 4.0 else 10.0)


def make(t_end=6.0, yaw_rate=0.0, gating=None):
    p = EgoMotionProvider(EgoMotionConfig(priority=("odom",)))
    x, yaw = 0.0, 0.0
    dt = 0.01
    for t in np.arange(0, t_end + 1e-9, dt):
        q = Rotation.from_euler("z", yaw).as_quat()
        p.add_odometry(OdometrySample(to_ns(t), [x, 0, 0], q, [speed(t), 0, 0], [0, 0, yaw_rate], np.eye(6) * 0.01))
        x += speed(t) * dt
        yaw += yaw_rate * dt
    sel = FrameSelector(p, gating or GatingConfig())
    return p, sel


def add_frames(sel, t0, t1):
    for t in np.arange(t0, t1 + 1e-9, 0.1):
        sel.add_frame(to_ns(round(t, 3)))


def test_stationary_vehicle_gives_no_pair():
    _, sel = make()
    add_frames(sel, 0.0, 2.0)
    r = sel.select(to_ns(1.5))
    assert r.status is PoseStatus.NEVER and "moved only" in r.reason


@pytest.mark.parametrize("target,expected_prev,expected_next", [(3.0, 2.7, 3.3), (5.0, 4.9, 5.1)])
def test_neighbours_chosen_by_distance(target, expected_prev, expected_next):
    _, sel = make()
    add_frames(sel, 0.0, 6.0)
    r = sel.select(to_ns(target))
    assert r.ok
    assert r.source_stamps_ns == (to_ns(expected_prev), to_ns(expected_next))
    assert all(p.translation_m >= 0.2 for p in r.poses)
    assert r.poses[0].stamp_target_ns == to_ns(target)


def test_later_frame_not_yet_then_ok():
    _, sel = make()
    add_frames(sel, 4.0, 5.0)
    assert sel.select(to_ns(5.0)).status is PoseStatus.NOT_YET     # no later frame yet
    sel.add_frame(to_ns(5.1))
    assert sel.select(to_ns(5.0)).ok


def test_motion_not_yet_known_waits():
    _, sel = make(t_end=5.0)
    add_frames(sel, 4.0, 5.5)                                      # images newer than odometry
    r = sel.select(to_ns(5.2))
    assert r.status is PoseStatus.NOT_YET


def test_max_time_gap():
    _, sel = make(gating=GatingConfig(max_time_gap_s=0.25, directions=(-1,)))
    add_frames(sel, 2.0, 4.0)
    assert sel.select(to_ns(3.0)).status is PoseStatus.NEVER      # needs 0.3 s at 0.9 m/s


def test_max_rotation():
    _, sel = make(yaw_rate=1.0, gating=GatingConfig(max_rotation_rad=math.radians(3.0), directions=(-1,)))
    add_frames(sel, 2.0, 4.0)
    r = sel.select(to_ns(3.0))
    assert r.status is PoseStatus.NEVER and "rotation" in r.reason


def test_allowed_sources():
    _, sel = make(gating=GatingConfig(allowed_sources=("tf",), directions=(-1,)))
    add_frames(sel, 4.0, 5.0)
    assert "not allowed" in sel.select(to_ns(5.0)).reason


def test_history_cleared_on_time_jump():
    p, sel = make()
    add_frames(sel, 4.0, 5.0)
    p.reset("test")
    sel.add_frame(to_ns(0.1))
    assert sel.frames == (to_ns(0.1),)


def test_duplicate_and_out_of_order_frames():
    _, sel = make()
    for t in (5.0, 4.8, 4.9, 4.9):
        sel.add_frame(to_ns(t))
    assert sel.frames == (to_ns(4.8), to_ns(4.9), to_ns(5.0))


def test_gating_config_validation():
    with pytest.raises(ValueError):
        GatingConfig(directions=(0,))
    with pytest.raises(ValueError):
        GatingConfig(max_time_gap_s=0)
