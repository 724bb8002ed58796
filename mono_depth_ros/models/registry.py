"""Name -> network registry and strict weight loading."""
from __future__ import annotations

from typing import Mapping

import torch

from .base import DepthNet
from .default_net import DefaultDepthNet
from .monodepth2 import Monodepth2ResNet18

__all__ = ["MODEL_NAMES", "build_model", "load_weights"]

_REGISTRY: dict[str, type[DepthNet]] = {
    DefaultDepthNet.arch: DefaultDepthNet,
    Monodepth2ResNet18.arch: Monodepth2ResNet18,
}
#: Architectures accepted by :func:`build_model`.
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)


def build_model(name: str = "default", min_depth: float = 0.1, max_depth: float = 100.0) -> DepthNet:
    """Build a depth network by name (one of :data:`MODEL_NAMES`), randomly initialised."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    return _REGISTRY[name](min_depth=min_depth, max_depth=max_depth)


def _guess_arch(keys) -> str:
    keys = set(keys)
    for name, cls in _REGISTRY.items():
        if keys == set(cls().state_dict().keys()):
            return name
    if any(k.startswith("encoder.layer") for k in keys) or any(k.startswith("decoder.") for k in keys):
        return "monodepth2-like"
    return "unknown"


def load_weights(model: DepthNet, state_dict: Mapping[str, torch.Tensor], source: str = "state dict") -> None:
    """Load ``state_dict`` into ``model`` strictly, with a clear error on any mismatch.

    Raises:
        ValueError: names the source, the model's architecture, what the keys
            look like, and the first missing / unexpected / mis-shaped keys.
    """
    if not isinstance(state_dict, Mapping):
        raise ValueError(f"{source}: expected a state dict (mapping), got {type(state_dict).__name__}")
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    bad_shape = [f"{k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}" for k in own
                 if k in state_dict and isinstance(state_dict[k], torch.Tensor)
                 and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    not_tensor = [k for k in own if k in state_dict and not isinstance(state_dict[k], torch.Tensor)]
    if missing or unexpected or bad_shape or not_tensor:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected (e.g. {unexpected[:3]})")
        if bad_shape:
            parts.append(f"{len(bad_shape)} with wrong shape (e.g. {bad_shape[:3]})")
        if not_tensor:
            parts.append(f"{len(not_tensor)} not tensors (e.g. {not_tensor[:3]})")
        raise ValueError(
            f"{source}: weights do not fit architecture {model.arch!r} "
            f"(they look like {_guess_arch(state_dict.keys())!r}): " + "; ".join(parts))
    own_dtype = {k: v.dtype for k, v in own.items()}
    converted = {k: (v.to(own_dtype[k]) if v.is_floating_point() else v) for k, v in state_dict.items()}
    model.load_state_dict(converted, strict=True)
