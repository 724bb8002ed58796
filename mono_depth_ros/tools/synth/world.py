"""Procedural street world: road centreline, ego trajectory, static meshes, traffic.

Everything is drawn from one ``numpy.random.Generator`` so that a seed fixes
the world bit for bit. Frames: ``map`` is ENU (x east, y north, z up, REP 105)
with the ground at z = 0 and the ego vehicle starting near the origin;
``base_link`` is x forward, y left, z up, at ground level under the vehicle.

Meshes are kept as "triangle soups" (no shared vertices) with per-triangle
attributes, because every triangle carries its own texture coordinates and
material: see :class:`Mesh`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.spatial.transform import Rotation, Slerp

from mono_depth_ros.tools.synth.presets import DomainPreset

__all__ = [
    "Material", "Mesh", "Road", "Trajectory", "Traffic", "World", "build_world",
    "GRAVITY",
]

GRAVITY = 9.80665
KERB_HEIGHT = 0.12
#: Street surface tessellation (metres): along the road, and the widest lateral strip.
STRIP_STEP = 2.0
STRIP_MAX_WIDTH = 8.0


class Material:
    """Material ids stored per triangle (0 is reserved for "no hit" / sky)."""

    SKY = 0
    ASPHALT = 1
    KERB = 2
    SIDEWALK = 3
    VERGE = 4
    FACADE = 5
    ROOF = 6
    CAR_PAINT = 7
    GLASS = 8
    TYRE = 9
    POLE = 10
    BARK = 11
    FOLIAGE = 12
    GROUND = 13
    COUNT = 14


@dataclass
class Mesh:
    """A triangle soup with per-triangle attributes.

    Attributes:
        xyz: (M,3,3) float64 corner positions.
        uv: (M,3,2) float64 texture coordinates in metres, per corner.
        material: (M,) int16 :class:`Material` ids.
        tint: (M,3) float32 albedo (linear RGB) of the triangle's object.
        param: (M,4) float32 per-object pattern parameters (material specific).
    """

    xyz: np.ndarray
    uv: np.ndarray
    material: np.ndarray
    tint: np.ndarray
    param: np.ndarray

    @staticmethod
    def empty() -> "Mesh":
        return Mesh(np.zeros((0, 3, 3)), np.zeros((0, 3, 2)), np.zeros(0, np.int16),
                    np.zeros((0, 3), np.float32), np.zeros((0, 4), np.float32))

    @staticmethod
    def concat(meshes: list["Mesh"]) -> "Mesh":
        meshes = [m for m in meshes if len(m.material)]
        if not meshes:
            return Mesh.empty()
        return Mesh(*(np.concatenate([getattr(m, f) for m in meshes])
                      for f in ("xyz", "uv", "material", "tint", "param")))

    def __len__(self) -> int:
        return len(self.material)

    def transformed(self, R: np.ndarray, t: np.ndarray) -> "Mesh":
        """Rigidly moved copy (texture coordinates stay attached to the object)."""
        return Mesh(self.xyz @ R.T + t, self.uv, self.material, self.tint, self.param)


def _quads_to_mesh(corners: np.ndarray, uv: np.ndarray, material, tint, param=None) -> Mesh:
    """(Q,4,3) quads (counter-clockwise) and (Q,4,2) uvs -> 2Q triangles."""
    q = len(corners)
    idx = np.array([[0, 1, 2], [0, 2, 3]])
    xyz = corners[:, idx].reshape(2 * q, 3, 3)
    uvs = uv[:, idx].reshape(2 * q, 3, 2)
    mat = np.repeat(np.broadcast_to(np.asarray(material, np.int16), (q,)), 2)
    tint = np.repeat(np.broadcast_to(np.asarray(tint, np.float32), (q, 3)), 2, axis=0)
    param = np.zeros((q, 4), np.float32) if param is None else np.broadcast_to(
        np.asarray(param, np.float32), (q, 4))
    return Mesh(xyz, uvs, mat, tint, np.repeat(param, 2, axis=0))


def box_mesh(size, material, tint, param=None, z0: float = 0.0, top: bool = True,
             top_material=None, uv_offset=(0.0, 0.0)) -> Mesh:
    """Axis-aligned box centred on x, y in its local frame, from z0 up (no bottom face).

    Texture coordinates: vertical faces get (distance along the face, z), the top
    face (x, y), all in metres plus ``uv_offset``.
    """
    lx, ly, lz = size
    x0, x1, y0, y1, z1 = -lx / 2, lx / 2, -ly / 2, ly / 2, z0 + lz
    # Side faces as (start corner, end corner) walking counter-clockwise seen from above.
    base = [((x0, y0), (x1, y0)), ((x1, y0), (x1, y1)), ((x1, y1), (x0, y1)), ((x0, y1), (x0, y0))]
    corners, uvs = [], []
    u_start = 0.0
    for (ax, ay), (bx, by) in base:
        length = float(np.hypot(bx - ax, by - ay))
        corners.append([(ax, ay, z0), (bx, by, z0), (bx, by, z1), (ax, ay, z1)])
        uvs.append([(u_start, z0), (u_start + length, z0), (u_start + length, z1), (u_start, z1)])
        u_start += length
    n_side = 4
    corners_a = np.array(corners, float)
    uv_a = np.array(uvs, float) + np.asarray(uv_offset)
    mats = [material] * n_side
    if top:
        corners_a = np.concatenate([corners_a, [[(x0, y0, z1), (x1, y0, z1), (x1, y1, z1), (x0, y1, z1)]]])
        uv_a = np.concatenate([uv_a, [[(x0, y0), (x1, y0), (x1, y1), (x0, y1)]]])
        mats.append(material if top_material is None else top_material)
    return _quads_to_mesh(corners_a, uv_a, np.array(mats, np.int16), tint, param)


def car_template(rng: np.random.Generator, colour) -> Mesh:
    """A low-poly car in its local frame (x forward, z up, origin on the ground)."""
    length = rng.uniform(3.9, 4.8)
    width = rng.uniform(1.7, 1.9)
    body_h = rng.uniform(0.65, 0.8)
    cabin_h = rng.uniform(0.5, 0.65)
    clearance = 0.3
    seed = float(rng.uniform(0, 100))
    body = box_mesh((length, width, body_h), Material.CAR_PAINT, colour, (seed, 0, 0, 0), z0=clearance)
    lx, ly, z0 = length * 0.5, width * 0.86, clearance + body_h
    cabin = box_mesh((lx, ly, cabin_h), Material.CAR_PAINT, colour, (seed, 0, 0, 0), z0=z0)
    # Window panes 1 cm proud of the cabin faces, leaving paint pillars and frames.
    za, zb, gap, eps = z0 + 0.08, z0 + cabin_h - 0.06, 0.1, 0.01
    panes = []
    for x in (-lx / 2 - eps, lx / 2 + eps):           # windscreen / rear window (in the y-z plane)
        ya, yb = -ly / 2 + gap, ly / 2 - gap
        panes.append([(x, ya, za), (x, yb, za), (x, yb, zb), (x, ya, zb)])
    for y in (-ly / 2 - eps, ly / 2 + eps):           # two side windows each, split by a B-pillar
        for xa, xb in ((-lx / 2 + gap, -0.05), (0.05, lx / 2 - gap)):
            panes.append([(xa, y, za), (xb, y, za), (xb, y, zb), (xa, y, zb)])
    panes = np.array(panes, float)
    pane_uv = np.stack([panes[..., 0] + panes[..., 1], panes[..., 2]], -1)
    glass = _quads_to_mesh(panes, pane_uv, Material.GLASS, (0.05, 0.06, 0.07), (seed, 0, 0, 0))
    cabin = Mesh.concat([cabin, glass]).transformed(np.eye(3), np.array([-0.1 * length, 0, 0]))
    wheels = []
    for sx in (-0.32, 0.32):
        for sy in (-1, 1):
            w = box_mesh((0.62, 0.22, 0.62), Material.TYRE, (0.03, 0.03, 0.03), z0=0.0)
            wheels.append(w.transformed(np.eye(3), np.array([sx * length, sy * (width / 2 - 0.08), 0])))
    return Mesh.concat([body, cabin] + wheels)


def _rz(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class Road:
    """A smooth road centreline parameterised by arc length ``s`` (metres).

    Curvature is a sequence of straights and constant-radius curves smoothed
    into clothoid-like transitions; heading stays within +-1.2 rad of the start
    so the road never folds back onto itself.
    """

    DS = 0.25

    def __init__(self, rng: np.random.Generator, s_min: float, s_max: float, min_radius: float):
        n = int(np.ceil((s_max - s_min) / self.DS)) + 1
        self.s = s_min + self.DS * np.arange(n)
        kappa = np.zeros(n)
        heading = 0.0
        i = int(np.searchsorted(self.s, 0.0)) + int(rng.uniform(20, 60) / self.DS)  # straight start
        while i < n:
            radius = rng.uniform(min_radius, 4 * min_radius)
            length = min(rng.uniform(30, 90), 0.9 * radius)
            if heading > 0.3:
                sign = -1.0
            elif heading < -0.3:
                sign = 1.0
            else:
                sign = rng.choice([-1.0, 1.0])
            j = min(n, i + int(length / self.DS))
            kappa[i:j] = sign / radius
            heading += sign * (j - i) * self.DS / radius
            i = j + int(rng.uniform(30, 120) / self.DS)
        kappa = gaussian_filter1d(kappa, 8.0 / self.DS, mode="nearest")
        i0 = int(np.searchsorted(self.s, 0.0))
        psi = np.cumsum(kappa) * self.DS
        psi -= psi[i0]
        psi += rng.uniform(-np.pi, np.pi)          # the street's bearing in ENU
        xy = np.cumsum(np.stack([np.cos(psi), np.sin(psi)], 1), 0) * self.DS
        xy -= xy[i0]
        self.kappa, self.heading, self.xy = kappa, psi, xy

    def point(self, s, d):
        """World (x, y) of arc length ``s`` and lateral offset ``d`` (left positive); arrays broadcast."""
        s = np.asarray(s, float)
        h = np.interp(s, self.s, self.heading)
        x = np.interp(s, self.s, self.xy[:, 0]) - np.sin(h) * d
        y = np.interp(s, self.s, self.xy[:, 1]) + np.cos(h) * d
        return np.stack([x, y], -1), h


class Trajectory:
    """Dense (1 kHz) ground-truth ego motion with exact derivatives for the IMU.

    Attributes (N samples at ``dt``): ``t`` (N,), ``pos`` (N,3) base_link origin
    in map, ``rot`` Rotation of T_map_base, ``v`` (N,) forward speed, ``s`` (N,)
    arc length, ``omega_body`` (N,3) rad/s, ``specific_force_body`` (N,3) m/s^2.
    """

    DT = 0.001

    def __init__(self, rng: np.random.Generator, road: Road, preset: DomainPreset,
                 duration_s: float, lane_offset: float):
        dt = self.DT
        n = int(np.ceil((duration_s + 1.0) / dt)) + 1
        t = dt * np.arange(n)
        # Target speed by phases: cruise / brake to a stop / stand / accelerate.
        v = np.empty(n)
        v_now = rng.uniform(*preset.cruise_speed)
        i = 0
        next_stop = rng.uniform(*preset.stop_every_s) * rng.uniform(0.4, 1.0)
        while i < n:
            cruise = max(1, int(next_stop / dt))
            target = rng.uniform(*preset.cruise_speed)
            ramp = np.clip(v_now + np.sign(target - v_now) * 0.8 * dt * np.arange(cruise),
                           min(v_now, target), max(v_now, target))
            v[i:i + cruise] = ramp[: n - i]
            i += cruise
            v_now = float(ramp[-1])
            decel = rng.uniform(1.8, 3.0)
            k = int(v_now / decel / dt)
            v[i:i + k] = (v_now - decel * dt * np.arange(k))[: max(0, n - i)]
            i += k
            stand = int(rng.uniform(1.5, 4.0) / dt)
            v[i:i + stand] = 0.0
            i += stand
            acc = rng.uniform(1.2, 2.2)
            v_new = rng.uniform(*preset.cruise_speed)
            k = int(v_new / acc / dt)
            v[i:i + k] = (acc * dt * np.arange(k))[: max(0, n - i)]
            i += k
            v_now = v_new
            next_stop = rng.uniform(*preset.stop_every_s)
        if preset.stand_still:   # after the draws above: the same road and start as the moving drive
            v[:] = 0.0
        # Jerk-limited: smooth the phases (a Gaussian of a non-negative signal stays >= 0).
        v = np.maximum(gaussian_filter1d(v, 0.3 / dt, mode="nearest"), 0.0)
        s = np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * dt)])
        a_long = np.gradient(v, dt)
        xy, yaw = road.point(s, lane_offset)
        kappa = np.interp(s, road.s, road.kappa)
        a_lat = v ** 2 * kappa
        # Suspension: dive under braking, roll outwards in curves, plus road-surface waviness in s.
        waves = np.zeros((3, n))
        for row, amp in enumerate((0.004, 0.003, 0.006)):     # pitch rad, roll rad, heave m
            for _ in range(3):
                lam, ph = rng.uniform(4.0, 25.0), rng.uniform(0, 2 * np.pi)
                waves[row] += amp / 3 * np.sin(2 * np.pi * s / lam + ph)
        pitch = -0.006 * a_long + waves[0]
        roll = 0.008 * a_lat + waves[1]
        heave = waves[2]
        pos = np.column_stack([xy, heave])
        rot = Rotation.from_euler("ZYX", np.column_stack([yaw, pitch, roll]))
        self.t, self.pos, self.rot, self.v, self.s = t, pos, rot, v, s
        self.yaw, self.pitch, self.roll = yaw, pitch, roll
        # Derivatives by central differences on the 1 kHz grid (signals are smooth).
        vel = np.gradient(pos, dt, axis=0)
        acc = np.gradient(vel, dt, axis=0)
        self.vel_world = vel
        quats = rot.as_quat()
        r_prev = Rotation.from_quat(np.concatenate([quats[:1], quats[:-1]]))
        r_next = Rotation.from_quat(np.concatenate([quats[1:], quats[-1:]]))
        span = np.full(n, 2 * dt)
        span[0] = span[-1] = dt
        self.omega_body = (r_prev.inv() * r_next).as_rotvec() / span[:, None]
        self.specific_force_body = rot.inv().apply(acc + np.array([0.0, 0.0, GRAVITY]))
        self.vel_body = rot.inv().apply(vel)
        self._slerp = Slerp(t, rot)

    @property
    def duration(self) -> float:
        return float(self.t[-1])

    def T_map_base(self, t_s) -> np.ndarray:
        """(...,4,4) true vehicle pose at time(s) ``t_s`` (seconds from the start)."""
        t_arr = np.atleast_1d(np.asarray(t_s, float))
        if t_arr.min() < 0 or t_arr.max() > self.t[-1]:
            raise ValueError(f"time outside the trajectory [0, {self.t[-1]}] s")
        T = np.tile(np.eye(4), (len(t_arr), 1, 1))
        T[:, :3, :3] = self._slerp(t_arr).as_matrix()
        for k in range(3):
            T[:, k, 3] = np.interp(t_arr, self.t, self.pos[:, k])
        return T if np.ndim(t_s) else T[0]

    def sample(self, t_s: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Linearly interpolate a dense (N,...) signal at times ``t_s`` (M,) -> (M,...)."""
        flat = values.reshape(len(self.t), -1)
        out = np.stack([np.interp(t_s, self.t, flat[:, k]) for k in range(flat.shape[1])], -1)
        return out.reshape((len(t_s),) + values.shape[1:])


class Traffic:
    """Independently moving cars that follow lanes of the road.

    Each car ``i`` has a lane offset ``d_i``, direction ``+1`` (with the ego) or
    ``-1`` (oncoming) and an arc length ``s_i(t) = s0_i + dir_i * (v_i t + A_i (sin(w_i t + p_i) - sin p_i))``
    with ``A_i w_i < v_i`` so it never reverses. Cars of one lane share their speed
    profile (a platoon with >= 9 m gaps), so they never drive through each other.
    """

    def __init__(self, rng: np.random.Generator, road: Road, preset: DomainPreset,
                 s_lo: float, s_hi: float, ego_lane: float):
        lanes = preset.lanes_per_direction
        w = preset.lane_width
        # (offset, direction) of every traffic lane: all oncoming lanes, and the outer
        # same-direction lane when there are two or more (the ego drives in the inner one).
        lane_list = [((k + 0.5) * w, -1.0) for k in range(lanes)]
        if lanes >= 2:
            lane_list.append((-(lanes - 0.5) * w, 1.0))
        length = s_hi - s_lo
        n_cars = max(2, int(round(preset.moving_cars_per_km * length / 1000.0)))
        d, direction, s0, speed, omega, amp, phase = [], [], [], [], [], [], []

        def add(lane_d, lane_dir, starts):
            v = rng.uniform(6.0, 14.0)
            om = rng.uniform(0.1, 0.4)
            a = 0.5 * v / om * rng.uniform(0, 1)
            ph = rng.uniform(0, 2 * np.pi)
            for st in starts:
                d.append(lane_d), direction.append(lane_dir), s0.append(st)
                speed.append(v), omega.append(om), amp.append(a), phase.append(ph)

        # A lead car in the ego lane, faster than the ego ever drives: it pulls away.
        v_lead = preset.cruise_speed[1] + rng.uniform(2, 4)
        d.append(ego_lane), direction.append(1.0), s0.append(rng.uniform(15, 30))
        speed.append(v_lead), omega.append(0.2), amp.append(0.0), phase.append(0.0)
        per_lane = np.diff(np.round(np.linspace(0, n_cars, len(lane_list) + 1)).astype(int))
        for (lane_d, lane_dir), k in zip(lane_list, per_lane):
            hi = s_hi + (600.0 if lane_dir < 0 else 0.0)
            starts = np.sort(rng.uniform(s_lo, hi, k))
            starts = starts + 9.0 * np.arange(k)            # enforce the minimum gap
            add(lane_d, lane_dir, starts)
        self.d = np.array(d)
        self.direction = np.array(direction)
        self.s0 = np.array(s0)
        self.speed = np.array(speed)
        self.omega = np.array(omega)
        self.amp = np.array(amp)
        self.phase = np.array(phase)
        cars = self.d                                       # one template per car
        self.templates = [car_template(rng, preset.palette_cars[rng.integers(len(preset.palette_cars))])
                          for _ in cars]
        self.road = road

    def __len__(self) -> int:
        return len(self.d)

    def arc_length(self, t: float) -> np.ndarray:
        """(C,) arc length of every car at time ``t``."""
        travel = self.speed * t + self.amp * (np.sin(self.omega * t + self.phase) - np.sin(self.phase))
        return self.s0 + self.direction * travel

    def meshes_at(self, t: float, centre_xy=None, radius: float = 200.0) -> list[Mesh]:
        """Each car (within ``radius`` of ``centre_xy``) posed at time ``t``, in map."""
        s = self.arc_length(t)
        xy, h = self.road.point(s, self.d)
        yaw = h + np.where(self.direction < 0, np.pi, 0.0)
        keep = np.ones(len(s), bool)
        if centre_xy is not None:
            keep = np.hypot(*(xy - centre_xy).T) < radius
        keep &= (s > self.road.s[0] + 5) & (s < self.road.s[-1] - 5)
        return [self.templates[i].transformed(_rz(yaw[i]), np.array([xy[i, 0], xy[i, 1], 0.0]))
                for i in np.flatnonzero(keep)]


def _street_mesh(road: Road, preset: DomainPreset, s_lo: float, s_hi: float) -> Mesh:
    """Road, kerbs, sidewalks and verges as one strip swept along the centreline."""
    half = preset.lanes_per_direction * preset.lane_width + preset.parking_width
    sw = preset.sidewalk_width
    lot = 40.0
    kh = KERB_HEIGHT
    # Cross-section (d, z) from right (negative d) to left, and the material of each interval.
    prof = [(-lot, kh), (-half - sw, kh), (-half - 0.15, kh), (-half, kh), (-half, 0.0),
            (half, 0.0), (half, kh), (half + 0.15, kh), (half + sw, kh), (lot, kh)]
    mats = [Material.VERGE, Material.SIDEWALK, Material.KERB, Material.KERB, Material.ASPHALT,
            Material.KERB, Material.KERB, Material.SIDEWALK, Material.VERGE]
    tints = {Material.VERGE: preset.verge_albedo, Material.SIDEWALK: preset.sidewalk_albedo,
             Material.KERB: tuple(min(1.0, 1.1 * c) for c in preset.sidewalk_albedo),
             Material.ASPHALT: preset.asphalt_albedo}
    # Split wide strips laterally: long thin triangles have large, overlapping
    # bounding boxes on curves and slow down Embree's BVH traversal.
    fine_prof, fine_mats = [prof[0]], []
    for (d0, z0), (d1, z1), mat in zip(prof[:-1], prof[1:], mats):
        k = max(1, int(np.ceil(abs(d1 - d0) / STRIP_MAX_WIDTH))) if z0 == z1 else 1
        for j in range(1, k + 1):
            fine_prof.append((d0 + (d1 - d0) * j / k, z0 + (z1 - z0) * j / k))
            fine_mats.append(mat)
    prof, mats = fine_prof, fine_mats
    s_knots = np.arange(s_lo, s_hi + 1e-9, STRIP_STEP)
    parts = []
    for (d0, z0), (d1, z1), mat in zip(prof[:-1], prof[1:], mats):
        p0, _ = road.point(s_knots, d0)
        p1, _ = road.point(s_knots, d1)
        a, b = slice(None, -1), slice(1, None)
        corners = np.stack([
            np.column_stack([p0[a], np.full(len(s_knots) - 1, z0)]),
            np.column_stack([p1[a], np.full(len(s_knots) - 1, z1)]),
            np.column_stack([p1[b], np.full(len(s_knots) - 1, z1)]),
            np.column_stack([p0[b], np.full(len(s_knots) - 1, z0)]),
        ], 1)
        v0, v1 = d0 + z0, d1 + z1           # lateral texture coordinate (vertical kerb face: z)
        uv = np.stack([np.column_stack([s_knots[a], np.full(len(s_knots) - 1, v0)]),
                       np.column_stack([s_knots[a], np.full(len(s_knots) - 1, v1)]),
                       np.column_stack([s_knots[b], np.full(len(s_knots) - 1, v1)]),
                       np.column_stack([s_knots[b], np.full(len(s_knots) - 1, v0)])], 1)
        parts.append(_quads_to_mesh(corners, uv, mat, tints[mat], (half, 0, 0, 0)))
    return Mesh.concat(parts)


def _pose_on_road(road: Road, s: float, d: float, z: float = 0.0, yaw_extra: float = 0.0):
    xy, h = road.point(np.array([s]), d)
    return _rz(float(h[0]) + yaw_extra), np.array([xy[0, 0], xy[0, 1], z])


def _unit_sphere() -> tuple[np.ndarray, np.ndarray]:
    """Vertices and faces of a subdivided icosahedron (open3d's generator)."""
    import open3d as o3d
    sphere = o3d.geometry.TriangleMesh.create_icosahedron(1.0)
    sphere = sphere.subdivide_loop(1)
    v = np.asarray(sphere.vertices)
    return v / np.linalg.norm(v, axis=1, keepdims=True), np.asarray(sphere.triangles)


def _triplanar_uv(xyz: np.ndarray) -> np.ndarray:
    """(M,3,3) triangles -> (M,3,2) uvs: project each triangle on the plane its normal faces most."""
    n = np.abs(np.cross(xyz[:, 1] - xyz[:, 0], xyz[:, 2] - xyz[:, 0]))
    axis = np.argmax(n, axis=1)
    pairs = np.array([[1, 2], [0, 2], [0, 1]])[axis]            # drop the dominant axis
    return np.take_along_axis(xyz, np.repeat(pairs[:, None, :], 3, axis=1), axis=2)


def _static_objects(rng: np.random.Generator, road: Road, preset: DomainPreset,
                    s_lo: float, s_hi: float) -> Mesh:
    half = preset.lanes_per_direction * preset.lane_width + preset.parking_width
    front = half + preset.sidewalk_width
    parts: list[Mesh] = []
    sph_v, sph_f = _unit_sphere()
    for side in (-1.0, 1.0):
        # Buildings: boxes aligned with the street, facades facing it.
        s = s_lo + rng.uniform(0, 10)
        while s < s_hi:
            length = rng.uniform(*preset.building_length)
            depth = rng.uniform(8.0, 16.0)
            height = rng.uniform(*preset.building_height)
            setback = rng.uniform(*preset.building_setback)
            colour = np.array(preset.palette_walls[rng.integers(len(preset.palette_walls))])
            colour = np.clip(colour * rng.uniform(0.85, 1.1), 0, 1)
            brick = float(rng.random() < preset.brick_fraction)
            floor_h = rng.uniform(2.8, 3.6)
            win_sx = rng.uniform(2.2, 4.0)
            param = (win_sx, floor_h, brick, rng.uniform(0, 1000))
            box = box_mesh((depth, length, height), Material.FACADE, colour, param,
                           top_material=Material.ROOF, uv_offset=(rng.uniform(0, 50), 0.0))
            box.tint[box.material == Material.ROOF] = (0.25, 0.22, 0.22)
            d_c = side * (front + setback + depth / 2)
            R, t = _pose_on_road(road, s + length / 2, d_c, z=KERB_HEIGHT)
            parts.append(box.transformed(R, t))
            s += length + rng.uniform(*preset.building_gap)
        # Parked cars in the parking strip.
        s = s_lo + rng.uniform(0, 6)
        while s < s_hi:
            if rng.random() < preset.parked_car_prob:
                car = car_template(rng, preset.palette_cars[rng.integers(len(preset.palette_cars))])
                d = side * (half - preset.parking_width / 2)
                flip = np.pi if rng.random() < 0.5 else 0.0
                R, t = _pose_on_road(road, s, d, yaw_extra=flip + rng.normal(0, 0.03))
                parts.append(car.transformed(R, t))
            s += rng.uniform(5.5, 7.5)
        # Trees near the kerb.
        s = s_lo + rng.uniform(0, preset.tree_spacing)
        while s < s_hi:
            d = side * (half + rng.uniform(0.8, 1.4))
            h_trunk = rng.uniform(2.0, 3.2)
            R, t = _pose_on_road(road, s, d, z=KERB_HEIGHT, yaw_extra=rng.uniform(0, np.pi))
            trunk = box_mesh((0.3, 0.3, h_trunk), Material.BARK, (0.30, 0.22, 0.15), top=False)
            r = rng.uniform(1.5, 2.6)
            scale = np.array([r, r, r * rng.uniform(0.9, 1.4)]) * (1 + 0.12 * rng.standard_normal((len(sph_v), 1)))
            verts = sph_v * scale + np.array([0, 0, h_trunk + 0.8 * r])
            xyz = verts[sph_f]
            uv = _triplanar_uv(xyz)
            crown = Mesh(xyz, uv, np.full(len(sph_f), Material.FOLIAGE, np.int16),
                         np.tile(np.float32(preset.foliage_albedo) * np.float32(rng.uniform(0.8, 1.2)),
                                 (len(sph_f), 1)),
                         np.tile(np.float32([rng.uniform(0, 100), 0, 0, 0]), (len(sph_f), 1)))
            parts.append(Mesh.concat([trunk, crown]).transformed(R, t))
            s += preset.tree_spacing * rng.uniform(0.7, 1.3)
        # Poles (street lights) with an arm over the road.
        s = s_lo + rng.uniform(0, preset.pole_spacing)
        while s < s_hi:
            d = side * (half + 0.45)
            R, t = _pose_on_road(road, s, d, z=KERB_HEIGHT)
            pole = box_mesh((0.16, 0.16, 7.0), Material.POLE, (0.45, 0.46, 0.48))
            arm = box_mesh((0.1, 1.8, 0.1), Material.POLE, (0.45, 0.46, 0.48), z0=6.8)
            arm = arm.transformed(np.eye(3), np.array([0.0, -side * 0.9, 0.0]))
            parts.append(Mesh.concat([pole, arm]).transformed(R, t))
            s += preset.pole_spacing * rng.uniform(0.8, 1.2)
    return Mesh.concat(parts)


@dataclass
class World:
    """A whole drive: road, static meshes, traffic, ego trajectory."""

    preset: DomainPreset
    road: Road
    static: Mesh
    traffic: Traffic
    trajectory: Trajectory
    ego_lane: float


def build_world(preset: DomainPreset, seed: int, duration_s: float) -> World:
    """Deterministically build the world for one drive of ``duration_s`` seconds."""
    rng = np.random.default_rng([int(seed), 0x5A17])
    max_dist = preset.cruise_speed[1] * (duration_s + 1.0) + 10.0
    s_lo, s_hi = -120.0, max_dist + 250.0
    road = Road(rng, s_lo - 20.0, s_hi + 700.0, preset.min_curve_radius)
    ego_lane = -preset.lane_width / 2
    traj = Trajectory(rng, road, preset, duration_s, ego_lane)
    s_hi = float(traj.s[-1]) + 250.0
    static = Mesh.concat([_street_mesh(road, preset, s_lo, s_hi),
                          _static_objects(rng, road, preset, s_lo, s_hi),
                          _ground_mesh(road, preset)])
    traffic = Traffic(rng, road, preset, s_lo, s_hi, ego_lane)
    return World(preset, road, static, traffic, traj, ego_lane)


def _ground_mesh(road: Road, preset: DomainPreset) -> Mesh:
    """A large ground plane just below the street (seen past the verges and road end)."""
    c = road.xy.mean(0)
    r = 4000.0
    corners = np.array([[[c[0] - r, c[1] - r, -0.3], [c[0] + r, c[1] - r, -0.3],
                         [c[0] + r, c[1] + r, -0.3], [c[0] - r, c[1] + r, -0.3]]])
    uv = corners[..., :2]
    return _quads_to_mesh(corners, uv, Material.GROUND, preset.verge_albedo)
