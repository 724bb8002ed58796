"""Depth inference on one frame (no rclpy): resize, run the network, return metric depth.

The node and the offline tools both call :class:`DepthPredictor`. Serving
weights can be swapped atomically from another thread (online adaptation)
with :meth:`DepthPredictor.swap_state`; a swap waits at most for the copy of
one state dict, never for a training step.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from mono_depth_ros.conventions import scale_intrinsics

__all__ = ["Prediction", "DepthPredictor", "resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """'cpu' | 'cuda' | 'auto' -> torch.device; 'cuda' without a GPU is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch sees no CUDA GPU (use 'auto' or 'cpu')")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"device must be cpu, cuda or auto, got {name!r}")
    return torch.device(name)


@dataclass(frozen=True)
class Prediction:
    """One frame's output at network resolution.

    depth: (h,w) float32 metres; rgb: (h,w,3) uint8 (the resized input);
    K: (3,3) intrinsics of ``depth`` (input K scaled to the network size).
    """

    depth: np.ndarray
    rgb: np.ndarray
    K: np.ndarray


class DepthPredictor:
    """Holds the serving network; ``predict`` is safe to call from one thread while another swaps weights."""

    def __init__(self, model: torch.nn.Module, input_size: tuple[int, int], device: str = "cpu",
                 num_threads: int = 0):
        h, w = input_size
        if h % 32 or w % 32:
            raise ValueError(f"input size must be multiples of 32, got {w}x{h}")
        self.input_size = (h, w)
        self.device = resolve_device(device)
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.model = model.to(self.device).eval()
        self._lock = threading.Lock()
        self.version = 0
        self._traced = None
        self.backend = "eager"

    @classmethod
    def from_config(cls, model_name: str, checkpoint: str, input_size: tuple[int, int] | None, min_depth: float,
                    max_depth: float, device: str = "cpu", num_threads: int = 0,
                    state: tuple | None = None) -> tuple["DepthPredictor", str]:
        """Build from a checkpoint path ('' = shipped weights). Returns (predictor, description of weights).

        ``input_size`` None = the size the checkpoint was trained at (640x192 for a random net): a
        network run at another resolution sees the scene at another scale and its metric depth is off.
        ``state`` = (model, meta, description) already loaded (e.g. a resumed adapted checkpoint).
        """
        from mono_depth_ros import checkpoint as ckpt
        from mono_depth_ros.models import build_model

        path = Path(checkpoint) if checkpoint else ckpt.shipped_checkpoint_path()
        meta: dict = {}
        if state is not None:
            model, meta, desc = state
        elif checkpoint or path.exists():
            model, meta = ckpt.load_checkpoint(path)
            desc = f"{path}"
        else:
            model = build_model(model_name, min_depth=min_depth, max_depth=max_depth)
            desc = "random initialisation (no checkpoint given and no shipped weights found)"
            log.warning("no shipped weights at %s: the network is randomly initialised", path)
        if meta and meta.get("arch") != model_name:
            log.warning("checkpoint %s holds arch %r; parameter model=%r is ignored", desc, meta.get("arch"),
                        model_name)
        size = tuple(input_size) if input_size else tuple(meta.get("input_size", (192, 640)))
        return cls(model, size, device, num_threads), desc

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """(H,W,3) uint8 -> resized (h,w,3) uint8 and (1,3,h,w) float tensor in [0,1]."""
        h, w = self.input_size
        small = rgb if rgb.shape[:2] == (h, w) else cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
        if not small.flags.writeable:  # views of message buffers are read-only; torch wants writable memory
            small = small.copy()
        x = torch.from_numpy(small).to(self.device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
        return small, x

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray, K: np.ndarray) -> Prediction:
        """(H,W,3) uint8 RGB + (3,3) K of that image -> :class:`Prediction` at network size."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected (H,W,3) RGB, got {rgb.shape}")
        small, x = self.preprocess(rgb)
        with self._lock:
            depth = self._forward(x)
        d = depth[0, 0].float().cpu().numpy()
        H, W = rgb.shape[:2]
        h, w = self.input_size
        return Prediction(d, small, scale_intrinsics(K, w / W, h / H))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1,3,h,w) -> (1,1,h,w). A traced module runs the whole network as one call that
        releases the GIL, so Python work in other threads (ROS callbacks, the adapter) cannot
        stretch inference; it shares the parameters, so weight swaps reach it."""
        if self._traced is None and self.backend == "eager":
            try:
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    self._traced = torch.jit.trace(self.model, x, check_trace=False)
                self.backend = "torchscript"
            except Exception as exc:  # any model torch cannot trace still runs eagerly
                log.warning("tracing the network failed (%s); running it eagerly", exc)
                self.backend = "eager-only"
        return self._traced(x) if self._traced is not None else self.model(x)

    def swap_state(self, state_dict: dict) -> None:
        """Atomically replace the serving weights (bounded: one state-dict copy under the lock)."""
        with self._lock:
            self.model.load_state_dict(state_dict)
            self.version += 1
