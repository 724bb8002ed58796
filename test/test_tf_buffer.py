"""Known-answer tests of the package's own TF buffer (filled directly, no DDS)."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from mono_depth_ros.tf_buffer import ExtrapolationError, LookupError_, TfBuffer, TransformSample

S = 1_000_000_000


def sample(parent, child, t_ns, xyz, yaw_deg=0.0):
    q = Rotation.from_euler("z", yaw_deg, degrees=True).as_quat()
    return TransformSample(t_ns, parent, child, xyz, q)


@pytest.fixture
def buf():
    b = TfBuffer(cache_time_s=10.0, extrapolation_tol_s=0.01)
    b.set_transform(sample("base_link", "camera_link", 0, (1.0, 0.0, 1.5)), static=True)
    b.set_transform(sample("odom", "base_link", 10 * S, (0.0, 0.0, 0.0), 0.0))
    b.set_transform(sample("odom", "base_link", 11 * S, (2.0, 0.0, 0.0), 90.0))
    return b


class TestLookup:
    def test_static_chain_and_interpolation(self, buf):
        T = buf.lookup("odom", "camera_link", int(10.5 * S))
        # Halfway: x = 1.0, yaw = 45 deg; camera offset (1,0,1.5) rotated by 45 deg.
        R = Rotation.from_euler("z", 45, degrees=True).as_matrix()
        np.testing.assert_allclose(T[:3, :3], R, atol=1e-12)
        np.testing.assert_allclose(T[:3, 3], np.array([1.0, 0, 0]) + R @ np.array([1.0, 0, 1.5]), atol=1e-12)

    def test_inverse_direction(self, buf):
        T_oc = buf.lookup("odom", "camera_link", int(10.25 * S))
        T_co = buf.lookup("camera_link", "odom", int(10.25 * S))
        np.testing.assert_allclose(T_oc @ T_co, np.eye(4), atol=1e-12)

    def test_latest_time_zero(self, buf):
        T = buf.lookup("odom", "base_link", 0)
        np.testing.assert_allclose(T[:3, 3], [2.0, 0, 0])

    def test_extrapolation_names_frames_and_times(self, buf):
        with pytest.raises(ExtrapolationError) as e:
            buf.lookup("odom", "camera_link", 12 * S)
        msg = str(e.value)
        assert "odom" in msg and "base_link" in msg and "12.000" in msg and "11.000" in msg

    def test_within_tolerance_clamps(self, buf):
        T = buf.lookup("odom", "base_link", 11 * S + 5_000_000)
        np.testing.assert_allclose(T[:3, 3], [2.0, 0, 0])

    def test_unknown_and_unconnected_frames(self, buf):
        with pytest.raises(LookupError_, match="'nowhere' does not exist"):
            buf.lookup("odom", "nowhere", 0)
        buf.set_transform(sample("map2", "island", 10 * S, (0, 0, 0)), static=True)
        with pytest.raises(LookupError_, match="not connected"):
            buf.lookup("odom", "island", 0)


@pytest.mark.faults
class TestRobustness:
    def test_out_of_order_and_duplicates(self):
        b = TfBuffer()
        for t, x in [(3, 3.0), (1, 1.0), (2, 2.0), (2, 2.0)]:
            b.set_transform(sample("odom", "base_link", t * S, (x, 0, 0)))
        np.testing.assert_allclose(b.lookup("odom", "base_link", int(1.5 * S))[:3, 3], [1.5, 0, 0])

    @pytest.mark.parametrize("bad", [(np.nan, 0, 0), (np.inf, 0, 0)])
    def test_nonfinite_rejected(self, bad):
        b = TfBuffer()
        assert not b.set_transform(TransformSample(S, "odom", "base_link", bad, (0, 0, 0, 1)))
        assert b.counters["rejected"] == 1 and b.frames() == []

    def test_zero_quaternion_rejected(self):
        b = TfBuffer()
        assert not b.set_transform(TransformSample(S, "odom", "base_link", (0, 0, 0), (0, 0, 0, 0)))

    def test_contradicting_parent_latest_wins(self):
        b = TfBuffer()
        b.set_transform(sample("odom", "base_link", S, (1, 0, 0)))
        b.set_transform(sample("map", "base_link", S, (5, 0, 0)))
        assert b.counters["parent_switches"] == 1
        np.testing.assert_allclose(b.lookup("map", "base_link", S)[:3, 3], [5, 0, 0])
        with pytest.raises(LookupError_):
            b.lookup("odom", "base_link", S)

    def test_cache_is_bounded(self):
        b = TfBuffer(cache_time_s=1.0)
        for i in range(500):
            b.set_transform(sample("odom", "base_link", i * S // 10, (i, 0, 0)))
        assert len(b._links["base_link"].stamps) <= 12
        with pytest.raises(ExtrapolationError):
            b.lookup("odom", "base_link", 0 + 1)

    def test_clear_keeps_static(self, buf):
        buf.clear()
        assert buf.can_transform("base_link", "camera_link", 0)
        assert not buf.can_transform("odom", "base_link", int(10.5 * S))
