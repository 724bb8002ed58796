"""Core (ROS-free) parts of the fault fixes: the node tests show the behaviour end to end, these pin
the mechanism (IMU spikes, denormalised quaternions, duplicate frames, time-jump reset without
pairing across the jump, checkpoint write failures as clear errors)."""
import errno

import numpy as np
import pytest

from mono_depth_ros.adapt import CheckpointStore
from mono_depth_ros.adapt.session import AdaptationSession
from mono_depth_ros.adapt.engine import AdaptConfig
from mono_depth_ros.checkpoint import CheckpointError
from mono_depth_ros.conventions import to_ns
from mono_depth_ros.egomotion import EgoMotionConfig, EgoMotionProvider, GatingConfig, ImuSample, OdometrySample
from mono_depth_ros.models import build_model
from mono_depth_ros.tf_buffer import TfBuffer, TransformSample

pytestmark = [pytest.mark.faults]


def test_imu_spikes_rejected_and_counted_good_parts_kept():
    p = EgoMotionProvider(EgoMotionConfig(priority=("imu_speed",)))
    assert not p.add_imu(ImuSample(to_ns(0.1), [0, 0, 500.0], [1e4, 0, 9.81]))
    assert p.add_imu(ImuSample(to_ns(0.2), [0, 0, 500.0], [0, 0, 9.81]))   # accel fine, gyro spike
    c = p.counters
    assert c["imu_rejected_gyro_spike"] == 2 and c["imu_rejected_accel_spike"] == 1
    assert len(p._gyro) == 0 and len(p._accel) == 1


def test_odometry_non_unit_quaternion_rejected():
    p = EgoMotionProvider(EgoMotionConfig(priority=("odom",)))
    s = OdometrySample(to_ns(0.1), [0, 0, 0], [0, 0, 0, 2.0], [1, 0, 0], [0, 0, 0], np.eye(6) * 1e-4)
    p.add_odometry(s)
    assert p.counters["odom_rejected_non_unit_quaternion"] == 1 and len(p._odom_pose) == 0
    assert len(p._odom_twist) == 1  # the twist of the same message is fine


def test_tf_buffer_rejects_denormalised_quaternion():
    b = TfBuffer()
    assert not b.set_transform(TransformSample(1, "odom", "base_link", (0, 0, 0), (0, 0, 0, 2.0)))
    assert b.set_transform(TransformSample(1, "odom", "base_link", (0, 0, 0), (0, 0, 0, 1.004)))
    assert b.counters["rejected"] == 1


def _feed():
    model = build_model("default")
    return AdaptationSession(model, AdaptConfig(train_height=64, train_width=192),
                             EgoMotionConfig(priority=("odom",)), GatingConfig(min_translation_m=0.2))


def _drive(feed, t0, t1, x0, rng):
    for t in np.arange(t0, t1, 0.1):
        for k in range(5):
            tt = t + k * 0.02
            feed.provider.add_odometry(OdometrySample(to_ns(tt), [x0 + 5 * (tt - t0), 0, 0], [0, 0, 0, 1],
                                                      [5, 0, 0], [0, 0, 0], np.eye(6) * 1e-4))
        feed.on_frame(to_ns(t), "cam", rng.integers(0, 255, (96, 320, 3), dtype=np.uint8), np.diag([200., 200, 1]))


def test_time_reset_never_pairs_frames_across_the_jump():
    feed = _feed()
    feed.set_extrinsics(np.eye(4))
    rng = np.random.default_rng(0)
    _drive(feed, 10.0, 12.0, 0.0, rng)
    before = set(feed.engine.triplets.frames)
    feed.reset_time("test: /clock jumped")
    assert not feed.engine.triplets.frames and not feed.engine.triplets.pending and not feed.selector.frames
    _drive(feed, 10.5, 12.5, 500.0, rng)   # overlapping stamps, another place: a different bag
    trip = feed.engine.triplets.next()
    assert trip is not None
    after = set(feed.engine.triplets.frames)
    assert after.isdisjoint(before - after) and trip.stamp_ns in after
    # the motion used comes from after the reset only: 5 m/s, 0.1 s apart -> 0.5 m
    assert all(abs(np.linalg.norm(np.linalg.inv(T.numpy())[:3, 3]) - 0.5) < 1e-3 for T in trip.T_source_target)


def test_duplicate_frame_stamp_counted_not_added_twice():
    feed = _feed()
    feed.set_extrinsics(np.eye(4))
    img = np.zeros((96, 320, 3), np.uint8)
    for _ in range(3):
        feed.on_frame(to_ns(1.0), "cam", img, np.diag([200., 200, 1]))
    assert feed.engine.triplets.counters.duplicate_frames == 2 and list(feed.engine.triplets.pending) == [to_ns(1.0)]


def test_checkpoint_write_failure_is_a_clear_error_and_leaves_no_temp(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    m = build_model("default")
    store.save(m, m.state_dict(), (96, 320), 1, 1)
    import mono_depth_ros.checkpoint as ck
    real_fsync = ck.os.fsync

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(ck.os, "fsync", full)
    with pytest.raises(CheckpointError, match=f"cannot write checkpoint in {tmp_path}: No space left on device"):
        store.save(m, m.state_dict(), (96, 320), 2, 2)
    monkeypatch.setattr(ck.os, "fsync", real_fsync)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert store.load_latest()[1]["training"]["steps"] == 1 and store.errors == 1
