"""Known-answer tests for mono_depth_ros.geometry (poses, pinhole camera, warping)."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mono_depth_ros.conventions import scale_intrinsics
from mono_depth_ros.geometry import PinholeCamera, Pose, relative_pose, stereo_T_source_target, warp
from mono_depth_ros.losses import photometric_error

torch.set_num_threads(1)


def _K(fx=50.0, fy=50.0, cx=31.5, cy=15.5):
    return torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])


def _rot_z(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _rot_y(a):
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, 0, s], [0, 1.0, 0], [-s, 0, c]])


class TestPose:
    def test_inverse_and_composition(self):
        T = Pose.from_rt(_rot_z(0.3)[None], torch.tensor([[1.0, -2.0, 0.5]]))
        I = (T @ T.inverse()).mat
        assert torch.allclose(I, torch.eye(4)[None], atol=1e-6)
        assert torch.allclose(T.inverse().mat, torch.linalg.inv(T.mat), atol=1e-6)

    def test_transform_points_known_answer(self):
        T = Pose.from_rt(_rot_z(math.pi / 2)[None], torch.tensor([[1.0, 0.0, 0.0]]))
        p = torch.tensor([[[1.0], [0.0], [0.0]]])  # (1,3,1)
        assert torch.allclose(T @ p, torch.tensor([[[1.0], [1.0], [0.0]]]), atol=1e-6)

    def test_relative_pose(self):
        Tw_a = Pose.from_rt(_rot_y(0.2)[None], torch.tensor([[0.0, 0.0, 1.0]])).mat
        Tw_b = Pose.from_rt(_rot_y(0.3)[None], torch.tensor([[0.5, 0.0, 2.0]])).mat
        T_a_b = relative_pose(Tw_a, Tw_b)
        assert torch.allclose(Tw_a @ T_a_b, Tw_b, atol=1e-6)

    def test_shape_error(self):
        with pytest.raises(ValueError, match=r"\(B,4,4\)"):
            Pose(torch.eye(3)[None])


class TestPinholeCamera:
    def test_backproject_matches_kornia(self):
        from kornia.geometry.depth import depth_to_3d_v2
        K = _K()[None]
        depth = torch.rand(1, 1, 32, 64) * 10 + 1
        pts = PinholeCamera(K, 32, 64).backproject(depth)
        ref = depth_to_3d_v2(depth[:, 0], K).permute(0, 3, 1, 2)
        assert pts.shape == (1, 3, 32, 64)
        assert torch.allclose(pts, ref, atol=1e-5)

    def test_project_roundtrip_is_pixel_grid(self):
        cam = PinholeCamera(_K()[None], 32, 64)
        uv, z = cam.project(cam.backproject(torch.full((2, 1, 32, 64), 3.0)))
        v, u = torch.meshgrid(torch.arange(32.0), torch.arange(64.0), indexing="ij")
        assert torch.allclose(uv[0, 0], u, atol=1e-4) and torch.allclose(uv[1, 1], v, atol=1e-4)
        assert torch.allclose(z, torch.full_like(z, 3.0))

    def test_scaled_matches_conventions(self):
        K = np.array([[100.0, 0, 49.5], [0, 90.0, 9.5], [0, 0, 1]])
        cam = PinholeCamera.from_camera_info(K, width=100, height=20).scaled(0.5, 0.25)
        assert (cam.width, cam.height) == (50, 5)
        assert np.allclose(cam.K[0].numpy(), scale_intrinsics(K, 0.5, 0.25))

    def test_from_camera_info_rejects_bad_K(self):
        with pytest.raises(ValueError, match="invalid camera matrix"):
            PinholeCamera.from_camera_info(np.zeros(9), 10, 10)

    def test_depth_size_mismatch_message(self):
        cam = PinholeCamera(_K()[None], 32, 64)
        with pytest.raises(ValueError, match="camera is 32x64"):
            cam.backproject(torch.ones(1, 1, 16, 64))


def _plane_texture(X, Y):
    """Smooth texture on the fronto-parallel plane, values in [0,1], 3 channels."""
    return torch.stack([0.5 + 0.25 * torch.sin(3.1 * X) + 0.2 * torch.cos(2.3 * Y),
                        0.5 + 0.3 * torch.sin(1.7 * X + 2.1 * Y),
                        0.5 + 0.3 * torch.cos(4.1 * X - 0.7 * Y)], 0)


class TestWarp:
    def test_analytic_plane_translation(self):
        """Plane at Z=4; source camera 0.3 m to the right: warp reproduces the target."""
        H, W, Z, b = 32, 64, 4.0, 0.3
        K = _K()
        v, u = torch.meshgrid(torch.arange(H, dtype=torch.float32), torch.arange(W, dtype=torch.float32), indexing="ij")
        X = (u - K[0, 2]) * Z / K[0, 0]
        Y = (v - K[1, 2]) * Z / K[1, 1]
        target = _plane_texture(X, Y)[None]
        source = _plane_texture(X + b, Y)[None]   # source camera at x = +b sees world X = x_s + b
        T_source_target = stereo_T_source_target(b)
        warped, valid = warp(source, torch.full((1, 1, H, W), Z), T_source_target, PinholeCamera(K[None], H, W))
        m = valid.bool().expand_as(target)
        assert valid.mean() > 0.8
        assert (warped - target)[m].abs().max() < 0.02
        err_warp = photometric_error(warped, target)[valid.bool()].mean()
        err_none = photometric_error(source, target)[valid.bool()].mean()
        assert err_warp < 0.1 * err_none

    def test_matches_kornia_warp_frame_depth(self):
        from kornia.geometry.depth import warp_frame_depth
        torch.manual_seed(0)
        H, W = 32, 64
        K = _K()[None]
        src = torch.rand(1, 3, H, W)
        depth = torch.rand(1, 1, H, W) * 5 + 2
        T = Pose.from_rt(_rot_y(0.05)[None] @ _rot_z(0.02)[None], torch.tensor([[0.1, -0.05, 0.2]])).mat
        cam = PinholeCamera(K, H, W)
        ours, valid = warp(src, depth, T, cam)
        ref = warp_frame_depth(src, depth, T, K)  # zero padding: compare where sampling stays inside
        uv, _ = cam.project(cam.backproject(depth), T)
        inside = (uv[:, 0] >= 0) & (uv[:, 0] <= W - 1) & (uv[:, 1] >= 0) & (uv[:, 1] <= H - 1)
        inner = (valid.bool() & inside[:, None]).expand_as(ours)
        assert inner.sum() > 1000
        assert torch.allclose(ours[inner], ref[inner], atol=1e-4)

    def test_identity_pose_is_identity(self):
        H, W = 32, 32
        src = torch.rand(2, 3, H, W)
        warped, valid = warp(src, torch.ones(2, 1, H, W) * 7, torch.eye(4).repeat(2, 1, 1),
                             PinholeCamera(_K(cx=15.5)[None], H, W))
        assert torch.allclose(warped, src, atol=1e-5) and bool(valid.all())

    def test_gradcheck_depth(self):
        H, W = 4, 5
        K = torch.tensor([[4.0, 0, 2.0], [0, 4.0, 1.5], [0, 0, 1]], dtype=torch.float64)[None]
        src = torch.rand(1, 2, H, W, dtype=torch.float64)
        T = stereo_T_source_target(0.1, dtype=torch.float64)
        depth = (torch.rand(1, 1, H, W, dtype=torch.float64) + 2).requires_grad_()
        cam = PinholeCamera(K, H, W)
        assert torch.autograd.gradcheck(lambda d: warp(src, d, T, cam)[0], (depth,), eps=1e-6, atol=1e-4)

    def test_closed_form_depth_gradient_equals_autograd(self):
        """warp's closed-form backward (known K and pose) = autograd's (the learned-K path), including
        points that end up behind the source camera (clamped z) and a wider source than target."""
        torch.manual_seed(1)
        H, W = 6, 7
        K = torch.tensor([[5.0, 0, 3.0], [0, 5.0, 2.5], [0, 0, 1]], dtype=torch.float64)[None].repeat(2, 1, 1)
        Ks = K.clone()
        Ks[:, 0, 2] += 4.0
        src = torch.rand(2, 3, H + 2, W + 8, dtype=torch.float64)
        T = Pose.from_rt(_rot_y(0.2)[None].double().repeat(2, 1, 1),
                         torch.tensor([[0.3, -0.1, -2.5], [0.1, 0.0, 0.5]], dtype=torch.float64)).mat
        depth = torch.rand(2, 1, H, W, dtype=torch.float64) * 4 + 0.5
        g = torch.rand(2, 3, H, W, dtype=torch.float64)
        grads, outs = [], []
        for learned in (False, True):
            d = depth.clone().requires_grad_()
            Kt = K.clone().requires_grad_(learned)
            out, valid = warp(src, d, T, PinholeCamera(Kt, H, W), PinholeCamera(Ks, H + 2, W + 8))
            (out * g).sum().backward()
            grads.append(d.grad)
            outs.append((out.detach(), valid))
        assert 0 < float(outs[0][1].mean()) < 1          # some points behind or outside: the clamp is exercised
        assert torch.allclose(outs[0][0], outs[1][0], atol=1e-12) and torch.equal(outs[0][1], outs[1][1])
        assert torch.allclose(grads[0], grads[1], rtol=1e-9, atol=1e-12)
        assert float(grads[0].abs().max()) > 1e-3

    def test_shape_errors(self):
        cam = PinholeCamera(_K()[None], 32, 64)
        with pytest.raises(ValueError, match="depth"):
            warp(torch.rand(1, 3, 32, 64), torch.rand(1, 32, 64), torch.eye(4)[None], cam)
        with pytest.raises(ValueError, match="T_source_target"):
            warp(torch.rand(1, 3, 32, 64), torch.rand(1, 1, 32, 64), torch.eye(4), cam)

    def test_real_stereo_motorcycle(self):
        """Middlebury pair: warping right -> left with the GT disparity beats no warp by far.

        skimage's disparity is for the LEFT image (x_right = x_left - d; +inf
        where no GT, the docstring says NaN). With one shared K, depth
        Z = f*b/d and T_right_left = [I | (-b,0,0)] reproduce x_right = x_left - d.
        """
        skd = pytest.importorskip("skimage.data")
        left, right, disp = skd.stereo_motorcycle()
        s = 0.5  # half resolution keeps the test light
        to_t = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255.0
        L = F.interpolate(to_t(left), scale_factor=s, mode="area")
        R = F.interpolate(to_t(right), scale_factor=s, mode="area")
        d = torch.from_numpy(np.ascontiguousarray(disp))[None, None].float()
        gt_ok = torch.isfinite(d) & (d > 0)
        d = torch.where(gt_ok, d, torch.ones_like(d))
        d = F.interpolate(d, scale_factor=s, mode="nearest") * s
        gt_ok = F.interpolate(gt_ok.float(), scale_factor=s, mode="nearest") > 0.5
        H, W = L.shape[-2:]
        f, b = 994.978 * s, 0.193001
        K = torch.tensor([[f, 0, 311.193 * s], [0, f, 254.877 * s], [0, 0, 1]])[None]
        depth = f * b / d
        warped, valid = warp(R, depth, stereo_T_source_target(b), PinholeCamera(K, H, W))
        m = (valid.bool() & gt_ok)
        err_warp = photometric_error(warped, L)[m].mean()
        err_none = photometric_error(R, L)[m].mean()
        assert m.float().mean() > 0.5
        assert err_warp < 0.5 * err_none, (float(err_warp), float(err_none))
