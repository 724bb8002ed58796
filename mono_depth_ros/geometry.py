"""Camera geometry for view synthesis: poses, pinhole camera, warping.

Conventions come from :mod:`mono_depth_ros.conventions`: optical frames
(x right, y down, z forward), ``T_target_source`` naming, pixel centres at
integer coordinates, K in pixels, ``ALIGN_CORNERS`` for grid sampling.

To synthesise the *target* view from a *source* image, points of the target
camera are moved into the source camera with ``T_source_target`` and
projected there::

    warped, valid = warp(source_image, target_depth, T_source_target, camera)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .conventions import ALIGN_CORNERS, grid_scale, pixel_rays, scale_intrinsics

__all__ = ["Pose", "PinholeCamera", "warp", "check_shape", "stereo_T_source_target", "relative_pose"]

#: Points closer than this (metres, along z) are treated as behind the camera.
MIN_Z = 1e-3


def check_shape(x: torch.Tensor, name: str, spec: Sequence[str],
                bound: dict[str, int] | None = None) -> dict[str, int]:
    """Check ``x`` against a shape spec like ``["B", "1", "H", "W"]``; return the bound symbols.

    Digits must match exactly; names bind to sizes and must agree with
    ``bound`` (shared across the arguments of one call). Written here rather
    than using ``KORNIA_CHECK_SHAPE`` because that check does not bind
    symbols across tensors (the same ``H`` in the image and the depth).

    Raises:
        ValueError: naming the argument, the expected and the actual shape.
    """
    bound = {} if bound is None else bound
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    expected = "(" + ",".join(spec) + ")"
    if x.dim() != len(spec):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")
    for sym, size in zip(spec, x.shape):
        if sym.isdigit():
            if int(sym) != size:
                raise ValueError(f"{name} must have shape {expected}, got {tuple(x.shape)}")
        elif sym in bound and bound[sym] != size:
            raise ValueError(f"{name} must have shape {expected} with {sym}={bound[sym]} "
                             f"(from the other arguments), got {tuple(x.shape)}")
        else:
            bound[sym] = int(size)
    return bound


class Pose:
    """Batch of rigid transforms ``T_target_source`` as a (B,4,4) tensor.

    ``Pose(T_a_b) @ Pose(T_b_c) == Pose(T_a_c)``; ``Pose @ points`` with
    points (B,3,N) maps them from ``source`` into ``target``.
    """

    __slots__ = ("mat",)

    def __init__(self, mat: torch.Tensor):
        if isinstance(mat, np.ndarray):
            mat = torch.as_tensor(mat)
        if isinstance(mat, torch.Tensor) and mat.dim() == 2:
            mat = mat.unsqueeze(0)
        check_shape(mat, "Pose matrix", ["B", "4", "4"])
        self.mat = mat

    @classmethod
    def identity(cls, batch: int = 1, dtype: torch.dtype = torch.float32, device=None) -> "Pose":
        return cls(torch.eye(4, dtype=dtype, device=device).repeat(batch, 1, 1))

    @classmethod
    def from_rt(cls, R: torch.Tensor, t: torch.Tensor) -> "Pose":
        """R (B,3,3), t (B,3) -> Pose."""
        check_shape(R, "R", ["B", "3", "3"])
        check_shape(t, "t", ["B", "3"])
        mat = torch.zeros(R.shape[0], 4, 4, dtype=R.dtype, device=R.device)
        mat[:, :3, :3] = R
        mat[:, :3, 3] = t
        mat[:, 3, 3] = 1.0
        return cls(mat)

    @property
    def R(self) -> torch.Tensor:
        """(B,3,3) rotation."""
        return self.mat[:, :3, :3]

    @property
    def t(self) -> torch.Tensor:
        """(B,3) translation."""
        return self.mat[:, :3, 3]

    def __len__(self) -> int:
        return self.mat.shape[0]

    def inverse(self) -> "Pose":
        """Rigid inverse: ``T_source_target`` from ``T_target_source`` (R^T, -R^T t)."""
        Rt = self.R.transpose(1, 2)
        return Pose.from_rt(Rt, -(Rt @ self.t.unsqueeze(-1)).squeeze(-1))

    def __matmul__(self, other):
        if isinstance(other, Pose):
            return Pose(self.mat @ other.mat)
        if isinstance(other, torch.Tensor):
            check_shape(other, "points", ["B", "3", "N"])
            return self.R @ other + self.t.unsqueeze(-1)
        return NotImplemented

    def to(self, device=None, dtype=None) -> "Pose":
        return Pose(self.mat.to(device=device, dtype=dtype))

    def __repr__(self) -> str:
        return f"Pose(batch={len(self)}, dtype={self.mat.dtype})"


def relative_pose(T_world_target: torch.Tensor, T_world_source: torch.Tensor) -> torch.Tensor:
    """``T_target_source = inv(T_world_target) @ T_world_source`` for (B,4,4) camera poses."""
    return (Pose(T_world_target).inverse() @ Pose(T_world_source)).mat


def stereo_T_source_target(baseline: float | torch.Tensor, batch: int = 1,
                           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``T_right_left`` of a rectified stereo pair with the right camera ``baseline`` metres to the right.

    A point in the left optical frame has x reduced by the baseline in the
    right one: ``T_right_left = [I | (-b, 0, 0)]``. Use it as
    ``T_source_target`` with the right image as source and the left as target.

    Returns:
        (B,4,4).
    """
    T = torch.eye(4, dtype=dtype).repeat(batch, 1, 1)
    T[:, 0, 3] = -torch.as_tensor(baseline, dtype=dtype)
    return T


class PinholeCamera:
    """Pinhole intrinsics K (B,3,3) in pixels for images of size (H, W).

    The unit-depth ray grid K^-1 [u, v, 1]^T is built once per camera
    (:func:`mono_depth_ros.conventions.pixel_rays`, which honours skew as :meth:`project` does) and cached, so one camera object per (H, W, K)
    reuses it for every frame.
    """

    def __init__(self, K: torch.Tensor, height: int, width: int):
        if isinstance(K, np.ndarray):
            K = torch.as_tensor(K, dtype=torch.float32)
        if K.dim() == 2:
            K = K.unsqueeze(0)
        check_shape(K, "K", ["B", "3", "3"])
        if int(height) <= 0 or int(width) <= 0:
            raise ValueError(f"image size must be positive, got H={height}, W={width}")
        self.K = K
        self.height = int(height)
        self.width = int(width)
        self._rays: torch.Tensor | None = None

    @classmethod
    def from_camera_info(cls, K: np.ndarray, width: int, height: int,
                         dtype: torch.dtype = torch.float32) -> "PinholeCamera":
        """From a CameraInfo's K (9 values or (3,3) numpy) and its width/height."""
        K = np.asarray(K, dtype=np.float64).reshape(3, 3)
        if K[0, 0] <= 0 or K[1, 1] <= 0 or K[2, 2] != 1.0:
            raise ValueError(f"invalid camera matrix K={K.tolist()} (need fx, fy > 0 and K[2,2] = 1)")
        return cls(torch.as_tensor(K, dtype=dtype), height, width)

    @property
    def batch(self) -> int:
        return self.K.shape[0]

    def scaled(self, sx: float, sy: float | None = None) -> "PinholeCamera":
        """Camera of the image resized by (sx, sy) = (W'/W, H'/H).

        Same semantics as :func:`mono_depth_ros.conventions.scale_intrinsics`:
        ``fx' = fx*sx``, ``cx' = (cx + 0.5)*sx - 0.5``.
        """
        sy = sx if sy is None else sy
        K = scale_intrinsics(self.K, sx, sy)
        return PinholeCamera(K, round(self.height * sy), round(self.width * sx))

    def to(self, device=None, dtype=None) -> "PinholeCamera":
        cam = PinholeCamera(self.K.to(device=device, dtype=dtype), self.height, self.width)
        if self._rays is not None:
            cam._rays = self._rays.to(device=device, dtype=dtype)
        return cam

    def rays(self) -> torch.Tensor:
        """(B,3,H*W) unit-depth rays K^-1 [u,v,1]^T, cached."""
        if self._rays is None:
            grid = pixel_rays(self.K, self.height, self.width)  # (B,H,W,3)
            self._rays = grid.reshape(self.batch, self.height * self.width, 3).transpose(1, 2).contiguous()
        return self._rays

    def _check_depth(self, depth: torch.Tensor, name: str = "depth") -> int:
        b = check_shape(depth, name, ["B", "1", "H", "W"])
        if (b["H"], b["W"]) != (self.height, self.width):
            raise ValueError(f"{name} is {b['H']}x{b['W']} but the camera is {self.height}x{self.width}; "
                             f"use camera.scaled() for other resolutions")
        if self.batch not in (1, b["B"]):
            raise ValueError(f"camera batch {self.batch} does not match {name} batch {b['B']}")
        return b["B"]

    def backproject(self, depth: torch.Tensor) -> torch.Tensor:
        """Depth (B,1,H,W) -> camera-frame points (B,3,H,W) (x right, y down, z = depth)."""
        B = self._check_depth(depth)
        rays = self.rays().to(depth.dtype)
        pts = rays * depth.reshape(B, 1, -1)
        return pts.reshape(B, 3, self.height, self.width)

    def project(self, points: torch.Tensor, T: torch.Tensor | Pose | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project points (B,3,H,W) (after the optional transform T (B,4,4)) to pixels.

        Returns:
            uv (B,2,H,W) pixel coordinates (u column, v row) and z (B,1,H,W)
            depth in the projecting camera.
        """
        b = check_shape(points, "points", ["B", "3", "H", "W"])
        B, H, W = b["B"], b["H"], b["W"]
        p = points.reshape(B, 3, H * W)
        if T is not None:
            mat = T.mat if isinstance(T, Pose) else T
            check_shape(mat, "T", ["B", "4", "4"])
            if mat.shape[0] not in (1, B):
                raise ValueError(f"pose batch {mat.shape[0]} does not match points batch {B}")
            p = Pose(mat.to(p.dtype).expand(B, 4, 4)) @ p
        K = self.K.to(p.dtype)
        if K.shape[0] != B:
            K = K.expand(B, 3, 3)
        z = p[:, 2:3]
        uvw = K @ p
        uv = uvw[:, :2] / z.clamp(min=MIN_Z)
        return uv.reshape(B, 2, H, W), z.reshape(B, 1, H, W)


class _DepthToGrid(torch.autograd.Function):
    """:func:`warp`'s sampling grid from the depth, with a closed-form backward (known K and pose).

    grid = (Pt + d Pa) / max(z, MIN_Z) - 1 with z = tz + d az, so
    d grid / d d = (Pa - (grid + 1) az [z > MIN_Z]) / max(z, MIN_Z): one pass instead of
    autograd's walk through the division, the clamp and the broadcast sums (test_geometry checks
    it against autograd).
    Inputs: d (B,HW,1), Pa (B,HW,2), Pt (B,1,2), az (B,HW,1), tz (B,1,1); gradients to d only.
    """

    @staticmethod
    def forward(ctx, d, Pa, Pt, az, tz):
        z = torch.addcmul(tz, az, d)
        zc = z.clamp(min=MIN_Z)
        grid = torch.addcmul(Pt, d, Pa).div_(zc).sub_(1.0)
        ctx.save_for_backward(Pa, az, z, grid)
        ctx.mark_non_differentiable(z)
        return grid, z

    @staticmethod
    def backward(ctx, g, _gz):
        Pa, az, z, grid = ctx.saved_tensors
        azm = torch.where(z > MIN_Z, az, torch.zeros((), dtype=az.dtype))
        gd = (g * torch.addcmul(Pa, grid + 1.0, azm, value=-1.0)).sum(-1, keepdim=True) / z.clamp(min=MIN_Z)
        return gd, None, None, None, None


def warp(source_image: torch.Tensor, depth: torch.Tensor, T_source_target: torch.Tensor | Pose,
         camera: PinholeCamera, source_camera: PinholeCamera | None = None,
         motion: torch.Tensor | None = None, valid: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Synthesise the target view from a source image (monodepth2 view synthesis).

    Target pixels are back-projected with the target ``depth``, moved into
    the source camera by ``T_source_target``, projected with the source
    intrinsics and sampled bilinearly from ``source_image`` (border padding,
    ``conventions.ALIGN_CORNERS``).

    ``source_camera`` (default: ``camera``) lets the source be a different
    image than the target's size: the training step warps full frames into a
    *crop* of the target frame (the crop's K is the frame's K with the
    principal point shifted, so focal lengths -- and metric scale -- are those
    of the camera).

    Args:
        source_image: (B,C,Hs,Ws), the size of ``source_camera`` (or of ``camera``).
        depth: (B,1,H,W) target depth in metres, the size of ``camera``.
        T_source_target: (B,4,4) or Pose.
        camera: intrinsics of the target view at (H, W).
        source_camera: intrinsics of the source view at (Hs, Ws); None = ``camera``.
        motion: (B,3,H,W) metres or None: each target point's own translation between the two
            images, in the source camera's axes, added after ``T_source_target`` (a moving object's
            motion on top of the camera's: Li et al. 2020).
        valid: compute the validity mask (False: None is returned in its place; the training
            loss does not use it).
    Returns:
        warped (B,C,H,W) and valid (B,1,H,W) float mask: 1 where the point is in
        front of the source camera and projects inside the source image.
    """
    src_cam = camera if source_camera is None else source_camera
    b = check_shape(depth, "depth", ["B", "1", "H", "W"])
    check_shape(source_image, "source_image", ["B", "C", "Hs", "Ws"],
                dict(B=b["B"], Hs=src_cam.height, Ws=src_cam.width))
    mat = T_source_target.mat if isinstance(T_source_target, Pose) else T_source_target
    check_shape(mat, "T_source_target", ["B", "4", "4"], dict(B=b["B"]))
    camera._check_depth(depth)
    B, H, W = b["B"], b["H"], b["W"]
    Hs, Ws = src_cam.height, src_cam.width
    dt = depth.dtype
    # What does not depend on the depth is folded into per-pixel constants, so the per-pixel work
    # that carries gradients is two multiply-adds and a division (PinholeCamera.backproject ->
    # project -> conventions.pixels_to_grid compute the same in more passes). With the closed-form
    # backward and valid=False, a 192x192 crop's warp from a 640x192 frame (forward + backward, 4
    # crops, 1 thread) takes 6.1 ms instead of 9.9 ms (interleaved with the old path; NOTES.md, session 7):
    #   X = R (d ray) + t = d a + t,  a = R ray;   grid = N Ks X / max(z, MIN_Z) - 1
    # where N scales pixels to grid_sample's [-1, 1] (conventions.grid_scale).
    R, t = mat[:, :3, :3].to(dt), mat[:, :3, 3:].to(dt)                  # (B,3,3), (B,3,1)
    Ks = src_cam.K.to(dt).expand(B, 3, 3)
    norm = torch.tensor(grid_scale(Ws, Hs), dtype=dt, device=depth.device)
    P = Ks[:, :2] * norm[:, None]                                          # (B,2,3): N Ks (its first two rows)
    rays = camera.rays().to(dt).expand(B, 3, H * W)                        # (B,3,HW)
    a = R @ rays                                                           # (B,3,HW)
    Pa = (P @ a).transpose(1, 2)                                           # (B,HW,2)
    Pt = (P @ t).transpose(1, 2)                                           # (B,1,2)
    d = depth.reshape(B, H * W, 1)
    az = a[:, 2:3].transpose(1, 2)                                         # (B,HW,1)
    if motion is None and not (Pa.requires_grad or Pt.requires_grad or az.requires_grad or t.requires_grad):
        grid, z = _DepthToGrid.apply(d, Pa, Pt, az, t[:, 2:3, :])
    else:   # learned intrinsics or object motion: gradients to those too, through autograd
        z = torch.addcmul(t[:, 2:3], az, d)                                # (B,HW,1)
        num = torch.addcmul(Pt, d, Pa)                                     # (B,HW,2)
        if motion is not None:
            check_shape(motion, "motion", ["B", "3", "H", "W"], dict(B=B, H=H, W=W))
            m = motion.reshape(B, 3, H * W).to(dt)
            z = z + m[:, 2:3].transpose(1, 2)
            num = num + (P @ m).transpose(1, 2)
        grid = num / z.clamp(min=MIN_Z) - 1.0
    grid = grid.reshape(B, H, W, 2)
    warped = F.grid_sample(source_image, grid.to(source_image.dtype), mode="bilinear",
                           padding_mode="border", align_corners=ALIGN_CORNERS)
    if not valid:
        return warped, None
    with torch.no_grad():
        g = grid.detach()
        u = (g[..., 0] + 1.0) / norm[0]
        v = (g[..., 1] + 1.0) / norm[1]
        inside = ((u >= -0.5) & (u <= Ws - 0.5) & (v >= -0.5) & (v <= Hs - 0.5)
                  & (z.detach().reshape(B, H, W) > MIN_Z))
    return warped, inside.unsqueeze(1).to(source_image.dtype)
