"""Canonical camera (Metric3D-style): metric depth on a camera the weights were not trained with.

A network trained on one camera learns metric depth *for that camera*: apparent sizes scale with
the focal length and the ground's image row with the principal point. Metric3D's canonical
camera space removes that: predict depth as the training ("canonical") camera would see it and
convert with the real focal length::

    depth_real = depth_canonical * f_real / f_canonical

where both focal lengths are in pixels at the network input size. Here the image is also
translated (whole pixels, replicated border) so that the real principal point lands on the
canonical one before the network runs, and the depth translated back: a network that reads
depth from a pixel's height above the horizon needs the horizon where it was in training.

:class:`CanonicalCamera` is stored in a checkpoint's ``canonical_camera`` entry (pixels at the
checkpoint's ``input_size``) and rescaled to whatever size the network runs at.
:func:`run_canonical` is the ONE place the conversion happens; ``inference.DepthPredictor`` and
``learning.evaluate`` both call it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from .conventions import scale_intrinsics

__all__ = ["CanonicalCamera", "run_canonical", "focal_ratio"]


@dataclass(frozen=True)
class CanonicalCamera:
    """Pinhole intrinsics the weights were trained with, in pixels at ``size`` = (H, W)."""

    fx: float
    fy: float
    cx: float
    cy: float
    size: tuple[int, int]

    def __post_init__(self) -> None:
        if not (self.fx > 0 and self.fy > 0) or len(self.size) != 2 or min(self.size) <= 0:
            raise ValueError(f"canonical camera needs fx, fy > 0 and a positive (H, W) size, got {self}")

    @classmethod
    def from_K(cls, K: np.ndarray, size: tuple[int, int]) -> "CanonicalCamera":
        """From (3,3) pixel intrinsics of an image of ``size`` = (H, W)."""
        K = np.asarray(K, dtype=np.float64)
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), (int(size[0]), int(size[1])))

    def K_at(self, size: tuple[int, int]) -> np.ndarray:
        """(3,3) canonical intrinsics at network input ``size`` = (H, W) (pixel-centre rule)."""
        K = np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])
        return scale_intrinsics(K, size[1] / self.size[1], size[0] / self.size[0])

    def to_dict(self) -> dict[str, Any]:
        return {"fx": self.fx, "fy": self.fy, "cx": self.cx, "cy": self.cy, "size": [int(v) for v in self.size]}

    @classmethod
    def from_dict(cls, d: Any, source: str = "checkpoint") -> "CanonicalCamera":
        """From a checkpoint's ``canonical_camera`` entry; ValueError naming ``source`` if malformed."""
        try:
            return cls(float(d["fx"]), float(d["fy"]), float(d["cx"]), float(d["cy"]),
                       (int(d["size"][0]), int(d["size"][1])))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise ValueError(f"{source}: canonical_camera entry {d!r} is not "
                             f"{{fx, fy, cx, cy, size: [H, W]}}: {exc}") from exc


def focal_ratio(K_net: np.ndarray, cam: CanonicalCamera, size: tuple[int, int]) -> float:
    """f_real / f_canonical, focal = mean of fx and fy, both at network ``size`` = (H, W)."""
    Kc = cam.K_at(size)
    return float((K_net[0, 0] + K_net[1, 1]) / (Kc[0, 0] + Kc[1, 1]))


def _shift(x: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """out[..., v, u] = x[..., v - dy, u - dx] with the border replicated. (B,C,H,W) -> (B,C,H,W)."""
    if dx == 0 and dy == 0:
        return x
    H, W = x.shape[-2:]
    iv = (torch.arange(H, device=x.device) - dy).clamp_(0, H - 1)
    iu = (torch.arange(W, device=x.device) - dx).clamp_(0, W - 1)
    return x.index_select(-2, iv).index_select(-1, iu)


def run_canonical(run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, K_net: np.ndarray,
                  cam: CanonicalCamera, align_principal_point: bool = True) -> torch.Tensor:
    """Metric depth of ``x`` on the real camera from a network trained on ``cam``.

    Args:
        run: the network, (B,3,h,w) -> (B,1,h,w) depth in the canonical camera.
        x: (B,3,h,w) image at network size.
        K_net: (3,3) real intrinsics scaled to (h, w).
        cam: the training camera.
        align_principal_point: translate the image so the real principal point falls on the
            canonical one (whole pixels), and the depth back.
    Returns:
        (B,1,h,w) depth in metres on the real camera, ``depth_canonical * f_real / f_canonical``.
    """
    if x.dim() != 4:
        raise ValueError(f"x must be (B,3,h,w), got {tuple(x.shape)}")
    size = (int(x.shape[-2]), int(x.shape[-1]))
    K_net = np.asarray(K_net, dtype=np.float64)
    dx = dy = 0
    if align_principal_point:
        Kc = cam.K_at(size)
        dx, dy = int(round(Kc[0, 2] - K_net[0, 2])), int(round(Kc[1, 2] - K_net[1, 2]))
    depth = _shift(run(_shift(x, dx, dy)), -dx, -dy)
    return depth * focal_ratio(K_net, cam, size)
