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
    }

monodepth2's released ``encoder.pth`` + ``depth.pth`` import with
:func:`import_monodepth2`.
"""
from __future__ import annotations

import datetime as _dt
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .models import DepthNet, build_model, load_weights
from .models.monodepth2 import load_monodepth2

__all__ = ["FORMAT_VERSION", "CheckpointError", "save_checkpoint", "load_checkpoint", "read_checkpoint",
           "import_monodepth2", "shipped_checkpoint_path"]

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
                    meta: dict[str, Any] | None = None, half: bool = False) -> Path:
    """Write ``model`` atomically (temp file in the same dir, fsync, os.replace, fsync dir).

    Args:
        input_size: (H, W) the model was trained at.
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
    }
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
    try:
        model = build_model(ckpt["arch"], min_depth=float(ckpt["min_depth"]), max_depth=float(ckpt["max_depth"]))
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    try:
        load_weights(model, ckpt["state_dict"], source=f"checkpoint {path}")
    except ValueError as exc:
        raise CheckpointError(str(exc)) from exc
    model.eval()
    info = {k: v for k, v in ckpt.items() if k != "state_dict"}
    info["input_size"] = tuple(int(x) for x in ckpt["input_size"])
    return model, info


def import_monodepth2(encoder_path: str | os.PathLike, depth_path: str | os.PathLike,
                      min_depth: float = 0.1, max_depth: float = 100.0) -> tuple[DepthNet, dict[str, Any]]:
    """Import monodepth2's released ``encoder.pth`` + ``depth.pth`` (e.g. to re-save with
    :func:`save_checkpoint`). Returns (model, meta) like :func:`load_checkpoint`.

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
    size = m2meta.get("input_size", (192, 640))
    meta = {"arch": model.arch, "input_size": tuple(size), "min_depth": min_depth, "max_depth": max_depth,
            "training": {"steps": 0, "frames_seen": 0},
            "meta": {"source": "monodepth2", "use_stereo": bool(m2meta.get("use_stereo", False))}}
    return model, meta
