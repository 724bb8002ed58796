"""Loaders of released monodepth2 weight files (``encoder.pth`` + ``depth.pth``).

They live apart from the network definitions (:mod:`.monodepth2`) because they need the
registry's strict :func:`~.registry.load_weights`, and the registry imports the networks:
models -> registry -> released, no cycle.
"""
from __future__ import annotations

import os

import torch

from .monodepth2 import ENCODER_META_KEYS, Monodepth2ResNet18, Monodepth2ResNet50
from .registry import load_weights

__all__ = ["load_monodepth2", "load_monodepth2_folder"]


def _load_state(path: str | os.PathLike, what: str) -> dict:
    try:
        obj = torch.load(os.fspath(path), map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file (monodepth2 {what})") from None
    except Exception as exc:
        raise ValueError(f"{path}: cannot be read as a weights-only torch file (monodepth2 {what}): "
                         f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from exc
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a state dict (monodepth2 {what}), got {type(obj).__name__}")
    return obj


def load_monodepth2(encoder_path: str | os.PathLike, depth_path: str | os.PathLike,
                    min_depth: float = 0.1, max_depth: float = 100.0
                    ) -> tuple[Monodepth2ResNet18, dict]:
    """Build a monodepth2 network (ResNet-18 or -50, from the encoder's keys) from its released files.

    Files are read with ``torch.load(weights_only=True)``. ``encoder.pth`` also
    holds ``height``, ``width`` and ``use_stereo`` (monodepth2 trainer.save_model); they are
    returned in the meta dict (``input_size`` = (height, width)), not loaded as weights. A
    stereo-trained encoder (``use_stereo`` True) gives metric depth (:data:`STEREO_SCALE_FACTOR`);
    ``min_depth``/``max_depth`` are monodepth2's own (0.1, 100) and are widened by the factor.

    Returns:
        (model in eval mode, meta dict with ``input_size``, ``use_stereo``, ``num_layers``).
    Raises:
        ValueError: a file is unreadable, or its keys or shapes do not match monodepth2's layout.
    """
    enc = _load_state(encoder_path, "encoder.pth")
    dec = _load_state(depth_path, "depth.pth")
    meta = {k: enc[k] for k in ENCODER_META_KEYS if k in enc}
    state = {k: v for k, v in enc.items() if k not in ENCODER_META_KEYS}
    state.update(dec)
    cls = Monodepth2ResNet50 if "encoder.layer1.0.conv3.weight" in state else Monodepth2ResNet18
    stereo = bool(meta.get("use_stereo", False))
    model = cls(min_depth=min_depth, max_depth=max_depth, stereo=stereo)
    # Files written before PyTorch 0.4.1 lack BatchNorm's num_batches_tracked (unused in eval): zero it.
    for k in model.state_dict():
        if k.endswith("num_batches_tracked") and k not in state and k.replace("num_batches_tracked",
                                                                                "running_mean") in state:
            state[k] = torch.tensor(0)
    load_weights(model, state, source=f"{encoder_path} + {depth_path}")
    if "height" in meta and "width" in meta:
        meta["input_size"] = (int(meta["height"]), int(meta["width"]))
    meta["use_stereo"] = stereo
    meta["num_layers"] = cls.num_layers
    model.eval()
    return model, meta


def load_monodepth2_folder(folder: str | os.PathLike, min_depth: float = 0.1, max_depth: float = 100.0
                           ) -> tuple[Monodepth2ResNet18, dict]:
    """:func:`load_monodepth2` on a released folder holding ``encoder.pth`` and ``depth.pth``."""
    folder = os.fspath(folder)
    missing = [n for n in ("encoder.pth", "depth.pth") if not os.path.isfile(os.path.join(folder, n))]
    if missing:
        raise ValueError(f"{folder}: not a monodepth2 weights folder, missing {', '.join(missing)} "
                         f"(expected encoder.pth + depth.pth as in mono_640x192/)")
    return load_monodepth2(os.path.join(folder, "encoder.pth"), os.path.join(folder, "depth.pth"),
                           min_depth, max_depth)
