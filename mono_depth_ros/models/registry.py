"""Name -> network registry and strict weight loading."""
from __future__ import annotations

import functools
from typing import Any, Callable, Mapping

import torch

from .base import DepthNet
from .default_net import DefaultDepthNet
from .depth_anything import DepthAnythingV2
from .monodepth2 import Monodepth2ResNet18, Monodepth2ResNet50

__all__ = ["MODEL_NAMES", "MODEL_CHOICES", "build_model", "network_class", "size_multiple_of", "load_weights"]

_REGISTRY: dict[str, Callable[..., DepthNet]] = {
    DefaultDepthNet.arch: DefaultDepthNet,
    Monodepth2ResNet18.arch: Monodepth2ResNet18,
    Monodepth2ResNet50.arch: Monodepth2ResNet50,
    "depth_anything_v2_small": functools.partial(DepthAnythingV2, variant="small", metric=False),
    "depth_anything_v2_base": functools.partial(DepthAnythingV2, variant="base", metric=False),
    "depth_anything_v2_metric_small": functools.partial(DepthAnythingV2, variant="small", metric=True),
    "depth_anything_v2_metric_base": functools.partial(DepthAnythingV2, variant="base", metric=True),
}
#: Architectures accepted by :func:`build_model`.
MODEL_NAMES: tuple[str, ...] = tuple(_REGISTRY)
#: Values of the node's / tools' ``model`` option: the architectures plus ``monodepth2``
#: (a released folder; ResNet-18 or -50 is read from its encoder.pth).
MODEL_CHOICES: tuple[str, ...] = MODEL_NAMES + ("monodepth2",)


def network_class(name: str) -> type[DepthNet]:
    """The :class:`DepthNet` subclass behind a :data:`MODEL_CHOICES` name (``monodepth2``: ResNet-18's)."""
    entry = _REGISTRY.get("monodepth2_resnet18" if name == "monodepth2" else name)
    if entry is None:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_CHOICES)}")
    return entry.func if isinstance(entry, functools.partial) else entry


def size_multiple_of(name: str) -> int:
    """The class attribute ``size_multiple`` of a :data:`MODEL_CHOICES` name, without building it."""
    return int(network_class(name).size_multiple)


def build_model(name: str = "default", min_depth: float = 0.1, max_depth: float = 100.0,
                **options: Any) -> DepthNet:
    """Build a depth network by name (one of :data:`MODEL_NAMES`), randomly initialised.

    ``options`` are the architecture's own (``DepthNet.backend_options()``, e.g. ``head_max_depth``).
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    try:
        return _REGISTRY[name](min_depth=min_depth, max_depth=max_depth, **options)
    except TypeError as exc:
        raise ValueError(f"model {name!r}: bad options {sorted(options)}: {exc}") from exc


def _guess_arch(keys) -> str:
    keys = set(keys)
    for name in (DefaultDepthNet.arch, Monodepth2ResNet18.arch, Monodepth2ResNet50.arch):
        if keys == set(_REGISTRY[name]().state_dict().keys()):
            return name
    if any(k.startswith("pretrained.blocks.") for k in keys):
        return "Depth Anything V2 (official layout)"
    if any(k.startswith("backbone.encoder.layer.") for k in keys):
        return "Depth Anything (transformers layout)"
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
