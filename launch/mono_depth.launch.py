"""Launch the depth node.

ros2 launch mono_depth_ros mono_depth.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info \
    params_file:=/path/to/params.yaml use_sim_time:=true namespace:=front rviz:=true
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description():
    share = get_package_share_directory("mono_depth_ros")
    args = [
        DeclareLaunchArgument("image", default_value="/camera/image_raw", description="camera image topic"),
        DeclareLaunchArgument("camera_info", default_value="/camera/camera_info", description="camera info topic"),
        DeclareLaunchArgument("params_file", default_value=os.path.join(share, "config", "mono_depth.yaml"),
                              description="node parameters (YAML)"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="use /clock (bag replay)"),
        DeclareLaunchArgument("namespace", default_value="", description="namespace of the node and its outputs"),
        DeclareLaunchArgument("rviz", default_value="false", description="also start RViz2 with the package's view"),
    ]
    node = Node(
        package="mono_depth_ros",
        executable="depth_node",
        name="mono_depth",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[LaunchConfiguration("params_file"), {"use_sim_time": LaunchConfiguration("use_sim_time")}],
        remappings=[
            ("image", LaunchConfiguration("image")),
            ("image/compressed", [LaunchConfiguration("image"), "/compressed"]),
            ("camera_info", LaunchConfiguration("camera_info")),
        ],
    )
    # config/mono_depth.rviz names its topics relatively (image, depth/colorized, points): in the node's
    # namespace they resolve to the node's outputs, and `image` is remapped to the camera like the node's input.
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        namespace=LaunchConfiguration("namespace"),
        arguments=["-d", os.path.join(share, "config", "mono_depth.rviz")],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
        remappings=[("image", LaunchConfiguration("image"))],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(args + [node, rviz])
