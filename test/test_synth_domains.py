"""Domains A and B differ measurably (images, camera, layout)."""
import numpy as np
import pytest

from mono_depth_ros.tools.synth import PRESETS, get_preset
from mono_depth_ros.tools.synth.stats import domain_statistics, image_statistics


def test_presets_have_readable_aliases():
    assert get_preset("A").label == "sunny_suburb" and get_preset("B").label == "overcast_city"
    assert PRESETS["overcast_city"] is PRESETS["B"]


def test_camera_and_layout_differ():
    a, b = get_preset("A"), get_preset("B")
    assert a.camera_height != b.camera_height and a.camera_pitch_deg != b.camera_pitch_deg
    assert not np.allclose(a.intrinsics(640, 192), b.intrinsics(640, 192))
    assert a.lanes_per_direction != b.lanes_per_direction
    assert a.moving_cars_per_km != b.moving_cars_per_km


def test_image_statistics_known_answer():
    img = np.zeros((1, 4, 4, 3), np.uint8)
    img[0, :, 2:] = 255
    st = image_statistics(img)
    np.testing.assert_allclose(st["mean_rgb"], [127.5] * 3)
    np.testing.assert_allclose(st["std_rgb"], [127.5] * 3)
    assert st["grad_energy"] == pytest.approx(0.5 * (1 / 3))
    with pytest.raises(ValueError, match="N,H,W,3"):
        image_statistics(np.zeros((4, 4, 3)))


def test_domain_statistics_differ():
    sa = domain_statistics("A", seed=0, n_frames=4, width=160, height=48, duration_s=6.0)
    sb = domain_statistics("B", seed=0, n_frames=4, width=160, height=48, duration_s=6.0)
    assert abs(sa["mean_rgb"].mean() - sb["mean_rgb"].mean()) > 10
    # A: saturated and contrasty (blue sky, green trees); B: grey and flat.
    sat_a = np.ptp(sa["mean_rgb"])
    sat_b = np.ptp(sb["mean_rgb"])
    assert sat_a > 2 * sat_b
    assert sa["std_rgb"].mean() > 1.3 * sb["std_rgb"].mean()
    assert sa["grad_energy"] > 1.2 * sb["grad_energy"]
    assert sa["sky_fraction"] > 3 * sb["sky_fraction"] + 0.01
