"""``mono-depth generate --traffic dense``: a drive where moving cars cover >= 5 % of the pixels."""
from __future__ import annotations

import numpy as np
import pytest

from mono_depth_ros.tools.synth.bag import TRAFFIC, generate_bag, traffic_density
from mono_depth_ros.learning.data import load_bag


def test_traffic_choices():
    assert traffic_density(None, 20.0) == traffic_density("normal", 20.0) == 20.0
    assert traffic_density("dense", 20.0) == TRAFFIC["dense"] == 250.0
    assert traffic_density("80", 20.0) == 80.0
    for bad in ("jam", -1, 5000):
        with pytest.raises(ValueError, match="traffic"):
            traffic_density(bad, 20.0)


@pytest.mark.parametrize("preset", ["A", "B"])
def test_dense_traffic_covers_five_percent_of_the_pixels(tmp_path, preset):
    """A short drive of each domain, measured on the bag's own ground-truth mask (every frame)."""
    share = {}
    for traffic in ("normal", "dense"):
        out = generate_bag(tmp_path / traffic, preset=preset, seed=1, duration_s=12.0, width=160, height=48,
                           rate_hz=5.0, progress=False, contact_sheet=False, workers=1, traffic=traffic,
                           sensors="camera,depth_gt,dynamic_mask_gt")
        share[traffic] = float(load_bag(out).dynamic_masks.mean())
    assert share["dense"] >= 0.05, share
    assert share["dense"] > 2 * share["normal"], share
