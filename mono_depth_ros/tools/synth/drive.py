"""A drive: world + renderer + camera timing, yielding :class:`SynthFrame` s."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from mono_depth_ros.conventions import NS_PER_S
from mono_depth_ros.tools.synth.presets import DomainPreset, get_preset
from mono_depth_ros.tools.synth.world import World, build_world

__all__ = ["SynthFrame", "Drive", "DriveConfig", "render_drive", "DEFAULT_START_NS"]

#: Stamp of the first sample of every drive (2025-06-15T12:00:00Z): fixed for reproducibility.
DEFAULT_START_NS = 1_749_988_800 * NS_PER_S


@dataclass(frozen=True)
class SynthFrame:
    """One camera frame with exact ground truth.

    Attributes:
        stamp_ns: sensor time (integer ns).
        image: (H,W,3) uint8 RGB.
        depth: (H,W) float32 metres (optical-frame z), +inf where no hit (sky).
        T_map_camera: (4,4) float64 camera OPTICAL frame pose in ``map``.
        K: (3,3) float64 pixel intrinsics.
        dynamic_mask: (H,W) bool, pixels on independently moving objects.
        right_image: (H,W,3) uint8 right stereo view, or None.
    """

    stamp_ns: int
    image: np.ndarray
    depth: np.ndarray
    T_map_camera: np.ndarray
    K: np.ndarray
    dynamic_mask: np.ndarray
    right_image: np.ndarray | None = None


@dataclass(frozen=True)
class DriveConfig:
    """Validated options of a drive (see :func:`DriveConfig.make`)."""

    preset: DomainPreset
    seed: int
    duration_s: float
    width: int
    height: int
    rate_hz: float
    stereo: bool
    start_ns: int
    camera_noise: bool

    @staticmethod
    def make(preset="A", seed=0, duration_s=60.0, width=640, height=192, rate_hz=10.0,
             stereo=False, start_ns=DEFAULT_START_NS, camera_noise=True) -> "DriveConfig":
        """Check every option; raises ValueError naming the parameter and allowed values."""
        p = get_preset(preset)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        _check_range("duration_s", duration_s, 0.1, 3600.0)
        for name, val in (("width", width), ("height", height)):
            if isinstance(val, bool) or not isinstance(val, (int, np.integer)) or not 16 <= val <= 4096:
                raise ValueError(f"{name} must be an integer in [16, 4096], got {val!r}")
        _check_range("rate_hz", rate_hz, 0.5, 60.0)
        if not isinstance(start_ns, (int, np.integer)) or start_ns < 0:
            raise ValueError(f"start_ns must be a non-negative integer, got {start_ns!r}")
        return DriveConfig(p, int(seed), float(duration_s), int(width), int(height), float(rate_hz),
                           bool(stereo), int(start_ns), bool(camera_noise))


def _check_range(name: str, value, lo: float, hi: float) -> None:
    try:
        ok = lo <= float(value) <= hi and math.isfinite(float(value))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{name} must be a number in [{lo:g}, {hi:g}], got {value!r}")


class Drive:
    """The world of one drive and its camera model; renders frames on demand."""

    def __init__(self, config: DriveConfig, threads: int | None = None):
        from mono_depth_ros.tools.synth.render import Renderer   # open3d loads only when rendering

        self.config = config
        self.preset = config.preset
        self.world: World = build_world(config.preset, config.seed, config.duration_s)
        self.renderer = Renderer(self.world.static, config.preset, config.seed, threads=threads)
        self.K = config.preset.intrinsics(config.width, config.height)
        self.T_base_camera = config.preset.T_base_camera()
        self.T_base_right = config.preset.T_base_right_camera()
        n = int(math.floor(config.duration_s * config.rate_hz + 1e-9)) + 1
        #: Camera sample times, integer ns offsets from the start.
        self.frame_offsets_ns = [int(round(k * NS_PER_S / config.rate_hz)) for k in range(n)]

    def __len__(self) -> int:
        return len(self.frame_offsets_ns)

    def T_map_camera(self, offset_ns: int) -> np.ndarray:
        """(4,4) true optical-frame pose at ``offset_ns`` after the start."""
        return self.world.trajectory.T_map_base(offset_ns / NS_PER_S) @ self.T_base_camera

    def frame(self, k: int) -> SynthFrame:
        """Render camera frame ``k`` (deterministic: depends only on seed and k)."""
        cfg = self.config
        off = self.frame_offsets_ns[k]
        t = off / NS_PER_S
        T_map_base = self.world.trajectory.T_map_base(t)
        T_cam = T_map_base @ self.T_base_camera
        dyn = self.world.traffic.meshes_at(t, centre_xy=T_map_base[:2, 3], radius=250.0)
        rng = np.random.default_rng([cfg.seed, 0xCA3, k]) if cfg.camera_noise else None
        out = self.renderer.render(T_cam, self.K, cfg.width, cfg.height, dyn, rng)
        right = None
        if cfg.stereo:
            rng_r = np.random.default_rng([cfg.seed, 0xCA4, k]) if cfg.camera_noise else None
            right = self.renderer.render(T_map_base @ self.T_base_right, self.K, cfg.width, cfg.height,
                                         dyn, rng_r).image
        return SynthFrame(cfg.start_ns + off, out.image, out.depth, T_cam, self.K.copy(),
                          out.dynamic, right)

    def frames(self) -> Iterator[SynthFrame]:
        for k in range(len(self)):
            yield self.frame(k)


def render_drive(preset="A", seed=0, duration_s=60.0, width=640, height=192, rate_hz=10.0,
                 stereo=False, **options) -> Iterator[SynthFrame]:
    """Render a drive frame by frame.

    Args:
        preset: "A"/"B" or a readable alias ("sunny_suburb", "overcast_city") or a DomainPreset.
        seed: world, trajectory and noise seed (same seed: identical frames).
        duration_s, width, height, rate_hz, stereo: drive and camera settings.
        **options: ``start_ns`` (stamp of t=0), ``camera_noise`` (bool).
    Yields:
        :class:`SynthFrame` at ``rate_hz``, from t = 0 to ``duration_s`` inclusive.
    Raises:
        ValueError: for an unknown preset/option or an out-of-range value (before rendering).
    """
    allowed = {"start_ns", "camera_noise"}
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    cfg = DriveConfig.make(preset, seed, duration_s, width, height, rate_hz, stereo, **options)
    return Drive(cfg).frames()
