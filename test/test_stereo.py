"""Stereo adaptation (issue 16 item 1): monodepth's left-right term, the stereo pair as a source,
stereo-only triplets while the vehicle stands still, and ``mono-depth adapt --stereo`` on a bag."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mono_depth_ros.adapt.terms import StereoTerm
from mono_depth_ros.geometry import stereo_T_source_target

MIN_D, MAX_D = 0.1, 100.0
H, W = 64, 160
FX = 80.0
BASELINE = 0.54
CAM_HEIGHT = 1.5
WALL_Z = 12.0


def _texture(X, Y, Z):
    """A smooth, rich grey-level texture of world points (a sum of sines), in [0,1], as 3 channels."""
    t = (0.5 + 0.12 * np.sin(3.1 * X + 0.7 * Z) + 0.12 * np.sin(2.3 * Z - 1.3 * Y) + 0.1 * np.sin(7.9 * X - 5.3 * Y + 2.1 * Z)
         + 0.08 * np.sin(11.0 * Z + 4.0 * X))
    return np.stack([t, 0.8 * t + 0.1, 1.0 - 0.6 * t], 0).clip(0, 1)


def _render(cam_x: float):
    """Ray-cast a ground plane (y = CAM_HEIGHT below the camera) and a wall at z = WALL_Z for a camera
    at (cam_x, 0, 0) of the left optical frame. Returns the (3,H,W) image and the (H,W) depth."""
    K = np.array([[FX, 0, (W - 1) / 2], [0, FX, (H - 1) / 2], [0, 0, 1.0]])
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    rays = np.linalg.inv(K) @ np.stack([u.ravel(), v.ravel(), np.ones(u.size)])
    t_wall = np.full(u.size, WALL_Z)
    t_ground = np.where(rays[1] > 1e-6, CAM_HEIGHT / np.maximum(rays[1], 1e-6), np.inf)
    t = np.minimum(t_wall, t_ground)
    P = rays * t
    img = _texture(P[0] + cam_x, P[1], P[2]).reshape(3, H, W)
    return img.astype(np.float32), t.reshape(H, W).astype(np.float32), K.astype(np.float32)


def _to_disp(depth: np.ndarray) -> torch.Tensor:
    """metric depth (H,W) -> the network's sigmoid disparity (1,1,H,W) (inverse of disp_to_depth)."""
    lo, hi = 1.0 / MAX_D, 1.0 / MIN_D
    return torch.from_numpy((1.0 / depth - lo) / (hi - lo)).float()[None, None]


@pytest.fixture(scope="module")
def pair():
    left, depth_l, K = _render(0.0)
    right, depth_r, _ = _render(BASELINE)
    return (torch.from_numpy(left)[None], torch.from_numpy(right)[None], depth_l, depth_r, torch.from_numpy(K)[None])


def _loss(pair, scale_l=1.0, scale_r=1.0, lr_weight=1.0):
    left, right, depth_l, depth_r, K = pair
    term = StereoTerm(MIN_D, MAX_D, lr_weight=lr_weight)
    T = stereo_T_source_target(BASELINE)
    value = term.pair_loss(_to_disp(depth_l * scale_l), _to_disp(depth_r * scale_r), left, right, left, T, K)
    return float(value), term.last_parts


class TestStereoTerm:
    def test_true_disparities_are_consistent_and_explain_the_right_view(self, pair):
        value, parts = _loss(pair)
        assert parts["lr_consistency"] < 2e-4, parts
        assert parts["appearance_right"] < 0.01, parts

    @pytest.mark.parametrize("scale", [0.67, 1.5])
    def test_a_wrong_scale_is_penalised(self, pair, scale):
        true, _ = _loss(pair)
        wrong, parts = _loss(pair, scale, scale)
        assert wrong > 5.0 * true, (true, wrong, parts)

    def test_lr_consistency_penalises_disagreeing_views(self, pair):
        _, ok = _loss(pair)
        _, bad = _loss(pair, 1.0, 1.5)
        assert bad["lr_consistency"] > 20 * max(ok["lr_consistency"], 1e-6), (ok, bad)
