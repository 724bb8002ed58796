"""Benchmark harness (issue #8): peer networks, ONNX Runtime serving, voxel grid, ``mono-depth bench --quick``.

Timings are not asserted here (they belong in BENCHMARKS.md); what is asserted is that every
part runs and measures what it claims to.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from mono_depth_ros.tools.bench import core
from mono_depth_ros.tools.bench.peers import DepthAnythingV2Small, FastDepthNet
from mono_depth_ros.inference import DepthPredictor, OnnxRunner
from mono_depth_ros.pointcloud import voxel_downsample

from .rosutil import ROOT


@pytest.mark.parametrize("cls, params_m", [(FastDepthNet, 3.96), (DepthAnythingV2Small, 24.79)])
def test_peer_networks_follow_the_depthnet_contract(cls, params_m):
    net = cls().eval()
    assert sum(p.numel() for p in net.parameters()) / 1e6 == pytest.approx(params_m, abs=0.01)
    with torch.inference_mode():
        depth = net.predict_depth(torch.rand(1, 3, 64, 96))
    assert depth.shape == (1, 1, 64, 96)
    assert torch.isfinite(depth).all() and (depth >= net.min_depth).all() and (depth <= net.max_depth).all()
    net.train()
    disps = net.predict_disps(torch.rand(1, 3, 64, 96))
    assert len(disps) == 1 and disps[0].shape == (1, 1, 64, 96)


def test_flop_count_of_a_known_convolution():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
    # 8 outputs x 3x3x3 MACs per output pixel x 32x32 pixels x 2 FLOPs per MAC
    assert core.count_flops(conv, torch.rand(1, 3, 32, 32)) == 8 * 27 * 32 * 32 * 2


def test_grouped_convolution_backward_flops_are_counted_correctly():
    """flop_counter's conv backward ignores groups; the bench's formula does not (each gradient = the forward)."""
    from torch.utils.flop_counter import FlopCounterMode
    conv = torch.nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
    x = torch.rand(2, 32, 16, 16, requires_grad=True)
    fwd = 2 * 2 * 32 * 16 * 16 * 9          # B * Cout * pixels * (Cin/groups * 3 * 3) MACs, 2 FLOPs each
    with FlopCounterMode(display=False, custom_mapping={
            torch.ops.aten.convolution_backward: core._conv_backward_flops}) as counter:
        conv(x).sum().backward()
    assert counter.get_total_flops() == 3 * fwd   # forward + input gradient + weight gradient
    with FlopCounterMode(display=False) as stock:
        conv(x).sum().backward()
    assert stock.get_total_flops() > 3 * fwd      # the overcount the custom formula fixes


def test_adaptation_step_trains_every_network():
    for name in core.NETWORKS:
        if name.startswith("Depth Anything"):
            continue  # 25 M parameters: covered by the quick bench run below
        net = core.build_network(name)
        before = [p.detach().clone() for p in net.parameters()]
        t = core.adaptation_step(net, 64, 96, runs=1, warmup=0)
        assert t.median_ms > 0
        changed = sum(not torch.equal(a, p) for a, p in zip(before, net.parameters()))
        assert changed > 0.5 * len(before), name


def test_voxel_downsample_averages_points_and_colours():
    pts = np.array([[0.01, 0.01, 0.01], [0.09, 0.05, 0.03], [1.05, 0.0, 0.0], [np.nan, 0, 0]], np.float32)
    col = np.array([[0, 0, 0], [100, 200, 50], [10, 10, 10], [255, 255, 255]], np.uint8)
    out, c = voxel_downsample(pts, col, 0.1)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out[0], [0.05, 0.03, 0.02], atol=1e-6)
    np.testing.assert_allclose(out[1], [1.05, 0.0, 0.0], atol=1e-6)
    np.testing.assert_array_equal(c, [[50, 100, 25], [10, 10, 10]])
    with pytest.raises(ValueError, match="voxel size"):
        voxel_downsample(pts, col, 0.0)


def test_onnxruntime_backend_serves_the_same_depth_and_takes_swapped_weights():
    rgb = np.random.default_rng(0).integers(0, 255, (96, 320, 3), dtype=np.uint8)
    K = np.array([[160.0, 0, 160], [0, 160, 48], [0, 0, 1]])
    ort_p, _ = DepthPredictor.from_config("default", "", (96, 320), 0.1, 100.0, num_threads=1, backend="onnxruntime")
    ts_p, _ = DepthPredictor.from_config("default", "", (96, 320), 0.1, 100.0, num_threads=1, backend="torchscript")
    a, b = ort_p.predict(rgb, K).depth, ts_p.predict(rgb, K).depth
    assert ort_p.backend == "onnxruntime" and isinstance(ort_p._runner, OnnxRunner)
    assert np.abs(a - b).max() < 1e-3 * b.max()
    g = torch.Generator().manual_seed(1)
    new = {k: (v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() and "running_var" not in k
               else v) for k, v in ts_p.model.state_dict().items()}
    ort_p.swap_state(new)
    ts_p.swap_state(new)
    a2, b2 = ort_p.predict(rgb, K).depth, ts_p.predict(rgb, K).depth
    assert np.abs(b2 - b).max() > 100 * np.abs(a2 - b2).max()  # the swap changed depth, and identically
    assert ort_p.version == 1


def test_onnxruntime_swap_of_adapted_weights_does_not_export_again():
    """Adaptation trains the coarser scales' heads too; they are not in the served graph, so a swap only
    rewrites initializers (~15 ms) instead of exporting the network again (~250 ms, every swap)."""
    rgb = np.random.default_rng(0).integers(0, 255, (96, 320, 3), dtype=np.uint8)
    K = np.array([[160.0, 0, 160], [0, 160, 48], [0, 0, 1]])
    ort_p, _ = DepthPredictor.from_config("default", "", (96, 320), 0.1, 100.0, num_threads=1, backend="onnxruntime")
    ort_p.predict(rgb, K)
    runner = ort_p._runner
    g = torch.Generator().manual_seed(2)
    new = {k: (v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() and "running_var" not in k
               else v) for k, v in ort_p.model.state_dict().items()}
    assert any(k.startswith("heads.1.") for k in new)        # the coarse heads changed with everything else
    assert runner.can_take(new)                              # ... and need no new export
    ort_p.swap_state(new)
    eager, _ = DepthPredictor.from_config("default", "", (96, 320), 0.1, 100.0, num_threads=1, backend="eager")
    eager.swap_state(new)
    a, b = ort_p.predict(rgb, K).depth, eager.predict(rgb, K).depth
    assert np.abs(a - b).max() < 1e-3 * b.max()
    # An entry the served output does use, but which has no initializer of its own, still forces an export.
    first = next(iter(runner._unmapped), None)
    if first is not None:
        assert not runner.can_take({**new, first: new[first] + 1.0})


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="inference backend"):
        DepthPredictor.from_config("default", "", (96, 320), 0.1, 100.0, backend="tensorrt")


@pytest.mark.ros
@pytest.mark.slow
def test_bench_quick_runs_every_part(tmp_path):
    # Without the Fast DDS profile in the environment: the bench applies the project's own (without it the
    # depth images cross loopback as UDP fragments and its latencies are the resends').
    env = {k: v for k, v in os.environ.items() if k not in ("FASTDDS_DEFAULT_PROFILES_FILE",
                                                            "RMW_FASTRTPS_USE_QOS_FROM_XML")}
    r = subprocess.run([sys.executable, "-m", "mono_depth_ros", "bench", "--quick", "--out", str(tmp_path)],
                       cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "bench.json").read_text())
    assert res["peak_gflops"] > 0
    assert set(res["networks"]) == set(core.NETWORKS)
    for name, n in res["networks"].items():
        assert n["gflops"] > 0 and n["latency"]["median_ms"] > 0 and n["adapt_step"]["median_ms"] > 0, name
        # Units check, not a timing: quick mode's peak comes from 3 small GEMMs on a busy machine.
        assert 0 < n["peak_fraction"] < 5, name
    assert res["networks"]["monodepth2 ResNet-18"]["gflops"] > 10 * res["networks"]["default (ours)"]["gflops"]
    assert res["networks"]["default (ours)"]["onnxruntime_error"] == ""  # exports even with random weights
    ok = [v for v in res["variants"].values() if v["latency"]]
    assert {v["variant"] for v in ok} >= {"eager, inference_mode", "torch.jit.trace (node fallback)",
                                          "ONNX Runtime (node default)"}
    assert all(v["max_abs_diff_m"] < 0.01 for v in ok)
    assert [c["points"] for c in res["cloud"]["cases"]][0] == 96 * 320
    e2e = res["e2e"]
    seg = e2e["segments"]["10hz"]
    # A smoke test of the harness: the rates are the bench's figures (a CI run under load served 23 of 30).
    assert seg["published"] >= 25 and seg["depth"]["n"] >= 0.5 * seg["published"]
    assert seg["points"]["n"] > 0 and 0 < seg["depth"]["p50_ms"] < 2000
    assert e2e["adapt_steps_total"] >= 1  # adaptation was running
    assert e2e["fastdds_profile"] == str(ROOT / "config" / "fastdds_shm.xml")
    off = res["e2e_inference_only"]
    assert off["node_params"]["adapt"] is False and off["adapt_steps_total"] == 0
    assert off["segments"]["10hz"]["depth"]["n"] >= 0.5 * off["segments"]["10hz"]["published"]
    step = res["adapt_node_step"]
    assert set(step) >= {"median_ms", "floor_ms", "floor_ratio", "reference_median_ms", "speedup"}
    assert step["median_ms"] > 0 and step["reference_median_ms"] > 0 and step["floor_ms"] > 0
    assert step["speedup"] == pytest.approx(step["reference_median_ms"] / step["median_ms"])
    assert step["floor_ratio"] == pytest.approx(step["median_ms"] / step["floor_ms"])
    assert step["settings"]["step"] == "fast" and step["settings"]["crop"] == [192, 192]
    net = step["network_alone"]   # the part no loss engineering removes: less than the step, more than its floor
    assert 0 < net["gflop"] < step["gflop"] and 0 < net["median_ms"] < step["median_ms"] and net["floor_ratio"] > 1
    md = (tmp_path / "bench.md").read_text()
    assert "x ours" in md and "End-to-end through DDS" in md and "FLOP floor of the fast step" in md and "forward+backward alone" in md
