"""Source-domain anchor images for adaptation (see AdaptationEngine._anchor_term).

``synthetic_A``: 16 frames of a domain-A drive (the domain the shipped weights were trained on),
shipped as lossless images beside the weights (``weights/anchors_A/``; nothing is rendered at
start, :mod:`mono_depth_ros.tools.anchors` writes them). A folder: the user's own source-domain images
(png/jpg), e.g. frames of the data their checkpoint was trained on. ``""``: no anchor.
``auto`` (the default): ``synthetic_A`` for the shipped weights, none for a user's own
checkpoint (the synthetic domain would pull it away from theirs): :func:`resolve_anchor`.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mono_depth_ros.preprocess import resize_rgb

__all__ = ["load_anchor_images", "resolve_anchor", "ANCHOR_CHOICES", "SHIPPED_ANCHOR_DIR"]

ANCHOR_CHOICES = ("auto", "synthetic_A", "none", "<folder of images>")

#: The ``synthetic_A`` anchor images, shipped beside the weights.
SHIPPED_ANCHOR_DIR = Path(__file__).resolve().parent.parent / "weights" / "anchors_A"
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


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


def load_anchor_images(spec: str, max_images: int = 16) -> np.ndarray | None:
    """(N,H,W,3) uint8 RGB anchor images (N <= ``max_images``), or None. Raises ValueError naming a bad spec.

    ``synthetic_A`` reads the shipped files (:data:`SHIPPED_ANCHOR_DIR`); a folder: its png/jpg/webp
    images in name order, resized to the first one's size where they differ.
    """
    if spec in ("", "none"):
        return None
    if spec == "auto":
        raise ValueError("anchor 'auto' must be resolved first (resolve_anchor)")
    if spec == "synthetic_A":
        if not SHIPPED_ANCHOR_DIR.is_dir():
            raise ValueError(f"anchor 'synthetic_A': the shipped images are missing ({SHIPPED_ANCHOR_DIR}); "
                             "reinstall the package or regenerate them: python -m mono_depth_ros.tools.anchors")
        return _read_folder(SHIPPED_ANCHOR_DIR, max_images)
    folder = Path(spec).expanduser()
    if not folder.is_dir():
        raise ValueError(f"anchor {spec!r}: not 'auto', 'synthetic_A', 'none' or a folder of images")
    return _read_folder(folder, max_images)


def _read_folder(folder: Path, max_images: int) -> np.ndarray:
    """(N,H,W,3) uint8 RGB: the folder's images in name order (at most ``max_images``)."""
    import cv2
    files = sorted([p for p in folder.iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES])[:max_images]
    imgs = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in files]
    imgs = [cv2.cvtColor(i, cv2.COLOR_BGR2RGB) for i in imgs if i is not None]
    if not imgs:
        raise ValueError(f"anchor folder {folder} holds no readable png/jpg/webp images")
    h, w = imgs[0].shape[:2]
    return np.stack([resize_rgb(i, (h, w)) for i in imgs])
