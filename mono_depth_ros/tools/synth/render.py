"""CPU ray-cast renderer: open3d ``RaycastingScene`` + vectorised procedural shading.

Per frame: one ray per pixel, cast against the static scene (built once per
drive) and a small scene of the moving cars (built per frame); the nearer hit
wins. GT depth is exact: ray directions are ``R_map_cam @ K^-1 [u, v, 1]`` so
the hit parameter ``t_hit`` *is* the optical-frame z (metres).

Texturing is evaluated in world/object space from each hit's interpolated
texture coordinates (metres). Procedural noise comes from a periodic fractal
noise tile with a pre-blurred "mip" stack chosen per pixel from its footprint
(metres per pixel), and pattern edges (bricks, windows, lane markings) are
box-filtered analytically by the same footprint; this is hand-written because
open3d has no texture sampling for ray hits, and it keeps the image free of
frame-to-frame aliasing shimmer that would poison photometric losses.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import open3d as o3d

from mono_depth_ros.conventions import pixel_rays
from mono_depth_ros.tools.synth.presets import DomainPreset
from mono_depth_ros.tools.synth.world import Material, Mesh

__all__ = ["NoiseTile", "RenderOutput", "Renderer", "camera_rays"]

#: Hits are shaded in this many fixed chunks (threads work on chunks).
SHADE_CHUNKS = 2


class NoiseTile:
    """Periodic fractal (1/f) noise, (S,S) zero-mean unit-std, with a blurred stack.

    ``stack[l]`` is the tile low-passed with a Gaussian of sigma ``2**l`` texels
    (computed in the Fourier domain, so it stays periodic).
    """

    def __init__(self, rng: np.random.Generator, size: int = 256, levels: int = 7, beta: float = 1.6):
        self.size = size
        f = np.fft.fftfreq(size)
        fr = np.hypot(*np.meshgrid(f, f, indexing="ij"))
        fr[0, 0] = 1.0
        spec = np.fft.fft2(rng.standard_normal((size, size))) / fr ** (beta / 2)
        spec[0, 0] = 0.0
        stack = []
        for lvl in range(levels):
            sigma = 0.0 if lvl == 0 else 2.0 ** (lvl - 1)
            g = np.exp(-2 * (np.pi * sigma * fr) ** 2)
            stack.append(np.real(np.fft.ifft2(spec * g)))
        std0 = stack[0].std()
        self.stack = (np.stack(stack) / std0).astype(np.float32).reshape(-1)
        self.levels = levels
        self._shift = int(size).bit_length() - 1
        if 1 << self._shift != size:
            raise ValueError(f"NoiseTile size must be a power of two, got {size}")

    def sample(self, u: np.ndarray, v: np.ndarray, texel: float, footprint: np.ndarray) -> np.ndarray:
        """Noise at texture coordinates (u, v) in metres; ``texel`` metres per texel.

        Args:
            u, v, footprint: (N,) float32 arrays (footprint = metres covered by one pixel).
        Returns:
            (N,) float32 noise, blurred to the pixel footprint.
        """
        inv = np.float32(1.0 / texel)
        x = u * inv
        y = v * inv
        lvl = np.log2(np.maximum(footprint * inv, np.float32(1e-6)))
        lvl = np.clip(lvl + np.float32(1.0), 0, self.levels - 1).astype(np.int32)
        x0 = np.floor(x)
        y0 = np.floor(y)
        fx = x - x0
        fy = y - y0
        m, sh = self.size - 1, self._shift
        ix = x0.astype(np.int32) & m                 # power-of-two size: & is a periodic modulo
        iy = y0.astype(np.int32) & m
        ix1 = (ix + 1) & m
        base = lvl << (2 * sh)
        r0 = base | (iy << sh)
        r1 = base | (((iy + 1) & m) << sh)
        st = self.stack
        a = np.take(st, r0 | ix)
        a += (np.take(st, r0 | ix1) - a) * fx
        b = np.take(st, r1 | ix)
        b += (np.take(st, r1 | ix1) - b) * fx
        a += (b - a) * fy
        return a


def _hash01(*ints: np.ndarray) -> np.ndarray:
    """Integer hash of lattice indices -> float32 in [0, 1) (PCG-style mixing)."""
    h = np.uint32(2166136261)
    for k in ints:
        h = (h ^ np.asarray(k).astype(np.int64).astype(np.uint32)) * np.uint32(16777619)
        h ^= h >> np.uint32(15)
        h *= np.uint32(0x2C1B3C6D)
        h ^= h >> np.uint32(12)
    return (h >> np.uint32(8)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def _coverage(dist: np.ndarray, half_width: float, footprint: np.ndarray) -> np.ndarray:
    """Fraction of a pixel covered by a band ``|dist| < half_width`` (box-filtered edge)."""
    return np.clip((half_width - np.abs(dist)) / np.maximum(footprint, 1e-6) + 0.5, 0.0, 1.0)


def camera_rays(K: np.ndarray, width: int, height: int) -> np.ndarray:
    """(3,H*W) float32 optical-frame ray directions with z = 1 (so t_hit = depth): the package's
    :func:`mono_depth_ros.conventions.pixel_rays`, laid out for the ray caster."""
    return np.ascontiguousarray(pixel_rays(K, height, width).reshape(-1, 3).T)


@dataclass
class RenderOutput:
    """One rendered view: image (H,W,3) uint8, depth (H,W) float32 (+inf sky), dynamic (H,W) bool."""

    image: np.ndarray
    depth: np.ndarray
    dynamic: np.ndarray


def _to_scene(mesh: Mesh) -> o3d.t.geometry.RaycastingScene:
    scene = o3d.t.geometry.RaycastingScene()
    if len(mesh):
        verts = mesh.xyz.reshape(-1, 3).astype(np.float32)
        tris = np.arange(len(verts), dtype=np.uint32).reshape(-1, 3)
        scene.add_triangles(o3d.core.Tensor(verts), o3d.core.Tensor(tris))
    return scene


_MALLOC_TUNED = False


def _tune_malloc() -> None:
    """Keep freed large numpy temporaries in the heap (glibc only; once per process).

    Every frame allocates and frees tens of MB of temporaries; with glibc's
    dynamic mmap threshold many are mmap'ed and unmapped again each frame
    (~4,400 page faults per frame at 640x192). Fixing the mmap threshold at
    32 MiB (glibc's maximum) and the trim threshold at 1 GiB cut page faults
    4x and CPU time per frame by ~10-15 % (measured with the bench). Setting
    only one of the two makes it worse, so both or neither. Process-wide, and
    harmless for other code (freed memory stays reusable by the process).
    Opt out with MONO_DEPTH_NO_MALLOPT=1.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED or not sys.platform.startswith("linux") or os.environ.get("MONO_DEPTH_NO_MALLOPT"):
        return
    _MALLOC_TUNED = True
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3
        if libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024) == 1:
            libc.mallopt(m_trim_threshold, 1024 * 1024 * 1024)
    except (OSError, AttributeError):      # not glibc
        pass


def _pack_attributes(mesh: Mesh) -> np.ndarray:
    """(13,M) float32 per-triangle [tint(3), param(4), uv of the 3 corners(6)], gathered by column."""
    return np.ascontiguousarray(
        np.concatenate([mesh.tint, mesh.param, mesh.uv.reshape(-1, 6)], 1).astype(np.float32).T)


class Renderer:
    """Renders views of one world; the static scene is built once.

    Args:
        static: the static :class:`Mesh` of the drive.
        preset: lighting, palette and exposure.
        seed: texture noise seed.
        threads: shading threads (None: up to 2 by CPU count). Output is identical for any value.
    """

    def __init__(self, static: Mesh, preset: DomainPreset, seed: int, threads: int | None = None):
        _tune_malloc()
        self.preset = preset
        self.static = static
        self.scene = _to_scene(static)
        self._attr = _pack_attributes(static)
        self._mat = static.material.astype(np.int8)
        self._vignette: dict = {}
        self._noise_bank: np.ndarray | None = None
        self._seed = int(seed)
        rng = np.random.default_rng([int(seed), 0x7E47])
        self.noise = NoiseTile(rng)
        el, az = np.deg2rad(preset.sun_elevation_deg), np.deg2rad(preset.sun_azimuth_deg)
        self.sun = np.array([np.cos(el) * np.sin(az), np.cos(el) * np.cos(az), np.sin(el)])
        self._ray_cache: dict = {}
        if threads is None:
            threads = min(SHADE_CHUNKS, os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(threads) if threads > 1 else None

    # ------------------------------------------------------------------ geometry
    def _rays(self, K: np.ndarray, width: int, height: int) -> np.ndarray:
        key = (width, height, K.tobytes())
        if key not in self._ray_cache:
            self._ray_cache = {key: camera_rays(K, width, height)}
        return self._ray_cache[key]

    def render(self, T_map_camera: np.ndarray, K: np.ndarray, width: int, height: int,
               dynamic: list[Mesh], rng: np.random.Generator | None = None) -> RenderOutput:
        """Render one view.

        Args:
            T_map_camera: (4,4) optical-frame pose in map.
            K: (3,3) intrinsics.
            dynamic: the moving objects at this instant (map frame), one mesh each.
            rng: camera-noise generator (None: no sensor noise).
        """
        d_cam = self._rays(K, width, height)
        R, t = T_map_camera[:3, :3], T_map_camera[:3, 3]
        n = d_cam.shape[1]
        rays = np.empty((n, 6), np.float32)
        rays[:, :3] = t
        # Rotate the (3,N) camera rays column by column: numpy's (N,3)@(3,3) is ~10x slower.
        Rf = R.astype(np.float32)
        for i in range(3):
            col = rays[:, 3 + i]
            np.multiply(d_cam[0], Rf[i, 0], out=col)
            col += d_cam[1] * Rf[i, 1]
            col += d_cam[2] * Rf[i, 2]
        hit = self.scene.cast_rays(o3d.core.Tensor.from_numpy(rays))
        t_hit = hit["t_hit"].numpy()
        prim = hit["primitive_ids"].numpy().astype(np.int64)
        bary = hit["primitive_uvs"].numpy()
        normal = hit["primitive_normals"].numpy()
        is_dyn = np.zeros(n, bool)
        dyn_scene = None
        attr, mats = self._attr, self._mat
        dyn_mesh = Mesh.concat(list(dynamic))
        if len(dyn_mesh):
            # Cast against the cars only where their projected bounding boxes are.
            cand = np.flatnonzero(self._dynamic_mask(dynamic, T_map_camera, K, width, height))
            if len(cand):
                dyn_scene = _to_scene(dyn_mesh)
                hd = dyn_scene.cast_rays(o3d.core.Tensor.from_numpy(np.ascontiguousarray(rays[cand])))
                td = hd["t_hit"].numpy()
                closer = td < t_hit[cand]
                sel = cand[closer]
                is_dyn[sel] = True
                t_hit[sel] = td[closer]
                prim[sel] = hd["primitive_ids"].numpy()[closer].astype(np.int64) + len(self.static)
                bary[sel] = hd["primitive_uvs"].numpy()[closer]
                normal[sel] = hd["primitive_normals"].numpy()[closer]
                attr = np.concatenate([attr, _pack_attributes(dyn_mesh)], axis=1)
                mats = np.concatenate([mats, dyn_mesh.material.astype(np.int8)])
        valid = np.isfinite(t_hit)
        rgb = np.empty((n, 3), np.float32)
        idx = np.flatnonzero(valid)
        sky = np.flatnonzero(~valid)
        if len(sky):
            rgb[sky] = self._sky(np.take(rays, sky, axis=0)[:, 3:])
        # Shade in a fixed number of chunks (so the bits do not depend on the thread
        # count); numpy releases the GIL in its array loops, so threads overlap.
        chunks = [c for c in np.array_split(idx, SHADE_CHUNKS) if len(c)]

        def shade(c):
            return self._shade(np.take(t_hit, c), np.take(prim, c), np.take(bary, c, axis=0),
                               np.take(normal, c, axis=0), np.take(rays, c, axis=0), attr, mats, dyn_scene, K)

        if self._pool is not None and len(chunks) > 1:
            for c, res in zip(chunks, list(self._pool.map(shade, chunks))):
                rgb[c] = res
        else:
            for c in chunks:
                rgb[c] = shade(c)
        img = self._expose(rgb.reshape(height, width, 3), rng)
        depth = t_hit.reshape(height, width)
        return RenderOutput(img, depth, is_dyn.reshape(height, width))

    @staticmethod
    def _dynamic_mask(dynamic: list[Mesh], T_map_camera, K, width, height) -> np.ndarray:
        """(H*W,) bool: pixels inside the projected bounding box of any moving object."""
        mask = np.zeros((height, width), bool)
        R, t = T_map_camera[:3, :3], T_map_camera[:3, 3]
        for m in dynamic:
            p = (m.xyz.reshape(-1, 3) - t) @ R
            z = p[:, 2]
            if z.max() < 0.05:
                continue
            if z.min() < 0.05:            # straddles the image plane: test every pixel
                mask[:] = True
                break
            u = K[0, 0] * p[:, 0] / z + K[0, 2]
            v = K[1, 1] * p[:, 1] / z + K[1, 2]
            u0, u1 = int(max(np.floor(u.min()) - 1, 0)), int(min(np.ceil(u.max()) + 2, width))
            v0, v1 = int(max(np.floor(v.min()) - 1, 0)), int(min(np.ceil(v.max()) + 2, height))
            if u0 < u1 and v0 < v1:
                mask[v0:v1, u0:u1] = True
        return mask.reshape(-1)

    # ------------------------------------------------------------------ shading
    def _shade(self, th, pid, bary, nrm, rays, attr, mats, dyn_scene, K):
        """Colour (N,3) float32 linear radiance of N hits."""
        p = self.preset
        d = rays[:, 3:]
        a = np.take(attr, pid, axis=1)                  # (13,N): tint, param, uv corners
        mat = np.take(mats, pid)
        b1, b2 = bary[:, 0], bary[:, 1]
        w0 = 1.0 - b1 - b2
        u = a[7] * w0 + a[9] * b1 + a[11] * b2
        v = a[8] * w0 + a[10] * b1 + a[12] * b2
        dn = np.sqrt(np.einsum("ij,ij->i", d, d))
        ndd = np.einsum("ij,ij->i", nrm, d)
        cos_view = np.abs(ndd) / dn
        nrm = np.where((ndd > 0)[:, None], -nrm, nrm)
        # Metres covered by one pixel at the hit (grazing angles stretch it).
        footprint = th * dn / np.float32(K[0, 0]) / np.maximum(cos_view, np.float32(0.15))
        albedo = np.ascontiguousarray(a[:3].T)
        param = a[3:7].T
        c = p.texture_contrast
        for m in np.flatnonzero(np.bincount(mat, minlength=Material.COUNT)):
            sel = np.flatnonzero(mat == m)
            albedo[sel] = self._material(m, np.take(albedo, sel, axis=0), np.take(u, sel), np.take(v, sel),
                                         np.take(param, sel, axis=0), np.take(footprint, sel), c)
        # Lambert + ambient (+ hard shadows from the sun).
        sun = self.sun.astype(np.float32)
        ndl = np.clip(nrm[:, 0] * sun[0] + nrm[:, 1] * sun[1] + nrm[:, 2] * sun[2], 0.0, None)
        if p.shadows:
            li = np.flatnonzero(ndl > 0)
            if len(li):
                srays = np.empty((len(li), 6), np.float32)
                srays[:, :3] = np.take(rays[:, :3] + d * th[:, None] + nrm * np.float32(0.02), li, axis=0)
                srays[:, 3:] = self.sun
                st = o3d.core.Tensor.from_numpy(srays)
                occ = self.scene.test_occlusions(st).numpy()
                if dyn_scene is not None:
                    occ |= dyn_scene.test_occlusions(st).numpy()
                ndl[li[occ]] = 0.0
        sky_fill = 0.85 + 0.15 * nrm[:, 2]             # more sky light on up-facing surfaces
        light = p.ambient * sky_fill + p.sun_intensity * ndl
        warm = np.array([1.0, 0.96, 0.88], np.float32) if p.shadows else np.ones(3, np.float32)
        return albedo * (light[:, None] * warm)

    def _material(self, m, alb, u, v, param, fp, c):
        nz = self.noise
        if m == Material.ASPHALT:
            n1 = nz.sample(u, v, 0.012, fp)                      # aggregate grain
            n3 = nz.sample(u * 0.8 + 17.0, v * 1.1 + 3.0, 0.05, fp)   # mottling
            n2 = nz.sample(v + 31.7, u * 0.9 + 5.1, 0.15, fp)     # patches, wear
            alb = alb * np.clip(1 + c * (0.32 * n1 + 0.18 * n3 + 0.14 * n2), 0.3, 2.0)[:, None]
            half = param[:, 0]
            lane_w = self.preset.lane_width
            # Lane markings: dashed lane lines, a centre line, solid edge lines.
            mark = np.zeros(len(u), np.float32)
            dash = _coverage((u % 9.0) - 1.5, 1.5, fp)
            lanes = self.preset.lanes_per_direction
            for k in range(1, lanes):
                mark = np.maximum(mark, dash * _coverage(np.abs(v) - k * lane_w, 0.06, fp))
            if lanes >= 2:
                centre = np.maximum(_coverage(v - 0.12, 0.06, fp), _coverage(v + 0.12, 0.06, fp))
                colour = np.array([0.75, 0.6, 0.1], np.float32)
            else:
                centre = dash * _coverage(v, 0.06, fp)
                colour = np.array([0.8, 0.8, 0.78], np.float32)
            edge = _coverage(np.abs(v) - (half - self.preset.parking_width), 0.07, fp)
            white = np.array([0.8, 0.8, 0.78], np.float32)
            wear = np.clip(0.85 + 0.3 * n2, 0, 1)[:, None]
            alb = alb * (1 - centre[:, None]) + colour * (centre[:, None] * wear)
            lm = np.maximum(mark, edge)[:, None]
            alb = alb * (1 - lm) + white * lm * wear
            return alb
        if m in (Material.SIDEWALK, Material.KERB):
            tile = 0.5 if m == Material.SIDEWALK else 1.0
            n1 = nz.sample(u + 7.3, v, 0.02, fp)
            fu = (u % tile) - tile / 2
            fv = (v % tile) - tile / 2
            joint = np.maximum(_coverage(np.abs(fu) - tile / 2, 0.012, fp),
                               _coverage(np.abs(fv) - tile / 2, 0.012, fp) * (m == Material.SIDEWALK))
            jit = _hash01(np.floor(u / tile), np.floor(v / tile)) - 0.5
            alb = alb * (1 + c * (0.15 * n1 + 0.15 * jit))[:, None]
            return alb * (1 - 0.45 * joint)[:, None]
        if m in (Material.VERGE, Material.GROUND):
            n1 = nz.sample(u + 3.3, v + 1.1, 0.03, fp)
            n2 = nz.sample(v + 11.0, u, 0.6, fp)
            return alb * np.clip(1 + c * (0.3 * n1 + 0.2 * n2), 0.2, 2)[:, None]
        if m == Material.FACADE:
            return self._facade(alb, u, v, param, fp, c)
        if m == Material.ROOF:
            return alb * (1 + 0.2 * nz.sample(u, v, 0.05, fp))[:, None]
        if m == Material.CAR_PAINT:
            n1 = nz.sample(u + param[:, 0], v, 0.05, fp)
            alb = alb * (1 + 0.06 * n1)[:, None]
            if self.preset.car_texture > 0:
                alb = self._car_livery(alb, u, v, param[:, 0], fp, self.preset.car_texture)
            return alb
        if m == Material.GLASS:
            n1 = nz.sample(u + param[:, 0], v * 0.3, 0.1, fp)
            return alb * (1 + 0.5 * n1)[:, None] + 0.03
        if m == Material.TYRE:
            return alb * (1 + 0.3 * nz.sample(u, v, 0.02, fp))[:, None]
        if m == Material.POLE:
            return alb * (1 + 0.15 * nz.sample(u, v * 0.2, 0.03, fp))[:, None]
        if m == Material.BARK:
            return alb * np.clip(1 + 0.45 * nz.sample(u * 3, v * 0.3, 0.01, fp), 0.2, 2)[:, None]
        if m == Material.FOLIAGE:
            n1 = nz.sample(u + param[:, 0], v, 0.04, fp)
            n2 = nz.sample(v, u + param[:, 0], 0.3, fp)
            leaf = np.clip(1 + 0.6 * n1 + 0.3 * n2, 0.15, 2.5)
            return alb * leaf[:, None]
        return alb

    def _car_livery(self, alb, u, v, seed, fp, k):
        """Car paint with a livery: blotches and diagonal stripes in the car's own texture coordinates.

        Options ``car_texture`` (``k`` > 0). The pattern lives in the car's (u, v) metres, so it moves
        rigidly with the car. Multi-scale fractal blotches (0.04 m texels, mip-filtered by the footprint)
        and two families of sinusoidal stripes (0.7 m and 0.45 m periods, faded out once a pixel covers
        more than a quarter period, so they never alias), multiplicative on the paint plus an additive
        light part so that dark paint shows the pattern too.

        Args:
            alb: (N,3) paint albedo; u, v, seed, fp: (N,) texture coordinates, per-car seed, footprint (m).
        Returns:
            (N,3) float32 albedo.
        """
        nz = self.noise
        blot = nz.sample(u * 0.9 + seed * 1.37 + 41.0, v * 0.9 + seed * 0.61 + 7.0, 0.04, fp)
        two_pi = np.float32(2 * np.pi)
        s1 = np.sin(two_pi * (u + 0.6 * v + seed) / np.float32(0.7)) * np.clip(1 - fp / np.float32(0.175), 0, 1)
        s2 = np.sin(two_pi * (u - 0.8 * v + 0.37 * seed) / np.float32(0.45)) * np.clip(1 - fp / np.float32(0.11), 0, 1)
        pattern = np.float32(0.5) * blot + np.float32(0.3) * s1 + np.float32(0.2) * s2
        mod = np.clip(1 + np.float32(k) * pattern, 0.15, 2.5)
        light = np.float32(0.08 * k) * np.clip(1 + pattern, 0, 2)
        return (alb * mod[:, None] + light[:, None]).astype(np.float32)

    def _facade(self, alb, u, v, param, fp, c):
        """Walls (plaster or brick) with a grid of windows per floor."""
        nz = self.noise
        win_sx, floor_h, brick, bseed = param[:, 0], param[:, 1], param[:, 2], param[:, 3]
        n1 = nz.sample(u + bseed, v, 0.03, fp)
        n2 = nz.sample(v + bseed, u, 0.5, fp)
        wall = alb * (1 + c * (0.12 * n1 + 0.1 * n2))[:, None]
        # Bricks: 0.25 x 0.075 m courses, half-offset rows, mortar lines, per-brick tone.
        bh, bw = 0.075, 0.25
        row = np.floor(v / bh)
        ub = u + 0.5 * bw * (row % 2)
        col = np.floor(ub / bw)
        du = (ub - (col + 0.5) * bw)
        dv = (v - (row + 0.5) * bh)
        mortar = np.maximum(_coverage(np.abs(du) - bw / 2, 0.008, fp), _coverage(np.abs(dv) - bh / 2, 0.008, fp))
        fade = np.clip(2.0 - fp / 0.03, 0.0, 1.0)       # far away: average brick colour
        tone = (_hash01(row, col, bseed) - 0.5) * 0.35 * c
        brick_col = alb * (1 + tone)[:, None]
        brick_col = brick_col * (1 - (mortar * fade)[:, None]) + np.float32(0.75) * (mortar * fade)[:, None]
        wall = np.where((brick > 0.5)[:, None], brick_col * (1 + 0.1 * n1)[:, None], wall)
        # Windows: one per (win_sx x floor_h) cell above the ground floor line.
        cu = (u % win_sx) - win_sx / 2
        cv = ((v - 0.4) % floor_h) - floor_h / 2
        ww, wh = 0.45 * win_sx, 0.5 * floor_h
        win = _coverage(cu, ww / 2, fp) * _coverage(cv, wh / 2, fp) * (v > 1.0)
        frame = _coverage(cu, ww / 2 + 0.08, fp) * _coverage(cv, wh / 2 + 0.08, fp) * (v > 1.0) - win
        cell = _hash01(np.floor(u / win_sx), np.floor((v - 0.4) / floor_h), bseed)
        glass = np.stack([0.06 + 0.10 * cell, 0.08 + 0.10 * cell, 0.11 + 0.12 * cell], 1).astype(np.float32)
        glass = glass * (1 + 0.4 * nz.sample(u * 0.5 + 13, v * 0.5, 0.05, fp))[:, None]
        if self.preset.shopfront_fraction > 0:
            # Shop fronts: one wide lit pane per window column on the ground floor, a sign above.
            shop = (_hash01(bseed, 7) < self.preset.shopfront_fraction) & (v < floor_h + 0.4)
            if shop.any():
                lo, hi = 0.3, floor_h - 0.1
                pane = _coverage(cu, 0.42 * win_sx, fp) * _coverage(v - (lo + hi) / 2, (hi - lo) / 2, fp)
                sign = _coverage(v - (floor_h + 0.15), 0.2, fp)
                tone = _hash01(bseed, 11)
                sign_col = np.stack([0.2 + 0.7 * tone, 0.7 - 0.5 * tone, 0.3 + 0.4 * _hash01(bseed, 13)], 1)
                inside = np.clip(0.5 + 0.6 * self.noise.sample(u * 2.0 + 5.0, v * 2.0, 0.02, fp), 0, 1.5)
                lit = (np.float32(0.12) + np.float32(0.18) * cell) * inside
                shop_glass = glass + lit[:, None] * np.float32([1.0, 0.85, 0.6])
                shop_out = (wall * (1 - pane - sign)[:, None] + shop_glass * pane[:, None]
                            + sign_col.astype(np.float32) * sign[:, None])
                win = np.where(shop, 0.0, win)
                frame = np.where(shop, 0.0, frame)
                base = wall * (1 - frame - win)[:, None] + np.float32(0.8) * frame[:, None] + glass * win[:, None]
                return np.where(shop[:, None], shop_out, base)
        out = wall * (1 - frame - win)[:, None] + np.float32(0.8) * frame[:, None] + glass * win[:, None]
        return out

    def _sky(self, d: np.ndarray) -> np.ndarray:
        p = self.preset
        dn = d / np.linalg.norm(d, axis=1, keepdims=True)
        el = np.clip(dn[:, 2], 0, 1)[:, None] ** 0.5
        col = np.float32(p.sky_horizon) * (1 - el) + np.float32(p.sky_zenith) * el
        if p.shadows:                                  # sun glow
            glow = np.clip(dn @ self.sun, 0, 1) ** 32
            col = col + 0.6 * glow[:, None]
        else:                                          # soft cloud banks
            az = np.arctan2(dn[:, 1], dn[:, 0])
            cl = self.noise.sample(az * 40.0, dn[:, 2] * 120.0, 1.0, np.full(len(az), 2.0))
            col = col * (1 + 0.05 * cl)[:, None]
        # The renderer's light is scaled so that a white lit surface is ~1; sky matches that.
        return (col * (self.preset.ambient + self.preset.sun_intensity)).astype(np.float32)

    def _expose(self, rgb: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
        """Linear radiance (H,W,3) -> uint8 sRGB-ish with exposure, vignetting, noise."""
        h, w, _ = rgb.shape
        if (h, w) not in self._vignette:
            yy, xx = np.mgrid[0:h, 0:w]
            r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (w / 2)) ** 2
            self._vignette = {(h, w): (self.preset.exposure * (1 - 0.15 * r2)).astype(np.float32)[..., None]}
        x = np.clip(rgb * self._vignette[(h, w)], 0, None)
        x = x / (1 + 0.15 * x)                                      # soft shoulder
        out = 255.0 * np.clip(x, 0, 1) ** (1 / 2.2)
        if rng is not None and self.preset.noise.camera_noise > 0:
            # A random window into a per-drive bank of Gaussian noise (drawing H*W*3
            # normals per frame costs more than the rest of the exposure step).
            size = out.size
            if self._noise_bank is None or len(self._noise_bank) < 2 * size:
                bank_rng = np.random.default_rng([self._seed, 0xB4A7])
                self._noise_bank = bank_rng.standard_normal(2 * size, dtype=np.float32)
            off = int(rng.integers(0, len(self._noise_bank) - size))
            out += self._noise_bank[off:off + size].reshape(out.shape) * np.float32(self.preset.noise.camera_noise)
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)
