"""Source-domain anchor images for adaptation (see AdaptationEngine._prepare_anchors).

``synthetic_A``: frames of a domain-A drive rendered by the package's own generator (the
domain the shipped weights were trained on). A folder: the user's own source-domain images
(png/jpg), e.g. frames of the data their checkpoint was trained on. ``""``: no anchor.
``auto`` (the default): ``synthetic_A`` for the shipped weights, none for a user's own
checkpoint (the synthetic domain would pull it away from theirs): :func:`resolve_anchor`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["load_anchor_images", "resolve_anchor", "ANCHOR_CHOICES"]

ANCHOR_CHOICES = ("auto", "synthetic_A", "none", "<folder of images>")


def resolve_anchor(spec: str, checkpoint: str) -> tuple[str, str]:
    """(anchor spec to load, why) for the anchor setting ``spec`` and the starting ``checkpoint``.

    ``auto``: ``synthetic_A`` when the start is the shipped weights (``checkpoint`` empty or the
    shipped file), else ``none``. Any other spec is kept.
    """
    if spec != "auto":
        return spec, "as configured"
    from mono_depth_ros.checkpoint import shipped_checkpoint_path
    shipped = not checkpoint or Path(checkpoint).expanduser().resolve() == shipped_checkpoint_path()
    if shipped:
        return "synthetic_A", "auto: the shipped weights were trained on synthetic domain A"
    return "none", (f"auto: own checkpoint {checkpoint} -- the synthetic domain would pull it away from yours; "
                    "give a folder of your training images to anchor it")


def load_anchor_images(spec: str, max_images: int = 16, seed: int = 7) -> np.ndarray | None:
    """(N,H,W,3) uint8 RGB anchor images, or None. Raises ValueError naming a bad spec."""
    if spec in ("", "none"):
        return None
    if spec == "auto":
        raise ValueError("anchor 'auto' must be resolved first (resolve_anchor)")
    if spec == "synthetic_A":
        from mono_depth_ros.tools.synth import render_drive
        frames = list(render_drive("A", seed=seed, duration_s=max_images * 0.3, rate_hz=10.0 / 3.0))
        return np.stack([f.image for f in frames[:max_images]])
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise ValueError(f"anchor {spec!r}: not 'auto', 'synthetic_A', 'none' or a folder of images")
    import cv2
    files = sorted([p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg")])[:max_images]
    imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files]
    imgs = [cv2.cvtColor(i, cv2.COLOR_BGR2RGB) for i in imgs if i is not None]
    if not imgs:
        raise ValueError(f"anchor folder {folder} holds no readable png/jpg images")
    h, w = imgs[0].shape[:2]
    return np.stack([i if i.shape[:2] == (h, w) else cv2.resize(i, (w, h)) for i in imgs])
