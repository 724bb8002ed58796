"""Depth inference on one frame (no rclpy): resize, run the network, return metric depth.

The node and the offline tools (``mono-depth evaluate``, the demo) all call
:meth:`DepthPredictor.predict`: one inference path, so the tools score exactly what the
node publishes (depth at network resolution). Serving
weights can be swapped atomically from another thread (online adaptation)
with :meth:`DepthPredictor.swap_state`; a swap waits at most for the copy of
one state dict, never for a training step.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mono_depth_ros.canonical import CanonicalCamera, run_canonical
from mono_depth_ros.conventions import scale_intrinsics
from mono_depth_ros.models.base import DepthNet, DepthOutput
from mono_depth_ros.preprocess import resize_rgb, to_tensor

__all__ = ["Prediction", "DepthPredictor", "OnnxRunner", "BACKENDS", "resolve_device", "default_input_size",
           "node_predictor"]

#: Inference backends: ``auto`` = onnxruntime when it is installed and exports the network, else
#: torchscript. ONNX Runtime ran the default net 1.5-2x faster than torchscript on a 2-core CPU
#: (``mono-depth bench``, BENCHMARKS.md).
BACKENDS = ("auto", "onnxruntime", "torchscript", "eager")

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


def default_input_size(model: DepthNet) -> tuple[int, int]:
    """(H, W) a network runs at when its weights record no training size: 640x192 rounded to its
    ``size_multiple`` (644x196 for Depth Anything V2's 14)."""
    m = type(model).size_multiple
    return (-(-192 // m) * m, -(-640 // m) * m)


class DepthPredictor:
    """Holds the serving network; ``predict`` is safe to call from one thread while another swaps weights."""

    def __init__(self, model: DepthNet, input_size: tuple[int, int], device: str = "cpu",
                 num_threads: int = 0, backend: str = "auto", canonical: CanonicalCamera | None = None):
        """``canonical``: the camera the weights were trained with; when given, each frame's depth
        is converted to the real camera (:func:`mono_depth_ros.canonical.run_canonical`) with the
        K passed to :meth:`predict`."""
        h, w = input_size
        mult = type(model).size_multiple
        if h % mult or w % mult or h <= 0 or w <= 0:
            raise ValueError(f"input size must be positive multiples of {mult} for {model.arch} "
                             f"network, got {w}x{h}")
        if backend not in BACKENDS:
            raise ValueError(f"inference backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.input_size = (h, w)
        self.device = resolve_device(device)
        if num_threads > 0:
            torch.set_num_threads(num_threads)
        self.num_threads = num_threads if num_threads > 0 else torch.get_num_threads()
        self.model = model.to(self.device).eval()
        self._lock = threading.Lock()
        self.version = 0
        self._runner = None          # built on the first frame (needs an example input)
        self.requested_backend = backend
        self.backend = "not built yet"
        self.canonical = canonical
        self.output_kind = str(model.output_kind)

    @classmethod
    def from_config(cls, model_name: str, checkpoint: str, input_size: tuple[int, int] | None, min_depth: float,
                    max_depth: float, device: str = "cpu", num_threads: int = 0,
                    state: tuple | None = None, backend: str = "auto",
                    canonical_camera: bool = True) -> tuple["DepthPredictor", str]:
        """Build from a checkpoint path ('' = shipped weights). Returns (predictor, description of weights).

        ``checkpoint`` may be any file or folder :func:`mono_depth_ros.checkpoint.load_model` opens
        (this package's checkpoints, monodepth2 folders, Depth Anything V2 official or transformers
        weights); ``model_name`` only decides what the file cannot tell (Depth Anything V2 relative
        or ``..._metric_...``) and the architecture of a random network.
        ``input_size`` None = the size the checkpoint was trained at (640x192 for a random net): a
        network run at another resolution sees the scene at another scale and its metric depth is off.
        ``state`` = (model, meta, description) already loaded (e.g. a resumed adapted checkpoint).
        ``canonical_camera``: convert metric depth from the weights' training camera to the real one
        (when the checkpoint records it).
        """
        from mono_depth_ros import checkpoint as ckpt
        from mono_depth_ros.models import build_model

        path = Path(checkpoint) if checkpoint else ckpt.shipped_checkpoint_path()
        meta: dict = {}
        if state is not None:
            model, meta, desc = state
        elif checkpoint or path.exists():
            model, meta = ckpt.load_model(model_name, path, min_depth=min_depth, max_depth=max_depth)
            desc = f"{path}"
        else:
            model = build_model("monodepth2_resnet18" if model_name == "monodepth2" else model_name,
                                min_depth=min_depth, max_depth=max_depth)
            desc = "random initialisation (no checkpoint given and no shipped weights found)"
            log.warning("no shipped weights at %s: the network is randomly initialised", path)
        if meta and meta.get("arch") != model_name and not (model_name == "monodepth2"
                                                            and str(meta.get("arch")).startswith("monodepth2")):
            log.warning("checkpoint %s holds arch %r; parameter model=%r is ignored", desc, meta.get("arch"),
                        model_name)
        if hasattr(model, "freeze_backbone"):
            # Online adaptation on a CPU trains the DPT head only (2.7 M of DA-V2 Small's 24.8 M
            # parameters, a step 2.5x faster: docs/backends.md); inference is unaffected.
            model.freeze_backbone(True)
        kind = model.output_kind
        if kind != "metric":
            log.warning("network %s outputs %s, not metres: its depth has an unknown scale%s until it is "
                        "scaled online", desc, kind, " and shift" if "affine" in kind else "")
        cam = meta.get("canonical_camera") if canonical_camera and kind == "metric" else None
        if isinstance(cam, dict):
            cam = CanonicalCamera.from_dict(cam, desc)
        size = tuple(input_size) if input_size else tuple(meta.get("input_size", default_input_size(model)))
        return cls(model, size, device, num_threads, backend, canonical=cam), desc

    def preprocess(self, rgb: np.ndarray) -> tuple[np.ndarray, torch.Tensor]:
        """(H,W,3) uint8 -> resized (h,w,3) uint8 and (1,3,h,w) float tensor in [0,1]."""
        small = resize_rgb(rgb, self.input_size)
        return small, to_tensor(small, self.device)

    @torch.inference_mode()
    def predict(self, rgb: np.ndarray, K: np.ndarray) -> Prediction:
        """(H,W,3) uint8 RGB + (3,3) K of that image -> :class:`Prediction` at network size."""
        if rgb.ndim != 3 or rgb.shape[2] != 3:
            raise ValueError(f"expected (H,W,3) RGB, got {rgb.shape}")
        small, x = self.preprocess(rgb)
        H, W = rgb.shape[:2]
        h, w = self.input_size
        K_net = scale_intrinsics(K, w / W, h / H)
        with self._lock:
            if self.canonical is not None:
                depth = run_canonical(self._forward, x, K_net, self.canonical)
            else:
                depth = self._forward(x)
        d = depth[0, 0].float().cpu().numpy()
        return Prediction(d, small, K_net)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """(1,3,h,w) -> (1,1,h,w) with the backend chosen on the first frame (see :data:`BACKENDS`)."""
        if self._runner is None:
            self._runner, self.backend = self._build_runner(x)
        return self._runner(x)

    def _build_runner(self, x: torch.Tensor):
        """The fastest backend that works here, in the order auto tries them: onnxruntime, torchscript, eager.

        Both compiled backends run the whole network as one native call that releases the GIL, so
        Python work in other threads (ROS callbacks, the adapter) cannot stretch inference.
        """
        order = {"auto": ["onnxruntime", "torchscript"], "onnxruntime": ["onnxruntime"],
                 "torchscript": ["torchscript"], "eager": []}[self.requested_backend]
        if self.device.type != "cpu" and "onnxruntime" in order and self.requested_backend == "auto":
            order.remove("onnxruntime")  # the CPU execution provider only
        for name in order:
            try:
                if name == "onnxruntime":
                    return OnnxRunner(self.model, x, self.num_threads), name
                import warnings
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", torch.jit.TracerWarning)
                    traced = torch.jit.trace(DepthOutput(self.model), x, check_trace=False)  # shares the parameters
                return traced, name
            except Exception as exc:  # a model or install a backend cannot handle still runs on the next one
                log.warning("inference backend %s failed (%s: %s); trying the next one", name, type(exc).__name__,
                            str(exc).splitlines()[0][:200] if str(exc) else "")
        return self.model.predict_depth, "eager"

    def swap_state(self, state_dict: dict) -> None:
        """Atomically replace the serving weights.

        Torch backends share the module's parameters: a copy of one state dict under the lock.
        ONNX Runtime bakes weights into its session: a new session is built first, in the
        caller's thread (the adapter's; ~20 ms for the default net), and then swapped in.
        """
        runner = self._runner
        fresh = None
        if isinstance(runner, OnnxRunner):
            if runner.can_take(state_dict):
                fresh = runner.with_weights(state_dict)
            else:  # an entry the exporter merged with another changed: export again (rare: first swaps only)
                import copy
                model = copy.deepcopy(self.model).cpu()
                model.load_state_dict(state_dict)
                fresh = OnnxRunner(model.eval(), torch.zeros(runner._example_shape), runner.num_threads)
        with self._lock:
            self.model.load_state_dict(state_dict)
            if fresh is not None:
                self._runner = fresh
            self.version += 1


def node_predictor(cfg, state: tuple | None = None, size: tuple[int, int] | None = None
                   ) -> tuple[DepthPredictor, str]:
    """The node's predictor from its settings (``model``, ``checkpoint``, ``input_width``/``input_height``,
    ``min_depth``, ``max_depth``, ``device``, ``num_threads``, ``adapt``, ``inference_backend``).

    ``state`` = (model, meta, description) of resumed adapted weights, run at ``size`` (the size the
    configured weights chose). Returns (predictor, description of the weights).
    """
    if size is None and cfg.input_width and cfg.input_height:
        size = (cfg.input_height, cfg.input_width)
    # The adaptation engine trains the raw network on this camera's frames, so the canonical camera
    # conversion (for weights trained on another camera) applies only without it. (Resumed weights
    # keep what their own metadata says, as before.)
    return DepthPredictor.from_config(
        cfg.model, "" if state is not None else cfg.checkpoint, size, cfg.min_depth, cfg.max_depth, cfg.device,
        cfg.num_threads or (1 if cfg.adapt else 0), state=state, backend=cfg.inference_backend,
        canonical_camera=True if state is not None else not cfg.adapt)


class OnnxRunner:
    """The serving network as an ONNX Runtime session (CPU execution provider).

    The graph is exported once (no constant folding, so every initializer keeps its state-dict
    name); :meth:`with_weights` writes new weights into that graph and opens a new session, which
    is how adapted weights reach the server. Callable like the module: (1,3,h,w) -> (1,1,h,w).
    """

    def __init__(self, model: DepthNet, example: torch.Tensor, num_threads: int):
        import io
        import warnings

        import onnx
        import onnxruntime as ort

        self._ort = ort
        self.num_threads = max(1, int(num_threads))
        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(DepthOutput(model), (example.cpu(),), buf, input_names=["image"], output_names=["depth"],
                              dynamo=False, opset_version=17, do_constant_folding=False)
        self._graph = onnx.load_from_string(buf.getvalue())
        self.session = self._open(buf.getvalue())
        # The exporter merges initializers with equal values (e.g. freshly initialised norms, all ones)
        # and drops unused ones: such state-dict entries have no initializer of their own to rewrite.
        names = {_state_key(i.name) for i in self._graph.graph.initializer}
        unmapped = [k for k, v in model.state_dict().items() if k not in names and v.is_floating_point()]
        # Of those, only entries the served output depends on matter: the coarser scales' heads, which
        # adaptation trains, are not in the graph at all, and must not force a re-export at every swap
        # (~250 ms on the swapping thread, each time).
        used = _entries_affecting_output(model, example, unmapped)
        self._unmapped = {k: v.detach().cpu().clone() for k, v in model.state_dict().items() if k in used}
        self._example_shape = tuple(example.shape)

    def can_take(self, state_dict: dict) -> bool:
        """Whether :meth:`with_weights` reproduces ``state_dict`` exactly (no merged entry changed)."""
        return all(torch.equal(state_dict[k].detach().cpu(), v) for k, v in self._unmapped.items() if k in state_dict)

    def _open(self, model_bytes: bytes):
        ort = self._ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.num_threads
        so.inter_op_num_threads = 1
        # Pool threads must not spin between frames: the adaptation thread needs that core.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        return ort.InferenceSession(model_bytes, so, providers=["CPUExecutionProvider"])

    def with_weights(self, state_dict: dict) -> "OnnxRunner":
        """A new runner with ``state_dict``'s weights (the graph is shared, not re-exported)."""
        from onnx import helper, numpy_helper

        graph = type(self._graph)()
        graph.CopyFrom(self._graph)
        for init in graph.graph.initializer:
            v = state_dict.get(_state_key(init.name))
            if v is not None:
                dtype = helper.tensor_dtype_to_np_dtype(init.data_type)
                init.CopyFrom(numpy_helper.from_array(v.detach().cpu().numpy().astype(dtype, copy=False), init.name))
        new = OnnxRunner.__new__(OnnxRunner)
        new._ort, new.num_threads, new._graph = self._ort, self.num_threads, graph
        new._unmapped, new._example_shape = self._unmapped, self._example_shape
        new.session = new._open(graph.SerializeToString())
        return new

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        image = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        return torch.from_numpy(self.session.run(None, {"image": image})[0])


@torch.no_grad()
def _entries_affecting_output(model, example: torch.Tensor, keys: list[str]) -> set[str]:
    """The state-dict entries among ``keys`` that change the served depth (each one shifted by 1 in turn)."""
    if not keys:
        return set()
    import copy
    probe = DepthOutput(copy.deepcopy(model).cpu().eval())
    x = example.cpu()
    base = probe(x)
    state = probe.net.state_dict()
    used = set()
    for k in keys:
        t = state[k]
        t.add_(1.0)
        if not torch.equal(probe(x), base):
            used.add(k)
        t.sub_(1.0)
    return used


def _state_key(initializer: str) -> str:
    """ONNX initializer name of an exported :class:`DepthOutput` -> the network's state-dict key."""
    return initializer[len(DepthOutput.PREFIX):] if initializer.startswith(DepthOutput.PREFIX) else initializer
