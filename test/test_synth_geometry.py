"""GT depth and GT poses agree with the rendered geometry (synthetic world)."""
import numpy as np
import pytest

from mono_depth_ros.tools.synth.drive import Drive, DriveConfig


def _warp_depth_error(f0, f1):
    """Per-pixel |z predicted by warping f0 into f1 - f1's GT depth| on static co-visible pixels."""
    K = f0.K
    h, w = f0.depth.shape
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    z0 = f0.depth.astype(np.float64)
    ok = np.isfinite(z0) & ~f0.dynamic_mask
    pts = np.stack([(u - K[0, 2]) / K[0, 0] * z0, (v - K[1, 2]) / K[1, 1] * z0, z0], -1)[ok]
    T_c1_c0 = np.linalg.inv(f1.T_map_camera) @ f0.T_map_camera
    p1 = pts @ T_c1_c0[:3, :3].T + T_c1_c0[:3, 3]
    z = p1[:, 2]
    front = z > 0.1
    p1, z = p1[front], z[front]
    u1 = K[0, 0] * p1[:, 0] / z + K[0, 2]
    v1 = K[1, 1] * p1[:, 1] / z + K[1, 2]
    inside = (u1 >= 0) & (u1 < w - 1) & (v1 >= 0) & (v1 < h - 1)
    u1, v1, z = u1[inside], v1[inside], z[inside]
    x0, y0 = np.floor(u1).astype(int), np.floor(v1).astype(int)
    fx, fy = u1 - x0, v1 - y0
    d1 = f1.depth.astype(np.float64)
    bad1 = ~np.isfinite(d1) | f1.dynamic_mask
    corners = [(y0, x0), (y0, x0 + 1), (y0 + 1, x0), (y0 + 1, x0 + 1)]
    zs = np.stack([d1[c] for c in corners])
    bad = np.any(np.stack([bad1[c] for c in corners]), 0)
    # Occlusion/discontinuity: the four neighbours must lie on one smooth surface.
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = (zs.max(0) / zs.min(0)) < 1.05
        inv = 1.0 / zs                       # inverse depth is affine in (u, v) on planes
        inv_i = (inv[0] * (1 - fx) * (1 - fy) + inv[1] * fx * (1 - fy)
                 + inv[2] * (1 - fx) * fy + inv[3] * fx * fy)
        z_ref = 1.0 / inv_i
    keep = ~bad & smooth
    err = np.abs(z[keep] - z_ref[keep])
    visible = err < 0.05 * z[keep]           # not occluded in frame t+1
    return err[visible], visible.sum() / max(len(ok.ravel()), 1)


@pytest.mark.parametrize("preset", ["A", "B"])
def test_gt_depth_consistent_with_gt_pose(preset):
    drive = Drive(DriveConfig.make(preset, seed=3, duration_s=6.0, width=320, height=96, camera_noise=False))
    errs = []
    for k in (10, 30):                        # moving (t = 1 s and 3 s)
        f0, f1 = drive.frame(k), drive.frame(k + 1)
        assert np.linalg.norm(f1.T_map_camera[:3, 3] - f0.T_map_camera[:3, 3]) > 0.2
        err, frac = _warp_depth_error(f0, f1)
        assert frac > 0.3, f"only {frac:.0%} of pixels usable"
        errs.append(err)
    err = np.concatenate(errs)
    assert np.median(err) <= 0.01, np.median(err)
    assert np.percentile(err, 90) <= 0.05


def test_frame_fields_and_extrinsic():
    drive = Drive(DriveConfig.make("A", seed=1, duration_s=1.0, width=96, height=32))
    f = drive.frame(3)
    assert f.image.shape == (32, 96, 3) and f.image.dtype == np.uint8
    assert f.depth.shape == (32, 96) and f.depth.dtype == np.float32
    assert f.dynamic_mask.dtype == bool and f.right_image is None
    assert np.isposinf(f.depth).any() and (f.depth[np.isfinite(f.depth)] > 0).all()
    T_map_base = drive.world.trajectory.T_map_base(0.3)
    np.testing.assert_allclose(f.T_map_camera, T_map_base @ drive.preset.T_base_camera(), atol=1e-9)
    np.testing.assert_allclose(f.T_map_camera[:3, :3] @ f.T_map_camera[:3, :3].T, np.eye(3), atol=1e-9)
    # Optical z axis looks along base_link x (forward), y down.
    R_bc = drive.preset.T_base_camera()[:3, :3]
    assert R_bc[0, 2] > 0.99 and R_bc[2, 1] < -0.99
    assert f.stamp_ns == drive.config.start_ns + 300_000_000


def test_stereo_right_view_is_shifted():
    drive = Drive(DriveConfig.make("A", seed=1, duration_s=1.0, width=96, height=32, stereo=True))
    f = drive.frame(2)
    assert f.right_image is not None and f.right_image.shape == f.image.shape
    assert not np.array_equal(f.right_image, f.image)
    T_lr = np.linalg.inv(drive.preset.T_base_camera()) @ drive.preset.T_base_right_camera()
    np.testing.assert_allclose(T_lr[:3, 3], [drive.preset.stereo_baseline, 0, 0], atol=1e-12)


def test_shading_threads_do_not_change_pixels():
    cfg = DriveConfig.make("A", seed=2, duration_s=1.0, width=80, height=24)
    f1 = Drive(cfg, threads=1).frame(4)
    f2 = Drive(cfg, threads=2).frame(4)
    assert np.array_equal(f1.image, f2.image) and np.array_equal(f1.depth, f2.depth)


def test_dynamic_mask_marks_moving_cars():
    drive = Drive(DriveConfig.make("B", seed=0, duration_s=6.0, width=160, height=48, camera_noise=False))
    found = 0
    for k in (5, 20, 40, 55):
        f = drive.frame(k)
        if not f.dynamic_mask.any():
            continue
        found += 1
        t = (f.stamp_ns - drive.config.start_ns) / 1e9
        v, u = np.nonzero(f.dynamic_mask)
        z = f.depth[v, u].astype(np.float64)
        K = f.K
        pc = np.stack([(u - K[0, 2]) / K[0, 0] * z, (v - K[1, 2]) / K[1, 1] * z, z, np.ones_like(z)])
        pw = (f.T_map_camera @ pc)[:3].T
        centres = np.array([m.xyz.reshape(-1, 3).mean(0) for m in drive.world.traffic.meshes_at(t, None, 1e9)])
        dist = np.linalg.norm(pw[:, None, :2] - centres[None, :, :2], axis=2).min(1)
        assert dist.max() < 3.0                      # every masked pixel lies on a moving car
    assert found >= 2
