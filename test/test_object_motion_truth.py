"""``tools/fit_object_motion.py``'s true field: the synthetic world's own object motion explains the movers."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mono_depth_ros.geometry import PinholeCamera, warp
from mono_depth_ros.learning.data import load_bag
from mono_depth_ros.losses import photometric_error_fast
from mono_depth_ros.tools.synth.bag import generate_bag

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))


@pytest.mark.slow
def test_true_field_explains_the_movers(tmp_path):
    from fit_object_motion import true_fields

    bag = generate_bag(tmp_path / "d", preset="B", seed=3, duration_s=2.0, width=320, height=96, progress=False,
                       contact_sheet=False, workers=1, traffic="dense", car_texture=True, camera_noise=False,
                       sensors="camera,depth_gt,dynamic_mask_gt,pose_gt")
    d = load_bag(bag, need_depth=True, need_pose=True)
    ids = [i for i in range(1, len(d) - 1) if d.dynamic_masks[i].mean() > 0.02][:4]
    assert ids
    fields, assigned = true_fields(bag, d, ids)
    assert assigned > 0.99, assigned
    img = lambda j: torch.from_numpy(np.ascontiguousarray(d.images[j].transpose(2, 0, 1))).float()[None] / 255  # noqa
    rigid, true, mags = [], [], []
    for i in ids:
        depth = torch.from_numpy(np.nan_to_num(d.depths[i].astype(np.float32), posinf=100))[None, None]
        mov = torch.from_numpy(d.dynamic_masks[i].astype(bool))[None, None]
        cam = PinholeCamera(torch.from_numpy(d.K.astype(np.float32))[None], 96, 320)
        for o, f in zip((-1, 1), fields[i]):
            T = torch.from_numpy((np.linalg.inv(d.T_map_camera[i + o]) @ d.T_map_camera[i]).astype(np.float32))[None]
            g = torch.from_numpy(f)[None]
            assert float(g.norm(dim=1)[~mov[:, 0]].max()) == 0.0             # zero off the movers
            mags.append(float(g.norm(dim=1)[mov[:, 0]].mean()))
            for out, m in ((rigid, None), (true, g)):
                out.append(float(photometric_error_fast(warp(img(i + o), depth, T, cam, motion=m)[0],
                                                        img(i))[mov].mean()))
    assert 0.2 < np.mean(mags) < 3.0, mags                       # cars at 6-14 m/s, 10 Hz
    assert np.mean(true) < 0.4 * np.mean(rigid), (np.mean(true), np.mean(rigid))
