"""The shipped anchor images: ``mono_depth_ros/weights/anchors_A/*.webp``.

The node's ``synthetic_A`` anchor (:mod:`mono_depth_ros.adapt.anchors`) reads these files; it never
renders. They are the first 16 frames of the domain-A drive with seed 7, one frame every 0.3 s,
rendered by :mod:`mono_depth_ros.tools.synth` and stored losslessly (WebP lossless: the pixels read
back are the rendered ones; ``test/test_anchors.py`` checks it). Regenerate after changing the
simulator or domain A::

    python -m mono_depth_ros.tools.anchors            # rewrites mono_depth_ros/weights/anchors_A/
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from mono_depth_ros.adapt.anchors import SHIPPED_ANCHOR_DIR

__all__ = ["ANCHOR_COUNT", "ANCHOR_SEED", "render_anchor_images", "write_anchor_files"]

ANCHOR_COUNT = 16
ANCHOR_SEED = 7
_PERIOD_S = 0.3


def render_anchor_images(count: int = ANCHOR_COUNT, seed: int = ANCHOR_SEED) -> np.ndarray:
    """(count,H,W,3) uint8 RGB: the first ``count`` frames of domain A (``seed``), one each 0.3 s."""
    from mono_depth_ros.tools.synth import render_drive
    frames = list(render_drive("A", seed=seed, duration_s=count * _PERIOD_S, rate_hz=1.0 / _PERIOD_S))
    return np.stack([f.image for f in frames[:count]])


def write_anchor_files(images: np.ndarray, folder: Path = SHIPPED_ANCHOR_DIR) -> list[Path]:
    """Write (N,H,W,3) uint8 RGB ``images`` as lossless ``folder/NN.webp`` (old ``*.webp`` removed)."""
    import cv2
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("*.webp"):
        old.unlink()
    paths = []
    for i, img in enumerate(images):
        path = folder / f"{i:02d}.webp"
        ok, buf = cv2.imencode(".webp", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_WEBP_QUALITY, 101])
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {path} (WebP support missing?)")
        path.write_bytes(buf.tobytes())
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mono_depth_ros.tools.anchors", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=SHIPPED_ANCHOR_DIR, help="folder to write the WebP files into")
    args = ap.parse_args(argv)
    paths = write_anchor_files(render_anchor_images(), args.out)
    total = sum(p.stat().st_size for p in paths)
    print(f"wrote {len(paths)} anchor images, {total / 1e6:.2f} MB, to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
