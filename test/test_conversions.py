"""Message <-> numpy conversions and point-cloud maths (no DDS)."""
import numpy as np
import pytest

from mono_depth_ros.pointcloud import RayGrid, colorize_depth, depth_to_points, voxel_downsample

pytest.importorskip("rclpy")
from mono_depth_ros.ros.conversions import (InputError, camera_info_to_K, cloud_to_xyz, depth_to_msg,  # noqa: E402
                                            image_to_rgb, points_to_cloud)

from .rosutil import make_camera_info, make_image  # noqa: E402


def rgb_img(h=4, w=5):
    return np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3)


class TestImageToRgb:
    def test_rgb8_bgr8_mono8_rgba8(self):
        rgb = rgb_img()
        assert np.array_equal(image_to_rgb(make_image(rgb)), rgb)
        assert np.array_equal(image_to_rgb(make_image(rgb[..., ::-1].copy(), encoding="bgr8")), rgb)
        rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=2)
        assert np.array_equal(image_to_rgb(make_image(rgba, encoding="rgba8")), rgb)
        mono = rgb[..., 0].copy()
        out = image_to_rgb(make_image(mono, encoding="mono8"))
        assert out.shape == (4, 5, 3) and np.array_equal(out[..., 1], mono)

    def test_row_padding_is_stripped(self):
        rgb = rgb_img()
        padded = np.zeros((4, 5 * 3 + 7), np.uint8)
        padded[:, :15] = rgb.reshape(4, 15)
        msg = make_image(rgb)
        msg.step, msg.data = 22, padded.tobytes()
        assert np.array_equal(image_to_rgb(msg), rgb)

    def test_mono16_is_scaled_to_8bit_like_cv_bridge(self):
        m = (np.arange(20, dtype=np.uint16) * 3000).reshape(4, 5)
        out = image_to_rgb(make_image(m, encoding="mono16"))
        assert out.dtype == np.uint8
        assert np.abs(out[..., 0].astype(int) - (m >> 8)).max() <= 1

    @pytest.mark.parametrize("mutate,text", [
        (lambda m: setattr(m, "encoding", "nope"), "unsupported image encoding 'nope'"),
        (lambda m: setattr(m, "data", bytes(m.data)[:10]), "truncated image data"),
        (lambda m: setattr(m, "step", 3), "step 3 is smaller"),
        (lambda m: (setattr(m, "width", 0)), "zero size"),
    ])
    def test_bad_images_name_the_problem(self, mutate, text):
        msg = make_image(rgb_img())
        mutate(msg)
        with pytest.raises(InputError, match=text.replace("(", r"\(")):
            image_to_rgb(msg)


class TestCameraInfo:
    def test_valid(self):
        K = camera_info_to_K(make_camera_info(640, 192, 300.0))
        assert K[0, 0] == 300.0 and K[0, 2] == 319.5

    @pytest.mark.parametrize("k,text", [([np.nan] + [0.0] * 8, "NaN"), ([-1.0, 0, 1, 0, 1, 1, 0, 0, 1], "focal")])
    def test_invalid(self, k, text):
        info = make_camera_info(640, 192, 300.0)
        info.k = k
        with pytest.raises(InputError, match=text):
            camera_info_to_K(info)


class TestPointCloud:
    K = np.array([[100.0, 0, 4.5], [0, 100.0, 2.5], [0, 0, 1]])

    def test_backprojection_known_answer(self):
        depth = np.full((6, 10), 2.0, np.float32)
        depth[0, 0] = np.nan
        depth[1, 1] = -1
        pts = depth_to_points(depth, self.K)
        assert pts.shape == (6, 10, 3)
        np.testing.assert_allclose(pts[5, 9], [(9 - 4.5) / 100 * 2, (5 - 2.5) / 100 * 2, 2.0], rtol=1e-6)
        assert np.isnan(pts[0, 0]).all() and np.isnan(pts[1, 1]).all()

    def test_stride_and_transform(self):
        depth = np.full((6, 10), 3.0, np.float32)
        T = np.eye(4)
        T[:3, 3] = [1, 2, 3]
        pts = depth_to_points(depth, self.K, stride=2, T_target_camera=T, rays=RayGrid())
        assert pts.shape == (3, 5, 3)
        np.testing.assert_allclose(pts[1, 2], [(4 - 4.5) / 100 * 3 + 1, (2 - 2.5) / 100 * 3 + 2, 6.0], rtol=1e-6)

    def test_cloud_roundtrip_and_fields(self):
        pts = np.random.default_rng(0).normal(size=(3, 4, 3)).astype(np.float32)
        pts[0, 0] = np.nan
        cols = np.random.default_rng(1).integers(0, 255, (3, 4, 3), dtype=np.uint8)
        from std_msgs.msg import Header
        msg = points_to_cloud(pts, cols, Header(frame_id="odom"))
        assert (msg.height, msg.width, msg.point_step, msg.is_dense) == (3, 4, 16, False)
        xyz = cloud_to_xyz(msg)
        np.testing.assert_array_equal(xyz.reshape(3, 4, 3), pts)
        packed = np.frombuffer(bytes(msg.data), np.uint32).reshape(-1, 4)[:, 3]
        assert packed[5] == (int(cols[1, 1, 0]) << 16 | int(cols[1, 1, 1]) << 8 | int(cols[1, 1, 2]))

    def test_voxel_downsample_reduces_and_keeps_extent(self):
        pts = np.random.default_rng(0).uniform(0, 1, (5000, 3)).astype(np.float32)
        out, col = voxel_downsample(pts, np.zeros((5000, 3), np.uint8), 0.25)
        # open3d starts the grid half a voxel below the minimum: at most 5 cells per axis here.
        assert 30 < len(out) <= 125 and col.shape == out.shape

    def test_depth_msg_layout(self):
        from std_msgs.msg import Header
        d = np.arange(6, dtype=np.float32).reshape(2, 3)
        m = depth_to_msg(d, Header())
        assert (m.encoding, m.step, m.height, m.width) == ("32FC1", 12, 2, 3)
        np.testing.assert_array_equal(np.frombuffer(bytes(m.data), np.float32).reshape(2, 3), d)

    def test_colorize_near_is_bright(self):
        d = np.array([[0.5, 50.0, np.nan]], np.float32)
        c = colorize_depth(d, 0.1, 100.0)
        assert c[0, 0].sum() > c[0, 1].sum() and c[0, 2].sum() == 0
