"""``mono-depth generate --car-texture``: cars carry a pattern that moves rigidly with them.

A single box car side-on in front of a camera (preset B, no sensor noise), rendered by the drive's renderer:
the pattern shows inside the car (grey-level spread on one face), is absent with plain paint, and the same
car point has the same colour after the car moved (so the photometric loss sees the motion inside the car,
not only at its edges).
"""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import binary_erosion

from mono_depth_ros.tools.synth.presets import get_preset
from mono_depth_ros.tools.synth.render import Renderer
from mono_depth_ros.tools.synth.world import Material, Mesh, box_mesh

W, H = 640, 192
FACE_DEPTH = 7.1          # the car's near side (map x = 8 - 0.9): its optical-frame depth
SHIFT_PX = 12             # the car moves this many pixels to the left between the two views


def _camera() -> np.ndarray:
    """(4,4) T_map_camera: optical z along map +x, optical x along map -y, y down; 1.3 m high."""
    T = np.eye(4)
    T[:3, :3] = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    T[2, 3] = 1.3
    return T


def _car(y: float) -> Mesh:
    """A 4.5 x 1.8 x 1.2 m painted box (no windows), its long side facing the camera, centre at (8, y)."""
    box = box_mesh((4.5, 1.8, 1.2), Material.CAR_PAINT, (0.45, 0.12, 0.10), (37.0, 0, 0, 0), z0=0.3)
    yaw = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])      # local x along map y
    return box.transformed(yaw, np.array([8.0, y, 0.0]))


def _views(texture: float):
    preset = get_preset("B").replace(car_texture=texture)
    r = Renderer(Mesh.empty(), preset, seed=5, threads=1)
    K = preset.intrinsics(W, H)
    step = SHIFT_PX * FACE_DEPTH / K[0, 0]         # metres along map +y = pixels to the left
    a = r.render(_camera(), K, W, H, [_car(0.0)])
    b = r.render(_camera(), K, W, H, [_car(step)])
    return a, b


@pytest.fixture(scope="module")
def views():
    return {"plain": _views(0.0), "textured": _views(1.0)}


def _face(out) -> np.ndarray:
    """(H,W) bool: the interior of the car's near face (moving pixels at the face's depth, 3 px in)."""
    face = out.dynamic & (np.abs(out.depth - FACE_DEPTH) < 0.02)
    return binary_erosion(face, iterations=3)


def test_the_face_is_seen(views):
    for a, b in views.values():
        assert 3000 < _face(a).sum() < 12000, _face(a).sum()
        assert np.array_equal(a.depth[:, SHIFT_PX:], b.depth[:, :-SHIFT_PX]) or \
            np.abs(np.nan_to_num(a.depth[:, SHIFT_PX:] - b.depth[:, :-SHIFT_PX], posinf=0)).max() < 1e-3


def test_texture_inside_the_car(views):
    std = {k: float(a.image.astype(np.float64).mean(2)[_face(a)].std()) for k, (a, _) in views.items()}
    assert std["plain"] < 4.0, std            # plain paint: the 6 % paint noise only
    assert std["textured"] > 20.0, std
    assert std["textured"] > 8 * std["plain"], std


def test_texture_moves_with_the_car(views):
    """Same car point -> same colour; same pixel -> a different colour (the motion shows inside the car)."""
    res = {}
    for k, (a, b) in views.items():
        ia, ib = a.image.astype(np.float64), b.image.astype(np.float64)
        fa, fb = _face(a), _face(b)
        m = fa[:, SHIFT_PX:] & fb[:, :-SHIFT_PX]
        follow = np.abs(ib[:, :-SHIFT_PX] - ia[:, SHIFT_PX:])[m].mean()     # a's pixel u is b's u - SHIFT
        still = np.abs(ib - ia)[fa & fb].mean()                              # the same pixel in both views
        res[k] = (float(follow), float(still))
    assert res["textured"][0] < 1.0, res      # vignetting only
    assert res["textured"][1] > 10.0, res
    assert res["textured"][1] > 5 * res["plain"][1], res


def test_default_is_plain_paint():
    assert get_preset("A").car_texture == 0.0 and get_preset("B").car_texture == 0.0


@pytest.mark.slow
def test_generate_option_reaches_the_cars(tmp_path):
    """``mono-depth generate --car-texture`` (CLI -> bag): the moving cars change, the rest (but parked cars) not."""
    import argparse

    import yaml

    from mono_depth_ros.learning.data import load_bag
    from mono_depth_ros.tools.synth import cli

    stats = {}
    for name, extra in (("plain", []), ("textured", ["--car-texture"])):
        parser = argparse.ArgumentParser()
        cli.add_arguments(parser)
        args = parser.parse_args([str(tmp_path / name), "--preset", "B", "--seed", "1", "--duration", "1.0",
                                  "--width", "320", "--height", "96", "--traffic", "dense", "--workers", "1",
                                  "--sensors", "camera,dynamic_mask_gt", "--no-camera-noise", "--quiet",
                                  "--no-contact-sheet"] + extra)
        assert cli.main(args) == 0
        d = load_bag(tmp_path / name)
        img = np.stack(d.images).astype(np.float64).mean(-1)
        dyn = np.stack(d.dynamic_masks).astype(bool)
        meta = yaml.safe_load((tmp_path / name / "metadata.yaml").read_text())
        stats[name] = (img, dyn, json_info(meta))
    (ip, dp, mp), (it, dt, mt) = stats["plain"], stats["textured"]
    assert mp["car_texture"] == 0.0 and mt["car_texture"] == 1.0
    assert np.array_equal(dp, dt) and dp.mean() > 0.02        # the same cars in the same places
    same = float(np.mean(ip[~dp] == it[~dt]))                  # elsewhere only the parked cars changed
    assert 0.8 < same < 1.0, same
    assert np.abs(it - ip)[dt].mean() > 5.0, np.abs(it - ip)[dt].mean()


def json_info(meta: dict) -> dict:
    """The generator's record (``mono_depth_ros.synth`` custom data) from a bag's metadata.yaml."""
    import json

    return json.loads(meta["rosbag2_bagfile_information"]["custom_data"]["mono_depth_ros.synth"])
