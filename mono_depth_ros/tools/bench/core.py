"""Measurements of the benchmark (no rclpy): latency, throughput, FLOPs, peak, adaptation step, cloud.

Every function takes the network / sizes it measures and returns plain numbers, so
:mod:`mono_depth_ros.tools.bench.cli` can run them all in one process, at one input size and one
thread setting, and put them side by side.
"""
from __future__ import annotations

import copy
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
import torch

from mono_depth_ros.losses import SelfSupervisedLoss
from mono_depth_ros.models import build_model
from mono_depth_ros.models.base import DepthNet

from .peers import DepthAnythingV2Small, FastDepthNet

__all__ = ["Timing", "time_fn", "time_samples", "timing_of", "interleaved",
           "peak_gflops", "count_flops", "build_network", "NETWORKS", "inference_latency",
           "throughput", "adaptation_step", "cloud_build", "synthetic_camera"]

#: name in the table -> builder. Ours first; ratios are taken against it.
NETWORKS: dict[str, Callable[[], DepthNet]] = {
    "default (ours)": lambda: build_model("default"),
    "monodepth2 ResNet-18": lambda: build_model("monodepth2_resnet18"),
    "FastDepth (MobileNet+NNConv5)": FastDepthNet,
    "Depth Anything V2 Small": DepthAnythingV2Small,  # imports transformers only when built
}


def build_network(name: str) -> DepthNet:
    if name not in NETWORKS:
        raise ValueError(f"unknown network {name!r}; choose from: {', '.join(NETWORKS)}")
    return NETWORKS[name]()


@dataclass
class Timing:
    """Wall-clock statistics of repeated calls, in milliseconds."""

    median_ms: float
    p95_ms: float
    min_ms: float
    runs: int

    def as_dict(self) -> dict:
        return asdict(self)


def time_samples(fn: Callable[[], object], runs: int, warmup: int = 2) -> list[float]:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed; the times in ms."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, runs)):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def timing_of(times: list[float]) -> Timing:
    """Median, p95 (nearest rank) and minimum of ``times`` (ms)."""
    times = sorted(times)
    p95 = times[min(len(times) - 1, int(np.ceil(0.95 * len(times))) - 1)]
    return Timing(statistics.median(times), p95, times[0], len(times))


def time_fn(fn: Callable[[], object], runs: int, warmup: int = 2) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed (perf_counter)."""
    return timing_of(time_samples(fn, runs, warmup))


def interleaved(fns: dict[str, Callable[[], object]], runs: int, rounds: int, warmup: int = 3) -> dict[str, Timing]:
    """Time several callables in ``rounds`` round-robin rounds of ``runs/rounds`` calls each.

    On a shared machine the background load drifts; interleaving gives every candidate the same
    mix of quiet and busy moments, so their ratios are fair even when the absolute times move.
    """
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        for _ in range(warmup):
            f()
    per_round = max(1, -(-runs // rounds))
    for _ in range(rounds):
        for k, f in fns.items():
            samples[k] += time_samples(f, per_round, warmup=1)
    return {k: timing_of(v) for k, v in samples.items()}


def peak_gflops(n: int = 2048, runs: int = 10) -> dict[str, float]:
    """This CPU's practical fp32 peak in GFLOP/s: the best of two large (n x n) GEMMs, current threads.

    ``mkl_sgemm``: ``torch.mm`` (MKL). ``onednn_gemm``: the same-sized GEMM as a 1x1 convolution
    (oneDNN, which runs every convolution of the networks). On AMD CPUs MKL does not take its
    AVX-512 path, so oneDNN is the faster of the two there; ``peak`` is the larger.
    """
    a, b = torch.rand(n, n), torch.rand(n, n)
    out = torch.empty(n, n)
    flops = 2.0 * n ** 3
    mkl = flops / (time_fn(lambda: torch.mm(a, b, out=out), runs, warmup=2).min_ms * 1e-3) / 1e9
    side = max(1, int(round(n ** 0.5)))  # (n channels) x (side*side ~ n pixels) x (n channels)
    x = torch.rand(1, n, side, side)
    w = torch.rand(n, n, 1, 1)
    with torch.inference_mode():
        t = time_fn(lambda: torch.nn.functional.conv2d(x, w), runs, warmup=2)
    onednn = 2.0 * n * n * side * side / (t.min_ms * 1e-3) / 1e9
    return {"mkl_sgemm": mkl, "onednn_gemm": onednn, "peak": max(mkl, onednn)}


def count_flops(net: DepthNet | torch.nn.Module, x: torch.Tensor) -> int:
    """FLOPs of one eval forward pass (``torch.utils.flop_counter``: matmul/conv/attention; 1 MAC = 2 FLOPs)."""
    from torch.utils.flop_counter import FlopCounterMode

    net.eval()
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        (net.predict_depth if isinstance(net, DepthNet) else net)(x)
    return int(counter.get_total_flops())


def inference_latency(net: DepthNet, x: torch.Tensor, runs: int, warmup: int = 3) -> Timing:
    """Eval ``predict_depth`` (batch of ``x``) under ``torch.inference_mode``."""
    net.eval()
    with torch.inference_mode():
        return time_fn(lambda: net.predict_depth(x), runs, warmup)


def throughput(net: DepthNet, height: int, width: int, batch: int = 8, runs: int = 3) -> float:
    """Frames per second of batched eval inference (offline bag processing)."""
    x = torch.rand(batch, 3, height, width)
    t = inference_latency(net, x, runs, warmup=1)
    return batch / (t.median_ms * 1e-3)


def synthetic_camera(height: int, width: int) -> torch.Tensor:
    """(1,3,3) pinhole K with ~90 deg horizontal field of view, principal point at the centre."""
    f = 0.5 * width
    return torch.tensor([[[f, 0.0, 0.5 * width], [0.0, f, 0.5 * height], [0.0, 0.0, 1.0]]])


def adaptation_step(net: DepthNet, height: int, width: int, runs: int, warmup: int = 1,
                    batch: int = 1) -> Timing:
    """One self-supervised training step: forward + monodepth2 loss with two source frames + backward + Adam.

    Sources are the target shifted by a known metric pose (1 m forward / back), as in the engine.
    """
    net.train()
    if hasattr(net, "freeze_batchnorm"):
        net.freeze_batchnorm(True)
    opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad], lr=1e-5)
    loss_fn = SelfSupervisedLoss(net.min_depth, net.max_depth)
    g = torch.Generator().manual_seed(0)
    target = torch.rand(batch, 3, height, width, generator=g)
    sources = [torch.rand(batch, 3, height, width, generator=g) for _ in range(2)]
    poses = []
    for dz in (-1.0, 1.0):
        T = torch.eye(4).repeat(batch, 1, 1)
        T[:, 2, 3] = dz
        poses.append(T)
    K = synthetic_camera(height, width).repeat(batch, 1, 1)

    def step():
        opt.zero_grad(set_to_none=True)
        loss, _ = loss_fn(target, sources, poses, K, net.predict_disps(target))
        loss.backward()
        opt.step()

    try:
        return time_fn(step, runs, warmup)
    finally:
        net.eval()


def cloud_build(height: int, width: int, runs: int, stride: int = 1, voxel: float = 0.0,
                pack: Callable[[np.ndarray, np.ndarray], object] | None = None) -> tuple[Timing, int]:
    """Depth image -> (optionally voxelised) coloured cloud -> ``pack`` (e.g. PointCloud2), as the node does.

    Returns the timing and the number of points in the cloud.
    """
    from mono_depth_ros.pointcloud import RayGrid, depth_to_points, voxel_downsample

    rng = np.random.default_rng(0)
    depth = rng.uniform(2.0, 60.0, (height, width)).astype(np.float32)
    rgb = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    K = synthetic_camera(height, width)[0].numpy().astype(np.float64)
    T = np.eye(4)
    T[:3, 3] = (1.5, 0.0, 1.2)  # camera in a base frame: the node transforms through TF
    rays = RayGrid()
    n = [0]

    def build():
        pts = depth_to_points(depth, K, stride, T, rays)
        colors = rgb[::stride, ::stride]
        if voxel > 0:
            pts, colors = voxel_downsample(pts.reshape(-1, 3), colors.reshape(-1, 3), voxel)
        n[0] = int(np.prod(pts.shape[:-1]))
        if pack is not None:
            pack(pts, colors)

    return time_fn(build, runs, warmup=2), n[0]


# ------------------------------------------------------------------ the node's adaptation step (issue 17)
def _conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                         _output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of a convolution's backward, grouped/depthwise counted correctly.

    ``torch.utils.flop_counter`` computes the weight gradient as a dense convolution over the
    transposed shapes, ignoring ``groups``: a depthwise layer's backward comes out ``groups`` times
    too large (3.7x too many FLOPs for the default network's step). Each of the two gradients of a
    (non-transposed) convolution costs exactly its forward: 2 * B * Cout * prod(out) * Cin/g * prod(k).
    """
    from torch.utils.flop_counter import conv_flop_count

    fwd = conv_flop_count(list(x_shape), list(w_shape), list(grad_out_shape), transposed)
    return fwd * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def conv3x3_peak_gflops(runs: int = 5) -> float:
    """Best fp32 GFLOP/s of dense 3x3 convolutions at the current thread count (the step's FLOP ceiling)."""
    best = 0.0
    for c, s in ((64, 56), (128, 28), (256, 14)):
        x, w = torch.rand(1, c, s, s), torch.rand(c, c, 3, 3)
        with torch.inference_mode():
            t = time_fn(lambda: torch.nn.functional.conv2d(x, w, padding=1), runs, warmup=2)
        best = max(best, 2.0 * c * c * 9 * s * s / (t.min_ms * 1e-3) / 1e9)
    return best


def node_adaptation_engines(height: int = 192, width: int = 640, frames: int = 8, seed: int = 5):
    """(fast engine, reference engine, triplets): the node's adaptation at its default settings.

    Both engines start from the shipped weights with 16 domain-A anchor images, 1 current + 3
    replayed triplets per step, BatchNorm frozen, the guard and the paired verification every 5th
    step, exactly as ``NodeAdaptation`` builds them (``adapt_step: fast`` and ``reference``). The
    triplets are rendered domain-B frames with their ground-truth relative poses.
    """
    from mono_depth_ros.adapt.engine import AdaptationEngine, AdaptConfig, Triplet
    from mono_depth_ros.checkpoint import load_checkpoint, shipped_checkpoint_path
    from mono_depth_ros.ros.params import NodeConfig
    from mono_depth_ros.tools.synth import render_drive

    node = NodeConfig()
    model, _ = load_checkpoint(shipped_checkpoint_path())
    drive = list(render_drive("B", seed=seed, duration_s=(frames + 1) / 10.0, width=width, height=height))
    anchors = np.stack([f.image for f in render_drive("A", seed=7, duration_s=1.6, width=width, height=height)][:16])
    to_t = lambda img: torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))  # noqa: E731
    trips = []
    for i in range(1, len(drive) - 1):
        f = drive[i]
        T = tuple(torch.from_numpy((np.linalg.inv(drive[j].T_map_camera) @ f.T_map_camera).astype(np.float32))
                  for j in (i - 1, i + 1))
        trips.append(Triplet(f.stamp_ns, to_t(f.image), (to_t(drive[i - 1].image), to_t(drive[i + 1].image)), T,
                             torch.from_numpy(f.K.astype(np.float32))))

    def engine(step: str):
        cfg = AdaptConfig(lr=node.adapt_lr, train_height=height, train_width=width,
                          replay_per_step=node.adapt_replay_per_step, anchor_weight=node.adapt_anchor_weight,
                          step=step, crop_width=node.adapt_crop_width, crop_height=node.adapt_crop_height)
        return AdaptationEngine(model, None, cfg, anchors=anchors)

    return engine(node.adapt_step), engine("reference"), trips


def _network_alone(fast, runs: int) -> dict:
    """The fast step's network forward+backward alone (its training batch and anchors as one batch of
    crops, channels_last as the step feeds it; no loss): the part of the step no loss engineering removes."""
    from torch.utils.flop_counter import FlopCounterMode

    h, w = fast.crop or (fast.cfg.train_height, fast.cfg.train_width)
    n = 1 + fast.cfg.replay_per_step + (fast.cfg.anchor_per_step if fast.anchor_term is not None else 0)
    x = torch.rand(n, 3, h, w).contiguous(memory_format=fast.net_memory_format)
    model = copy.deepcopy(fast.model)

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        sum(d.mean() for d in model.predict_disps(x)).backward()
    with FlopCounterMode(display=False, custom_mapping={
            torch.ops.aten.convolution_backward: _conv_backward_flops}) as counter:
        fwd_bwd()
    t = time_fn(fwd_bwd, max(3, runs // 2), warmup=2)
    return {"median_ms": t.median_ms, "gflop": counter.get_total_flops() / 1e9}


def adapt_node_step(runs: int = 20, reference_runs: int = 6, height: int = 192, width: int = 640) -> dict:
    """The node's adaptation step at its default settings vs the reference step, timed interleaved, 1 thread.

    Returns ``{median_ms, floor_ms, floor_ratio, reference_median_ms, speedup}`` plus details:
    ``gflop`` of one fast step (forward + backward, grouped convolutions counted correctly, one
    paired verification per ``swap_every`` steps included pro rata), the 1-thread 3x3-convolution
    peak it is divided by, and the step counts. Call with torch at 1 thread (the node's
    ``adapt_threads`` default).
    """
    import random

    from torch.utils.flop_counter import FlopCounterMode

    fast, ref, trips = node_adaptation_engines(height, width)
    end = time.monotonic() + 300   # the node's steady state: its SSIM+L1 kernels compiled (adapt_compile_loss)
    while fast.loss_kernels == "compiling" and time.monotonic() < end:
        time.sleep(0.2)
    rng = random.Random(0)
    pick = lambda: rng.sample(trips, 1 + fast.cfg.replay_per_step)  # noqa: E731
    for eng in (fast, ref):           # warm-up: allocator, oneDNN primitives, first verification
        for _ in range(2):
            eng.train_batch(pick(), True)
    # FLOPs: a plain step and a verifying one, weighted as the schedule runs them (1 in swap_every).
    counted = []
    for _ in range(fast.cfg.swap_every):
        with FlopCounterMode(display=False, custom_mapping={
                torch.ops.aten.convolution_backward: _conv_backward_flops}) as counter:
            fast.train_batch(pick(), True)
        counted.append(counter.get_total_flops())
    gflop = float(np.mean(counted)) / 1e9
    samples = {"fast": [], "reference": []}
    per_round = max(1, round(runs / max(1, reference_runs)))
    while len(samples["reference"]) < reference_runs or len(samples["fast"]) < runs:
        for _ in range(per_round if len(samples["fast"]) < runs else 0):
            t0 = time.perf_counter()
            fast.train_batch(pick(), True)
            samples["fast"].append(time.perf_counter() - t0)
        if len(samples["reference"]) < reference_runs:
            t0 = time.perf_counter()
            ref.train_batch(pick(), True)
            samples["reference"].append(time.perf_counter() - t0)
    net = _network_alone(fast, runs)
    peak = conv3x3_peak_gflops()
    med = float(np.median(samples["fast"])) * 1e3
    ref_med = float(np.median(samples["reference"])) * 1e3
    floor = gflop / peak * 1e3
    return {"median_ms": med, "floor_ms": floor, "floor_ratio": med / floor, "reference_median_ms": ref_med,
            "speedup": ref_med / med, "mean_ms": float(np.mean(samples["fast"])) * 1e3,
            "reference_mean_ms": float(np.mean(samples["reference"])) * 1e3, "gflop": gflop,
            "peak_conv3x3_1thread_gflops": peak, "runs": len(samples["fast"]),
            "reference_runs": len(samples["reference"]),
            "network_alone": {"median_ms": net["median_ms"], "gflop": net["gflop"],
                              "floor_ms": net["gflop"] / peak * 1e3,
                              "floor_ratio": net["median_ms"] / (net["gflop"] / peak * 1e3)},
            "settings": {"step": fast.cfg.step, "crop": list(fast.crop or (height, width)),
                         "train_size": [height, width], "batch": 1 + fast.cfg.replay_per_step,
                         "anchors_per_step": fast.cfg.anchor_per_step, "verify_every": fast.cfg.swap_every,
                         "scale_mode": fast.cfg.scale_mode, "scales": fast.cfg.num_scales,
                         "loss_kernels": fast.loss_kernels}}
