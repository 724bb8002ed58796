"""``mono-depth evaluate`` scores the ground-truth moving pixels apart from the static ones."""
from __future__ import annotations

import json

import numpy as np
import pytest

from mono_depth_ros.inference import Prediction
from mono_depth_ros.learning.data import BagFrames, load_bag
from mono_depth_ros.learning.evaluate import evaluate_frames, evaluate_regions


class _KnownDepth:
    """Stands in for the network: returns the depth it was given for each frame (known answers)."""

    def __init__(self, depths):
        self.depths, self.k = depths, 0

    def predict(self, rgb, K):
        d = self.depths[self.k]
        self.k += 1
        return Prediction(d, rgb, K)


def _drive(n=3, h=16, w=32):
    rng = np.random.default_rng(0)
    gt = rng.uniform(2.0, 40.0, (n, h, w)).astype(np.float32)
    gt[:, 0, :] = np.inf                                   # sky: scored nowhere
    moving = np.zeros((n, h, w), bool)
    moving[:, 8:12, 4:12] = True                           # a car
    moving[2] = False                                      # a frame without movers
    K = np.array([[20.0, 0, 16], [0, 20.0, 8], [0, 0, 1]])
    frames = BagFrames(np.zeros((n, h, w, 3), np.uint8), gt.astype(np.float16), None, K,
                       np.arange(n, dtype=np.int64), "mem", dynamic_masks=moving)
    g = frames.depths.astype(np.float32)
    pred = np.where(moving, 1.5 * g, 1.1 * g)              # 50 % off on movers, 10 % on the rest
    pred[~np.isfinite(pred)] = 50.0
    return frames, pred


def test_dynamic_and_static_pixels_are_scored_apart():
    frames, pred = _drive()
    accs = evaluate_regions(_KnownDepth(pred), [frames])
    dyn, sta, every = (accs[k].summary()["raw"] for k in ("dynamic", "static", "all"))
    assert dyn["abs_rel"] == pytest.approx(0.5, abs=1e-6) and dyn["images"] == 2   # frame 2 has no mover
    assert sta["abs_rel"] == pytest.approx(0.1, abs=1e-6) and sta["images"] == 3
    assert dyn["scale_ratio"] == pytest.approx(1 / 1.5, abs=1e-6) and dyn["a1"] == 0.0 and sta["a1"] == 1.0
    # All pixels: per image the share-weighted mix (32 of 15*32 valid pixels move in frames 0, 1).
    share = 32 / (15 * 32)
    assert every["abs_rel"] == pytest.approx((2 * (share * 0.5 + (1 - share) * 0.1) + 0.1) / 3, abs=1e-6)
    # evaluate_frames is the "all" row.
    assert evaluate_frames(_KnownDepth(pred), [frames]).summary() == accs["all"].summary()


def test_no_mask_no_split():
    frames, pred = _drive()
    bare = BagFrames(frames.images, frames.depths, None, frames.K, frames.stamps, "mem")
    accs = evaluate_regions(_KnownDepth(pred), [bare])
    assert accs["all"].count == 3 and accs["static"].count == 0 and accs["dynamic"].count == 0


@pytest.fixture(scope="module")
def traffic_bag(tmp_path_factory):
    from mono_depth_ros.tools.synth.bag import generate_bag
    out = tmp_path_factory.mktemp("regions") / "b"
    generate_bag(out, preset="B", seed=7, duration_s=0.6, width=320, height=96, progress=False,
                 contact_sheet=False, sensors="camera,depth_gt,dynamic_mask_gt,pose_gt", workers=1)
    return out


def test_the_bag_carries_the_mask_and_evaluate_prints_both_regions(traffic_bag, capsys):
    from mono_depth_ros.tools.synth.drive import Drive, DriveConfig
    d = load_bag(traffic_bag)
    drive = Drive(DriveConfig.make("B", 7, 0.6, 320, 96))
    truth = np.stack([drive.frame(k).dynamic_mask for k in range(len(drive))])
    assert truth.mean() > 0.02                            # seed 7 of B: cars in view
    assert d.dynamic_masks is not None and np.array_equal(d.dynamic_masks, truth)
    half = load_bag(traffic_bag, size=(48, 160))          # nearest, like the depth
    assert np.array_equal(half.dynamic_masks, truth[:, ::2, ::2])

    import argparse
    from mono_depth_ros.learning import evaluate_cli
    p = argparse.ArgumentParser()
    evaluate_cli.add_arguments(p)
    assert evaluate_cli.main(p.parse_args(["--bag", str(traffic_bag), "--json", "--size", "bag"])) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["metrics_static"]["raw"]["images"] == len(d)
    assert out["metrics_dynamic"]["raw"]["images"] == int(truth.any(axis=(1, 2)).sum())
    # The pooled AbsRel lies between the static and the dynamic one (per image: a share-weighted mean).
    a, s_, m = (out[k]["raw"]["abs_rel"] for k in ("metrics", "metrics_static", "metrics_dynamic"))
    assert min(s_, m) < a < max(s_, m)
    # The text output names its three tables; its last line repeats the three AbsRel (a tail is not misread).
    assert evaluate_cli.main(p.parse_args(["--bag", str(traffic_bag), "--size", "bag"])) == 0
    text = capsys.readouterr().out
    assert text.index("all pixels:") < text.index("| none (metric)") < text.index("static pixels")
    assert text.strip().splitlines()[-1] == f"all pixels: metric AbsRel {a:.3f}, scale " \
        f"{out['metrics']['raw']['scale_ratio']:.3f}; static {s_:.3f}, dynamic {m:.3f}"
