"""Synthetic driving world: procedural streets, ray-cast rendering, simulated sensors.

Public API (others code against these names)::

    PRESETS, get_preset, DomainPreset, SynthFrame, render_drive, generate_bag

Heavy dependencies (open3d, rosbags) are imported only when rendering/writing.
"""
from mono_depth_ros.tools.synth.presets import PRESETS, DomainPreset, SensorNoise, get_preset
from mono_depth_ros.tools.synth.drive import SynthFrame, render_drive

__all__ = ["PRESETS", "DomainPreset", "SensorNoise", "get_preset", "SynthFrame",
           "render_drive", "generate_bag"]


def generate_bag(*args, **kwargs):
    """Render a drive into a rosbag2; see :func:`mono_depth_ros.tools.synth.bag.generate_bag`."""
    from mono_depth_ros.tools.synth.bag import generate_bag as _generate_bag
    return _generate_bag(*args, **kwargs)
