"""Domain presets of the synthetic world: how two deployments differ.

A :class:`DomainPreset` fixes everything that differs between deployments:
street layout and object density, palette and texture families, lighting and
exposure, camera height, pitch and field of view, and sensor noise. The two
presets ``A`` ("sunny_suburb") and ``B`` ("overcast_city") are deliberately far
apart so that a network trained on one is measurably worse on the other.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial.transform import Rotation

from mono_depth_ros.conventions import T_BASE_OPTICAL_ROTATION

__all__ = [
    "SensorNoise", "noise_with", "DomainPreset", "PRESETS", "PRESET_ALIASES", "get_preset",
    "T_camera_link_optical",
]


@dataclass(frozen=True)
class SensorNoise:
    """Noise and bias parameters of the simulated sensors (SI units).

    Odometry is wheel odometry: measured speed ``v*(1+odom_scale_error) + n_v``
    and yaw rate ``w + odom_yaw_rate_bias + n_w`` integrated in the plane.
    IMU biases are drawn once per drive: each axis ``N(0, *_bias_sigma)``.
    GPS noise is white in ENU with the given standard deviations.
    """

    odom_rate_hz: float = 50.0
    odom_scale_error: float = 0.01          # fraction of distance (systematic)
    odom_speed_noise: float = 0.05          # m/s, white
    odom_yaw_rate_bias: float = 0.002       # rad/s (systematic)
    odom_yaw_rate_noise: float = 0.01       # rad/s, white
    imu_rate_hz: float = 100.0
    gyro_noise: float = 0.003               # rad/s per sample, white
    gyro_bias_sigma: float = 0.002          # rad/s, per-drive constant
    accel_noise: float = 0.05               # m/s^2 per sample, white
    accel_bias_sigma: float = 0.05          # m/s^2, per-drive constant
    imu_orientation: bool = False           # publish an orientation estimate
    gps_rate_hz: float = 5.0
    gps_sigma_horizontal: float = 1.5       # m, per axis (east, north)
    gps_sigma_vertical: float = 3.0         # m
    camera_noise: float = 1.5               # std of additive pixel noise, 0..255 units


_NOISE_RANGES = {
    "odom_rate_hz": (1.0, 1000.0), "imu_rate_hz": (10.0, 2000.0), "gps_rate_hz": (0.1, 20.0),
}


def noise_with(base: SensorNoise, overrides) -> SensorNoise:
    """``base`` with fields replaced from a dict (or a "key=value,key=value" string).

    Raises:
        ValueError: naming an unknown field (and the allowed ones) or a bad value.
    """
    if overrides is None:
        return base
    if isinstance(overrides, SensorNoise):
        return overrides
    if isinstance(overrides, str):
        items = {}
        for part in filter(None, (p.strip() for p in overrides.split(","))):
            key, sep, val = part.partition("=")
            if not sep:
                raise ValueError(f"noise override {part!r} must look like key=value")
            items[key.strip()] = val.strip()
        overrides = items
    fields = {f.name: f for f in dataclasses.fields(SensorNoise)}
    changes = {}
    for key, val in dict(overrides).items():
        if key not in fields:
            raise ValueError(f"unknown noise parameter {key!r}; allowed: {', '.join(fields)}")
        if isinstance(getattr(base, key), bool):
            if isinstance(val, str):
                if val.lower() not in ("1", "0", "true", "false", "yes", "no"):
                    raise ValueError(f"noise parameter {key} must be true or false, got {val!r}")
                val = val.lower() in ("1", "true", "yes")
            changes[key] = bool(val)
            continue
        try:
            num = float(val)
        except (TypeError, ValueError):
            raise ValueError(f"noise parameter {key} must be a number, got {val!r}") from None
        lo, hi = _NOISE_RANGES.get(key, (0.0, 1e3))
        if not (lo <= num <= hi):
            raise ValueError(f"noise parameter {key} must be in [{lo:g}, {hi:g}], got {val!r}")
        changes[key] = num
    return dataclasses.replace(base, **changes)


@dataclass(frozen=True)
class DomainPreset:
    """One deployment domain. Angles in degrees where the name says so."""

    name: str
    label: str
    description: str
    # --- street layout (metres) and density
    lanes_per_direction: int
    lane_width: float
    parking_width: float
    sidewalk_width: float
    building_setback: tuple[float, float]
    building_length: tuple[float, float]
    building_height: tuple[float, float]
    building_gap: tuple[float, float]
    parked_car_prob: float
    tree_spacing: float
    pole_spacing: float
    moving_cars_per_km: float
    # --- trajectory
    cruise_speed: tuple[float, float]       # m/s
    stop_every_s: tuple[float, float]       # s between stops
    min_curve_radius: float                 # m
    # --- look
    palette_walls: tuple[tuple[float, float, float], ...]
    palette_cars: tuple[tuple[float, float, float], ...]
    brick_fraction: float
    asphalt_albedo: tuple[float, float, float]
    sidewalk_albedo: tuple[float, float, float]
    verge_albedo: tuple[float, float, float]
    foliage_albedo: tuple[float, float, float]
    sky_zenith: tuple[float, float, float]
    sky_horizon: tuple[float, float, float]
    sun_elevation_deg: float
    sun_azimuth_deg: float
    sun_intensity: float
    ambient: float
    shadows: bool
    exposure: float
    texture_contrast: float
    # --- camera
    camera_height: float                    # m above ground (base_link z=0 at ground)
    camera_forward: float                   # m ahead of base_link
    camera_pitch_deg: float                 # positive = looking down
    fx_per_width: float                     # fx / image width (square pixels)
    cy_fraction: float                      # cy / (H-1)
    stereo_baseline: float = 0.54
    shopfront_fraction: float = 0.0         # buildings with a shop window + sign on the ground floor
    stand_still: bool = False               # the vehicle stands at its start for the whole drive
    car_texture: float = 0.0                # strength of a livery pattern on car paint (0: plain paint)
    noise: SensorNoise = field(default_factory=SensorNoise)

    def T_base_camera_link(self) -> np.ndarray:
        """(4,4) ``T_base_link_camera_link``: camera body frame in base_link."""
        T = np.eye(4)
        T[:3, :3] = Rotation.from_euler("y", self.camera_pitch_deg, degrees=True).as_matrix()
        T[:3, 3] = (self.camera_forward, 0.0, self.camera_height)
        return T

    def T_base_camera(self) -> np.ndarray:
        """(4,4) ``T_base_link_camera_optical_frame``: the true camera extrinsic."""
        return self.T_base_camera_link() @ T_camera_link_optical()

    def T_base_right_camera(self) -> np.ndarray:
        """(4,4) ``T_base_link_camera_right_optical_frame`` (baseline along -y of camera_link)."""
        T = np.eye(4)
        T[1, 3] = -self.stereo_baseline
        return self.T_base_camera_link() @ T @ T_camera_link_optical()

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        """(3,3) pixel intrinsics K for an image of ``width`` x ``height``."""
        f = self.fx_per_width * width
        return np.array([[f, 0.0, (width - 1) / 2.0],
                         [0.0, f, self.cy_fraction * (height - 1)],
                         [0.0, 0.0, 1.0]])

    def replace(self, **changes) -> "DomainPreset":
        """A copy with some fields changed (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)


def T_camera_link_optical() -> np.ndarray:
    """(4,4) ``T_camera_link_camera_optical_frame`` (REP 103 fixed rotation)."""
    T = np.eye(4)
    T[:3, :3] = T_BASE_OPTICAL_ROTATION
    return T


_SUBURB = DomainPreset(
    name="A", label="sunny_suburb",
    description="low houses with gaps, trees and grass verges, one lane each way, "
                "bright low sun with hard shadows, warm saturated palette, KITTI-like camera",
    lanes_per_direction=1, lane_width=3.5, parking_width=2.3, sidewalk_width=2.5,
    building_setback=(4.0, 9.0), building_length=(9.0, 16.0), building_height=(5.0, 9.0),
    building_gap=(3.0, 10.0), parked_car_prob=0.35, tree_spacing=11.0, pole_spacing=40.0,
    moving_cars_per_km=20.0,
    cruise_speed=(9.0, 13.0), stop_every_s=(18.0, 30.0), min_curve_radius=70.0,
    palette_walls=((0.85, 0.78, 0.62), (0.92, 0.90, 0.84), (0.72, 0.45, 0.32),
                   (0.86, 0.70, 0.55), (0.65, 0.75, 0.80), (0.95, 0.85, 0.70)),
    palette_cars=((0.80, 0.10, 0.08), (0.10, 0.25, 0.70), (0.92, 0.92, 0.90),
                  (0.15, 0.15, 0.16), (0.95, 0.75, 0.10), (0.30, 0.55, 0.25)),
    brick_fraction=0.4,
    asphalt_albedo=(0.20, 0.19, 0.18), sidewalk_albedo=(0.62, 0.58, 0.52),
    verge_albedo=(0.22, 0.42, 0.12), foliage_albedo=(0.16, 0.38, 0.10),
    sky_zenith=(0.25, 0.45, 0.90), sky_horizon=(0.70, 0.82, 0.98),
    sun_elevation_deg=35.0, sun_azimuth_deg=60.0, sun_intensity=1.0, ambient=0.35,
    shadows=True, exposure=1.05, texture_contrast=1.0,
    camera_height=1.65, camera_forward=1.2, camera_pitch_deg=0.0,
    fx_per_width=0.58, cy_fraction=0.5,
)

_CITY = DomainPreset(
    name="B", label="overcast_city",
    description="tall continuous facades, two lanes each way, dense traffic and poles, "
                "flat overcast light, cool grey palette, lower wide-angle camera pitched down",
    lanes_per_direction=2, lane_width=3.25, parking_width=2.1, sidewalk_width=4.0,
    building_setback=(0.0, 1.0), building_length=(12.0, 30.0), building_height=(14.0, 32.0),
    building_gap=(0.0, 1.0), parked_car_prob=0.65, tree_spacing=35.0, pole_spacing=18.0,
    moving_cars_per_km=35.0,
    cruise_speed=(6.0, 10.0), stop_every_s=(12.0, 20.0), min_curve_radius=50.0,
    palette_walls=((0.55, 0.55, 0.57), (0.45, 0.47, 0.52), (0.62, 0.60, 0.56),
                   (0.38, 0.36, 0.35), (0.50, 0.42, 0.38), (0.70, 0.70, 0.72)),
    palette_cars=((0.35, 0.36, 0.38), (0.10, 0.10, 0.11), (0.75, 0.76, 0.78),
                  (0.20, 0.22, 0.35), (0.55, 0.55, 0.52), (0.45, 0.12, 0.10)),
    brick_fraction=0.15,
    asphalt_albedo=(0.30, 0.30, 0.31), sidewalk_albedo=(0.50, 0.50, 0.50),
    verge_albedo=(0.40, 0.40, 0.40), foliage_albedo=(0.18, 0.26, 0.16),
    sky_zenith=(0.62, 0.64, 0.68), sky_horizon=(0.80, 0.81, 0.83),
    sun_elevation_deg=60.0, sun_azimuth_deg=200.0, sun_intensity=0.25, ambient=0.75,
    shadows=False, exposure=1.25, texture_contrast=0.7,
    camera_height=1.30, camera_forward=1.6, camera_pitch_deg=4.0,
    fx_per_width=0.42, cy_fraction=0.42, shopfront_fraction=0.6,
    noise=SensorNoise(camera_noise=3.0, gps_sigma_horizontal=3.0, gps_sigma_vertical=5.0),
)

#: Domain presets by short name; readable aliases resolve to the same objects.
PRESETS: dict[str, DomainPreset] = {"A": _SUBURB, "B": _CITY}
PRESET_ALIASES: dict[str, str] = {p.label: k for k, p in PRESETS.items()}
PRESETS.update({p.label: p for p in list(PRESETS.values())})


def get_preset(name: str | DomainPreset) -> DomainPreset:
    """The preset called ``name`` ("A", "B" or a readable alias such as "sunny_suburb").

    Raises:
        ValueError: naming the valid presets.
    """
    if isinstance(name, DomainPreset):
        return name
    try:
        return PRESETS[str(name)]
    except KeyError:
        valid = ", ".join(f"{k!r} ({p.label})" for k, p in PRESETS.items() if k == p.name)
        raise ValueError(f"unknown preset {name!r}; valid presets: {valid}") from None
