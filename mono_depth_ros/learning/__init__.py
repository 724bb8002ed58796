"""Offline learning: bag datasets, guarded training steps, trainer and CLIs (ROS-free)."""
