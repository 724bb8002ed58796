"""Duck-typed message converters: rosbags and rclpy messages give the same samples."""
import numpy as np
import pytest

from mono_depth_ros.egomotion import (from_imu_msg, from_navsatfix_msg, from_odometry_msg, from_tf_message,
                                      from_transform_stamped, pose_from_pose_msg, stamp_to_ns)

rosbags_typesys = pytest.importorskip("rosbags.typesys")
TS = rosbags_typesys.get_typestore(rosbags_typesys.Stores.ROS2_HUMBLE)
M = TS.types


def _hdr(sec, nsec, frame):
    return M["std_msgs/msg/Header"](stamp=M["builtin_interfaces/msg/Time"](sec=sec, nanosec=nsec), frame_id=frame)


def _vec(x, y, z, cls="geometry_msgs/msg/Vector3"):
    return M[cls](x=x, y=y, z=z)


def _quat(x, y, z, w):
    return M["geometry_msgs/msg/Quaternion"](x=x, y=y, z=z, w=w)


def rosbags_odometry():
    return M["nav_msgs/msg/Odometry"](
        header=_hdr(12, 345, "odom"), child_frame_id="base_link",
        pose=M["geometry_msgs/msg/PoseWithCovariance"](
            pose=M["geometry_msgs/msg/Pose"](position=_vec(1.0, 2.0, 3.0, "geometry_msgs/msg/Point"),
                                             orientation=_quat(0.0, 0.0, 0.6, 0.8)),
            covariance=np.arange(36, dtype=np.float64)),
        twist=M["geometry_msgs/msg/TwistWithCovariance"](
            twist=M["geometry_msgs/msg/Twist"](linear=_vec(4.0, 0.0, 0.0), angular=_vec(0.0, 0.0, 0.5)),
            covariance=np.zeros(36)))


def check_odometry(s):
    assert s.stamp_ns == 12_000_000_345
    assert (s.frame_id, s.child_frame_id) == ("odom", "base_link")
    np.testing.assert_array_equal(s.position, [1, 2, 3])
    np.testing.assert_array_equal(s.orientation, [0, 0, 0.6, 0.8])
    np.testing.assert_array_equal(s.linear_velocity, [4, 0, 0])
    np.testing.assert_array_equal(s.angular_velocity, [0, 0, 0.5])
    assert s.pose_covariance.shape == (6, 6) and s.pose_covariance[1, 0] == 6


class TestRosbagsMessages:
    def test_odometry(self):
        check_odometry(from_odometry_msg(rosbags_odometry()))

    def test_transform_and_tf_message(self):
        tf = M["geometry_msgs/msg/TransformStamped"](
            header=_hdr(1, 2, "odom"), child_frame_id="base_link",
            transform=M["geometry_msgs/msg/Transform"](translation=_vec(1.0, 0.0, 0.0), rotation=_quat(0, 0, 0, 1)))
        s = from_transform_stamped(tf)
        assert (s.stamp_ns, s.parent_frame, s.child_frame) == (1_000_000_002, "odom", "base_link")
        np.testing.assert_array_equal(s.rotation, [0, 0, 0, 1])
        both = from_tf_message(M["tf2_msgs/msg/TFMessage"](transforms=[tf, tf]))
        assert len(both) == 2 and all(np.array_equal(b.translation, s.translation) for b in both)

    @pytest.mark.parametrize("ocov0,has", [(-1.0, False), (0.01, True)])
    def test_imu_orientation_provided_or_not(self, ocov0, has):
        ocov = np.zeros(9)
        ocov[0] = ocov0
        msg = M["sensor_msgs/msg/Imu"](
            header=_hdr(5, 0, "imu_link"), orientation=_quat(0, 0, 0, 1), orientation_covariance=ocov,
            angular_velocity=_vec(0.1, 0.2, 0.3), angular_velocity_covariance=np.zeros(9),
            linear_acceleration=_vec(0.0, 0.0, 9.81), linear_acceleration_covariance=np.zeros(9))
        s = from_imu_msg(msg)
        assert s.stamp_ns == 5 * 10 ** 9 and s.frame_id == "imu_link"
        np.testing.assert_array_equal(s.angular_velocity, [0.1, 0.2, 0.3])
        assert (s.orientation is not None) is has

    def test_navsatfix(self):
        msg = M["sensor_msgs/msg/NavSatFix"](
            header=_hdr(7, 8, "gps"), status=M["sensor_msgs/msg/NavSatStatus"](status=-1, service=1),
            latitude=48.1, longitude=11.5, altitude=500.0, position_covariance=np.eye(3).ravel() * 2.0,
            position_covariance_type=2)
        s = from_navsatfix_msg(msg)
        assert (s.stamp_ns, s.status, s.position_covariance_type) == (7_000_000_008, -1, 2)
        assert (s.latitude, s.longitude, s.altitude) == (48.1, 11.5, 500.0)
        assert s.position_covariance[2, 2] == 2.0

    def test_pose_msg(self):
        pose = M["geometry_msgs/msg/Pose"](position=_vec(1.0, 2.0, 3.0, "geometry_msgs/msg/Point"),
                                           orientation=_quat(0.0, 0.0, 1.0, 0.0))
        T = pose_from_pose_msg(pose)
        np.testing.assert_allclose(T[:3, :3], np.diag([-1, -1, 1]), atol=1e-12)
        np.testing.assert_array_equal(T[:3, 3], [1, 2, 3])


def test_rclpy_messages_give_the_same_samples():
    nav_msgs = pytest.importorskip("nav_msgs.msg")
    sensor_msgs = pytest.importorskip("sensor_msgs.msg")
    msg = nav_msgs.Odometry()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    msg.header.frame_id, msg.child_frame_id = "odom", "base_link"
    msg.pose.pose.position.x, msg.pose.pose.position.y, msg.pose.pose.position.z = 1.0, 2.0, 3.0
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = 0.6, 0.8
    msg.pose.covariance = [float(i) for i in range(36)]
    msg.twist.twist.linear.x, msg.twist.twist.angular.z = 4.0, 0.5
    s = from_odometry_msg(msg)
    check_odometry(s)
    other = from_odometry_msg(rosbags_odometry())
    for name in ("position", "orientation", "linear_velocity", "angular_velocity", "pose_covariance",
                 "twist_covariance"):
        np.testing.assert_array_equal(getattr(s, name), getattr(other, name))

    imu = sensor_msgs.Imu()
    imu.orientation_covariance[0] = -1.0
    imu.angular_velocity.z = 0.3
    assert from_imu_msg(imu).orientation is None
    fix = sensor_msgs.NavSatFix()
    fix.status.status = 0
    fix.latitude = 48.0
    assert from_navsatfix_msg(fix).status == 0
    assert stamp_to_ns(msg.header.stamp) == 12_000_000_345
