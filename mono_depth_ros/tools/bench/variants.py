"""Ways of running the serving network, timed against each other (the "hot path" trials of issue #8).

Each variant builds a callable ``(1,3,H,W) -> (1,1,H,W)`` from the same weights; outputs are
compared with eager fp32 so a faster variant that changes the depth is visible.
"""
from __future__ import annotations

import warnings
from typing import Callable

import torch

from mono_depth_ros.models.base import DepthOutput

from .core import Timing, time_fn

__all__ = ["VARIANTS", "run_variant"]


def _eager_no_grad(net, x):
    def f():
        with torch.no_grad():
            return net(x)
    return f


def _eager_inference_mode(net, x):
    def f():
        with torch.inference_mode():
            return net(x)
    return f


def _channels_last(net, x):
    net_cl = net.to(memory_format=torch.channels_last)
    xc = x.contiguous(memory_format=torch.channels_last)

    def f():
        with torch.inference_mode():
            return net_cl(xc)
    return f


def _jit_trace(net, x):
    """What the node serves with (``DepthPredictor``)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, x, check_trace=False)

    def f():
        with torch.inference_mode():
            return traced(x)
    return f


def _jit_trace_frozen(net, x):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(net, x, check_trace=False)))

    def f():
        with torch.inference_mode():
            return traced(x)
    return f


def _compile(net, x):
    compiled = torch.compile(net, mode="max-autotune-no-cudagraphs", dynamic=False)

    def f():
        with torch.inference_mode():
            return compiled(x)
    return f


def _onnxruntime(net, x):
    """What the node serves with (``inference_backend: auto``), as configured there."""
    from mono_depth_ros.inference import OnnxRunner

    runner = OnnxRunner(net.net, x, torch.get_num_threads())
    return lambda: runner(x)


#: name -> builder(DepthOutput of the net in eval mode, example input) -> callable
VARIANTS: dict[str, Callable] = {
    "eager, no_grad": _eager_no_grad,
    "eager, inference_mode": _eager_inference_mode,
    "eager, channels_last": _channels_last,
    "torch.jit.trace (node fallback)": _jit_trace,
    "jit.trace + freeze + optimize_for_inference": _jit_trace_frozen,
    "torch.compile (inductor)": _compile,
    "ONNX Runtime (node default)": _onnxruntime,
}


def run_variant(name: str, build_net: Callable[[], torch.nn.Module], x: torch.Tensor,
                runs: int) -> tuple[Timing | None, float, str]:
    """Time one variant on a fresh copy of the network.

    Returns (timing or None if it failed, max |depth - eager depth| in metres, error text or '').
    """
    net = DepthOutput(build_net().eval())  # predict_depth as forward: what tracing and compiling need
    with torch.inference_mode():
        ref = net(x).clone()
    try:
        f = VARIANTS[name](net, x)
        out = f()
        diff = float((out.float() - ref).abs().max())
        return time_fn(f, runs, warmup=2), diff, ""
    except Exception as exc:  # a variant this torch/ORT build cannot run is reported, not fatal
        return None, float("nan"), f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
