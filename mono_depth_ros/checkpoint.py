"""Versioned, atomically written depth-network checkpoints.

A checkpoint is a ``torch.save``'d dict of plain types and tensors only, so it
loads with ``torch.load(weights_only=True)`` (no pickled code is ever run)::

    {
      "format_version": 1,
      "arch": "default",                  # models.MODEL_NAMES
      "input_size": [192, 640],           # (H, W) the weights were trained at
      "min_depth": 0.1, "max_depth": 100.0,
      "state_dict": {...},                # fp32 or fp16 tensors
      "training": {"steps": int, "frames_seen": int, "optimizer": {...} | absent},
      "created": "2026-01-01T00:00:00Z",
      "meta": {...},                      # free-form (command line, data, metrics)
      # optional (absent in older files):
      "backend_options": {...},           # DepthNet.backend_options(), e.g. DA-V2's head_max_depth
      "output_kind": "metric",            # models.OUTPUT_KINDS
      "canonical_camera": {"fx", "fy", "cx", "cy", "size": [H, W]},  # training camera (canonical.py)
    }

monodepth2's released ``encoder.pth`` + ``depth.pth`` import with
:func:`import_monodepth2`. :func:`load_model` opens any supported file: this format, a
monodepth2 folder, a Depth Anything V2 ``.pth`` (official layout) or a transformers
``DepthAnythingForDepthEstimation`` state dict / ``save_pretrained`` folder.
"""
from __future__ import annotations

import datetime as _dt
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .canonical import CanonicalCamera
from .models import DepthNet, build_model, load_weights
from .models.base import OUTPUT_KINDS
from .models.monodepth2 import MONODEPTH2_KITTI_FX, MONODEPTH2_KITTI_FY
from .models.released import load_monodepth2

__all__ = ["FORMAT_VERSION", "CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint",
           "import_monodepth2", "shipped_checkpoint_path", "load_model"]

FORMAT_VERSION = 1
_REQUIRED = ("format_version", "arch", "input_size", "min_depth", "max_depth", "state_dict")


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, foreign or incompatible."""


def shipped_checkpoint_path() -> Path:
    """Path of the packaged default-network weights (trained on synthetic domain A)."""
    return Path(__file__).resolve().parent / "weights" / "default_A.pt"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_checkpoint(path: str | os.PathLike, model: DepthNet, input_size: tuple[int, int],
                    optimizer: torch.optim.Optimizer | None = None, steps: int = 0, frames_seen: int = 0,
                    meta: dict[str, Any] | None = None, half: bool = False,
                    canonical_camera: CanonicalCamera | None = None) -> Path:
    """Write ``model`` atomically (temp file in the same dir, fsync, os.replace, fsync dir).

    Args:
        input_size: (H, W) the model was trained at.
        canonical_camera: the camera the weights were trained with (metric on other cameras
            through :mod:`mono_depth_ros.canonical`); None = unknown.
        optimizer: include its state for resuming (omitted from shipped weights).
        half: store floating-point tensors as fp16 (loaded back as fp32).
    Returns:
        the final path.
    """
    path = Path(path)
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    training: dict[str, Any] = {"steps": int(steps), "frames_seen": int(frames_seen)}
    if optimizer is not None:
        training["optimizer"] = optimizer.state_dict()
    ckpt = {
        "format_version": FORMAT_VERSION,
        "arch": model.arch,
        "input_size": [int(input_size[0]), int(input_size[1])],
        "min_depth": float(model.min_depth),
        "max_depth": float(model.max_depth),
        "state_dict": state,
        "training": training,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "meta": dict(meta or {}),
        "backend_options": dict(model.backend_options()),
        "output_kind": str(getattr(model, "output_kind", "metric")),
    }
    if canonical_camera is not None:
        ckpt["canonical_camera"] = canonical_camera.to_dict()
    directory = path.parent if str(path.parent) else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    # Serialise in memory first: torch's zip writer turns a failing write (full disk, file size
    # limit) into an opaque RuntimeError; a plain write raises OSError with errno and strerror.
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getbuffer())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(directory)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load and validate the raw checkpoint dict (``weights_only=True``).

    Raises:
        CheckpointError: missing, unreadable/truncated, foreign or newer-format file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt/foreign files
        raise CheckpointError(
            f"checkpoint {path}: cannot be read as a weights-only torch file "
            f"(truncated, corrupt, or not a checkpoint): {type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        ) from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, found {type(ckpt).__name__}")
    if "format_version" not in ckpt:
        hint = ""
        if any(str(k).startswith("encoder.") for k in ckpt) or any(str(k).startswith("decoder.") for k in ckpt):
            hint = " (it looks like a bare monodepth2 state dict: use import_monodepth2(encoder.pth, depth.pth))"
        raise CheckpointError(f"checkpoint {path}: not a mono_depth_ros checkpoint, no 'format_version'{hint}")
    version = ckpt["format_version"]
    if not isinstance(version, int) or version > FORMAT_VERSION or version < 1:
        raise CheckpointError(f"checkpoint {path}: unsupported format_version {version!r} "
                              f"(this code reads 1..{FORMAT_VERSION})")
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path}: missing entries {missing}")
    return ckpt


def load_checkpoint(path: str | os.PathLike) -> tuple[DepthNet, dict[str, Any]]:
    """Build the network stored in ``path`` (eval mode, fp32) and return (model, meta).

    ``meta`` holds everything but the state dict: arch, input_size, depth
    range, training state (with optimizer state if saved), created, and the
    free-form ``meta``.

    Raises:
        CheckpointError: see :func:`read_checkpoint`, plus unknown arch or weights
            that do not fit it.
    """
    ckpt = read_checkpoint(path)
    options = ckpt.get("backend_options") or {}
    if not isinstance(options, dict):
        raise CheckpointError(f"checkpoint {path}: backend_options must be a dict, got {type(options).__name__}")
    option_error = None
    try:
        model = build_model(ckpt["arch"], min_depth=float(ckpt["min_depth"]), max_depth=float(ckpt["max_depth"]),
                            **options)
    except ValueError as exc:
        if not options or "unknown model" in str(exc):
            raise CheckpointError(f"checkpoint {path}: {exc}") from exc
        # options of another architecture: report the weights' mismatch if there is one, else this
        option_error = exc
        model = build_model(ckpt["arch"], min_depth=float(ckpt["min_depth"]), max_depth=float(ckpt["max_depth"]))
    try:
        load_weights(model, ckpt["state_dict"], source=f"checkpoint {path}")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    if option_error is not None:
        raise CheckpointError(f"checkpoint {path}: {option_error}")
    model.eval()
    if ckpt.get("output_kind") in OUTPUT_KINDS:  # a saved relative network stays relative (H4)
        model.output_kind = ckpt["output_kind"]
    info = {k: v for k, v in ckpt.items() if k != "state_dict"}
    info["input_size"] = tuple(int(x) for x in ckpt["input_size"])
    info["output_kind"] = model.output_kind
    try:
        info["canonical_camera"] = (CanonicalCamera.from_dict(ckpt["canonical_camera"], f"checkpoint {path}")
                                    if ckpt.get("canonical_camera") is not None else None)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    return model, info


def _monodepth2_info(model: DepthNet, m2meta: dict, source: str) -> dict[str, Any]:
    """``load_checkpoint``-style info of a released monodepth2 model."""
    size = tuple(m2meta.get("input_size", (192, 640)))
    stereo = bool(m2meta.get("use_stereo", False))
    cam = None
    if stereo:  # trained on KITTI with monodepth2's normalised K (kitti_dataset.py): metric on that camera
        h, w = size
        cam = CanonicalCamera(MONODEPTH2_KITTI_FX * w, MONODEPTH2_KITTI_FY * h, 0.5 * w, 0.5 * h, (h, w))
    return {"arch": model.arch, "input_size": size, "min_depth": model.min_depth, "max_depth": model.max_depth,
            "training": {"steps": 0, "frames_seen": 0}, "output_kind": model.output_kind,
            "canonical_camera": cam,
            "meta": {"source": source, "use_stereo": stereo, "num_layers": m2meta.get("num_layers"),
                     "note": ("metric: stereo-trained, depth x STEREO_SCALE_FACTOR 5.4 (KITTI baseline)" if stereo
                              else "relative: monocular-trained, depth up to an unknown scale")}}


def import_monodepth2(encoder_path: str | os.PathLike, depth_path: str | os.PathLike,
                      min_depth: float = 0.1, max_depth: float = 100.0) -> tuple[DepthNet, dict[str, Any]]:
    """Import monodepth2's released ``encoder.pth`` + ``depth.pth`` (e.g. to re-save with
    :func:`save_checkpoint`). Returns (model, meta) like :func:`load_checkpoint`.

    ResNet-18 or -50 is read from the encoder's keys; ``use_stereo`` makes it metric (x5.4, its
    depth range widened accordingly, ``canonical_camera`` = monodepth2's KITTI intrinsics).

    Raises:
        CheckpointError: missing, unreadable or non-matching files.
    """
    for p in (encoder_path, depth_path):
        if not Path(p).is_file():
            raise CheckpointError(f"monodepth2 weights {p}: no such file")
    try:
        model, m2meta = load_monodepth2(encoder_path, depth_path, min_depth, max_depth)
    except Exception as exc:
        raise CheckpointError(f"monodepth2 weights {encoder_path} + {depth_path}: {exc}") from exc
    return model, _monodepth2_info(model, m2meta, "monodepth2")


#: Network input (H, W) used for Depth Anything V2 when none is configured: multiples of 14 with
#: the 10:3 aspect of 640x192 drives. The official demo uses 518 on the short side (slow on a CPU).
DA_DEFAULT_INPUT = (196, 644)
#: metric_depth's ``max_depth`` by training set, read from the official file names.
DA_METRIC_MAX_DEPTH = {"hypersim": 20.0, "vkitti": 80.0}


def _da_metric(model_name: str, path: Path) -> bool:
    return "metric" in model_name or "metric" in path.name.lower()


def _da_head_max_depth(path: Path, given: float | None) -> float:
    if given:
        return float(given)
    for key, v in DA_METRIC_MAX_DEPTH.items():
        if key in path.name.lower():
            return v
    return 20.0  # metric_depth/depth_anything_v2/dpt.py default


def _da_info(model: DepthNet, path: Path, layout: str) -> dict[str, Any]:
    return {"arch": model.arch, "input_size": DA_DEFAULT_INPUT, "min_depth": model.min_depth,
            "max_depth": model.max_depth, "training": {"steps": 0, "frames_seen": 0},
            "output_kind": model.output_kind, "canonical_camera": None,
            "meta": {"source": f"Depth Anything V2 ({layout})", "file": str(path),
                     "note": ("metric: sigmoid x max_depth head" if model.output_kind == "metric"
                              else "relative: affine-invariant disparity (scale and shift unknown)")}}


def _read_state(path: Path) -> Any:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path))
    return torch.load(path, map_location="cpu", weights_only=True)


def _load_da(state: dict, path: Path, model_name: str, min_depth: float, max_depth: float,
             head_max_depth: float | None, hf_config: dict | None = None) -> tuple[DepthNet, dict[str, Any]]:
    """Depth Anything V2 from an official (``pretrained.*``) or transformers (``backbone.*``) state dict."""
    from .models.depth_anything import DepthAnythingV2, hf_to_official, official_variant

    layout = "official .pth"
    pos = "official"
    if any(str(k).startswith("backbone.") for k in state):
        state = hf_to_official(state, source=str(path))
        layout, pos = "transformers", "transformers"
    variant = official_variant(state)
    if hf_config is not None:
        metric = hf_config.get("depth_estimation_type", "relative") == "metric"
        hmd = float(hf_config.get("max_depth") or 1.0) if metric else 20.0
        if "depth_estimation_type" not in hf_config:
            metric = _da_metric(model_name, path)
    else:
        metric = _da_metric(model_name, path)
        hmd = _da_head_max_depth(path, head_max_depth)
    model = DepthAnythingV2(min_depth, max_depth, variant=variant, metric=metric, head_max_depth=hmd,
                            pos_interpolation=pos)
    load_weights(model, state, source=str(path))
    model.eval()
    return model, _da_info(model, path, layout)


def load_model(model_name: str, checkpoint: str | os.PathLike, min_depth: float = 0.1, max_depth: float = 100.0,
               head_max_depth: float | None = None) -> tuple[DepthNet, dict[str, Any]]:
    """Open any supported weights file or folder; never downloads anything.

    * a mono_depth_ros checkpoint (``format_version``): :func:`load_checkpoint`;
    * a monodepth2 folder (``encoder.pth`` + ``depth.pth``; ResNet-18/50; ``use_stereo`` -> metric);
    * Depth Anything V2 Small/Base, official ``.pth`` (``pretrained.*`` + ``depth_head.*``):
      relative unless ``model_name`` or the file name says ``metric`` (then the head's max depth
      is ``head_max_depth``, else 20 for ``hypersim`` / 80 for ``vkitti`` in the file name, else 20);
    * transformers ``DepthAnythingForDepthEstimation``: a ``save_pretrained`` folder
      (``config.json`` + ``model.safetensors`` / ``pytorch_model.bin``; metric and max depth from
      the config) or a bare state dict (``.bin`` / ``.pth`` / ``.safetensors``).

    ``min_depth`` / ``max_depth`` are the output range for the imported formats (monodepth2's are
    widened by 5.4 for stereo weights); a package checkpoint keeps its own. Returns (model in eval
    mode, info) with ``arch``, ``input_size``, ``output_kind``, ``canonical_camera`` (or None),
    ``meta["source"]``.

    Raises:
        CheckpointError: naming the file and what does not fit.
    """
    from .models.released import load_monodepth2_folder

    path = Path(checkpoint).expanduser()
    if path.is_dir():
        if (path / "encoder.pth").is_file() or (path / "depth.pth").is_file():
            try:
                model, m2meta = load_monodepth2_folder(path, min_depth, max_depth)
            except ValueError as exc:
                raise CheckpointError(f"monodepth2 folder {path}: {exc}") from exc
            return model, _monodepth2_info(model, m2meta, f"monodepth2 folder {path}")
        if (path / "config.json").is_file():
            import json
            try:
                config = json.loads((path / "config.json").read_text())
            except ValueError as exc:
                raise CheckpointError(f"{path / 'config.json'}: not JSON: {exc}") from exc
            files = [path / n for n in ("model.safetensors", "pytorch_model.bin") if (path / n).is_file()]
            if not files:
                raise CheckpointError(f"transformers folder {path}: no model.safetensors or pytorch_model.bin "
                                      f"(sharded checkpoints are not supported)")
            if "DepthAnything" not in " ".join(config.get("architectures") or [config.get("model_type", "")]) \
                    and config.get("model_type") != "depth_anything":
                raise CheckpointError(f"transformers folder {path}: config.json describes "
                                      f"{config.get('architectures') or config.get('model_type')!r}, "
                                      f"not DepthAnythingForDepthEstimation")
            try:
                return _load_da(_read_state(files[0]), files[0], model_name, min_depth, max_depth,
                                head_max_depth, hf_config=config)
            except (ValueError, RuntimeError) as exc:
                raise CheckpointError(f"transformers folder {path}: {exc}") from exc
        raise CheckpointError(f"{path}: a folder, but neither a monodepth2 one (encoder.pth + depth.pth) nor a "
                              f"transformers save_pretrained one (config.json)")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file or folder")
    try:
        obj = _read_state(path)
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path}: cannot be read as a weights-only torch or safetensors file: "
                              f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
    if isinstance(obj, dict) and "format_version" in obj:
        return load_checkpoint(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path}: expected a dict, found {type(obj).__name__}")
    keys = [str(k) for k in obj]
    if any(k.startswith(("pretrained.", "backbone.embeddings")) for k in keys):
        try:
            return _load_da(obj, path, model_name, min_depth, max_depth, head_max_depth)
        except (ValueError, RuntimeError) as exc:
            msg = str(exc)
            raise CheckpointError(msg if str(path) in msg else f"Depth Anything V2 weights {path}: {msg}") from exc
    if any(k.startswith(("encoder.", "decoder.")) for k in keys):
        raise CheckpointError(f"checkpoint {path}: a bare monodepth2 state dict; pass the folder holding "
                              f"encoder.pth and depth.pth instead")
    raise CheckpointError(f"checkpoint {path}: not a mono_depth_ros checkpoint (no 'format_version'), nor "
                          f"monodepth2 / Depth Anything V2 weights (keys like {keys[:3]})")
