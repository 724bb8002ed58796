"""mono_depth_ros: monocular metric depth for ROS 2 with online self-supervised adaptation.

Core modules (no rclpy): conventions, geometry, models, losses, metrics,
checkpoint, egomotion, adapt, synth. ROS adapter: mono_depth_ros.ros.
"""
__version__ = "0.1.0"
