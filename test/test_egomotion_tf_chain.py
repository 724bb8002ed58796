"""The "tf" ego-motion source asks the one transform lookup, so any TF chain between odom and the camera works.

Core only (no ROS): the buffers are filled directly, as the bag path does.
"""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mono_depth_ros.conventions import to_ns
from mono_depth_ros.egomotion import EgoMotionConfig, EgoMotionProvider, PoseStatus, TransformSample
from mono_depth_ros.egomotion.feed import EgoMotionFeed
from mono_depth_ros.egomotion.simulate import simulate_drive
from mono_depth_ros.tools.synth.bag import _Msgs as Messages
from mono_depth_ros.tf_buffer import ExtrapolationError, TfBuffer, TransformLookup

CAMERA = "camera_optical_frame"


def _T(rotvec, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = t
    return T


def _sample(stamp, parent, child, T) -> TransformSample:
    return TransformSample(int(stamp), parent, child, T[:3, 3].copy(), Rotation.from_matrix(T[:3, :3]).as_quat())


#: base_footprint <- base_link: 0.3 m up, a slight pitch and roll (a sprung chassis at rest).
T_FP_BASE = _T([0.01, -0.02, 0.0], [0.05, 0.0, 0.3])


@pytest.fixture(scope="module")
def drive():
    return simulate_drive(6.0)


def _providers(drive):
    """(direct, chain): odom -> base_link (+ static base_link -> camera) vs odom -> base_footprint -> base_link
    -> camera, extrinsics looked up in each provider's own buffer."""
    direct = EgoMotionProvider(EgoMotionConfig(priority=("tf",)))
    chain = EgoMotionProvider(EgoMotionConfig(priority=("tf",)))
    t0 = drive.transforms[0].stamp_ns
    direct.add_transform(_sample(t0, "base_link", CAMERA, drive.T_base_camera), static=True)
    chain.add_transform(_sample(t0, "base_footprint", "base_link", T_FP_BASE), static=True)
    chain.add_transform(_sample(t0, "base_link", CAMERA, drive.T_base_camera), static=True)
    for s in drive.transforms:
        direct.add_transform(s)
        T_odom_base = _T(Rotation.from_quat(s.rotation).as_rotvec(), s.translation)
        chain.add_transform(_sample(s.stamp_ns, "odom", "base_footprint", T_odom_base @ np.linalg.inv(T_FP_BASE)))
    for p in (direct, chain):
        p.set_camera_extrinsics(p.transforms.lookup("base_link", CAMERA, 0))
    return direct, chain


def test_chain_through_base_footprint_gives_the_direct_edges_poses(drive):
    direct, chain = _providers(drive)
    np.testing.assert_allclose(chain.T_base_camera, drive.T_base_camera, atol=1e-12)
    stamps = drive.camera_stamps_ns[2:-2:3]
    n = 0
    for s, t in zip(stamps[:-2], stamps[2:]):
        a, b = direct.relative_pose(int(t), int(s)), chain.relative_pose(int(t), int(s))
        assert a.status is PoseStatus.OK and b.status is PoseStatus.OK and b.source == "tf", b.reason
        np.testing.assert_allclose(b.T_target_source, a.T_target_source, atol=1e-9)
        np.testing.assert_allclose(b.T_base_target_source, a.T_base_target_source, atol=1e-9)
        n += 1
    assert n > 15
    assert a.translation_m > 0.1          # the drive moves: a non-trivial comparison


def test_tf_source_matches_odometry_pose_and_status(drive):
    _, chain = _providers(drive)
    odom = EgoMotionProvider(EgoMotionConfig(priority=("odom",)), drive.T_base_camera)
    for s in drive.odometry:
        odom.add_odometry(s)
    s, t = int(drive.camera_stamps_ns[10]), int(drive.camera_stamps_ns[13])
    np.testing.assert_allclose(chain.relative_pose(t, s).T_target_source, odom.relative_pose(t, s).T_target_source,
                               atol=1e-9)
    newest = drive.transforms[-1].stamp_ns
    assert chain.relative_pose(newest + to_ns(0.05), s).status is PoseStatus.NOT_YET   # TF may still come
    oldest = drive.transforms[0].stamp_ns
    assert chain.relative_pose(t, oldest - to_ns(0.05)).status is PoseStatus.NEVER


def test_lookup_full_known_answer():
    b = TfBuffer()
    b.set_transform(_sample(0, "base_footprint", "base_link", T_FP_BASE), static=True)
    b.set_transform(_sample(to_ns(1.0), "odom", "base_footprint", _T([0, 0, 0.0], [0, 0, 0])))
    b.set_transform(_sample(to_ns(2.0), "odom", "base_footprint", _T([0, 0, 0.4], [2.0, 0, 0])))
    # Half way: 1 m forward, 0.2 rad of yaw (slerp); base_link at 1.5 s <- base_link at 1.0 s.
    T = b.lookup_full("base_link", to_ns(1.5), "base_link", to_ns(1.0), "odom")
    T_move = _T([0, 0, 0.2], [1.0, 0, 0])
    np.testing.assert_allclose(T, np.linalg.inv(T_FP_BASE) @ np.linalg.inv(T_move) @ T_FP_BASE, atol=1e-12)
    with pytest.raises(ExtrapolationError) as e:
        b.lookup_full("base_link", to_ns(2.01), "base_link", to_ns(1.0), "odom")   # no extrapolation at all
    assert e.value.future is True and e.value.latest_ns == to_ns(2.0)
    assert isinstance(b, TransformLookup)


def test_feed_with_a_shared_lookup_takes_extrinsics_and_leaves_clearing_to_its_owner(drive):
    """A lookup handed in (the node's TF) is cleared by its owner on a time jump, in one place."""
    shared = TfBuffer(cache_time_s=30.0)
    feed = EgoMotionFeed(EgoMotionConfig(priority=("tf",)), transforms=shared)
    assert feed.transforms is shared and not feed.camera_ready(CAMERA)      # nothing in the buffer yet
    t0 = drive.transforms[0].stamp_ns
    shared.set_transform(_sample(t0, "base_footprint", "base_link", T_FP_BASE), static=True)
    shared.set_transform(_sample(t0, "base_link", CAMERA, drive.T_base_camera), static=True)
    for s in drive.transforms:          # the node's /tf subscription fills it; the feed never sees /tf
        T = _T(Rotation.from_quat(s.rotation).as_rotvec(), s.translation) @ np.linalg.inv(T_FP_BASE)
        shared.set_transform(_sample(s.stamp_ns, "odom", "base_footprint", T))
    assert feed.camera_ready(CAMERA)
    np.testing.assert_allclose(feed.provider.T_base_camera, drive.T_base_camera, atol=1e-12)
    s, t = int(drive.camera_stamps_ns[10]), int(drive.camera_stamps_ns[13])
    direct, _ = _providers(drive)
    np.testing.assert_allclose(feed.provider.relative_pose(t, s).T_target_source,
                               direct.relative_pose(t, s).T_target_source, atol=1e-9)
    feed.reset_time("test: time jumped")
    assert shared.counters["resets"] == 0               # not the feed's to clear ...
    shared.clear()                                      # ... the owner's (DepthNode._reset_time -> TfSource.clear)
    assert shared.counters["resets"] == 1
    assert feed.provider.relative_pose(t, s).status is PoseStatus.NEVER                  # dynamic links gone
    np.testing.assert_allclose(shared.lookup("base_link", CAMERA), drive.T_base_camera, atol=1e-12)  # statics stay


def test_owned_buffer_bag_path_fills_from_messages(drive):
    """on_tf / on_tf_static (the bag feeder's path) fill the provider's own buffer."""
    M = Messages()     # real rosbags message objects, as a bag reader yields them

    def Msg(samples):
        return M.tf([M.transform(x.stamp_ns, x.parent_frame, x.child_frame,
                                 _T(Rotation.from_quat(x.rotation).as_rotvec(), x.translation)) for x in samples])

    feed = EgoMotionFeed(EgoMotionConfig(priority=("tf",)))
    t0 = drive.transforms[0].stamp_ns
    feed.on_tf_static(Msg([_sample(t0, "base_footprint", "base_link", T_FP_BASE),
                           _sample(t0, "base_link", CAMERA, drive.T_base_camera)]))
    for s in drive.transforms:
        T = _T(Rotation.from_quat(s.rotation).as_rotvec(), s.translation) @ np.linalg.inv(T_FP_BASE)
        feed.on_tf(Msg([_sample(s.stamp_ns, "odom", "base_footprint", T)]))
    assert feed.camera_ready(CAMERA)
    direct, _ = _providers(drive)
    s, t = int(drive.camera_stamps_ns[20]), int(drive.camera_stamps_ns[23])
    np.testing.assert_allclose(feed.provider.relative_pose(t, s).T_target_source,
                               direct.relative_pose(t, s).T_target_source, atol=1e-9)
