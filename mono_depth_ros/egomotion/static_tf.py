"""Compose static transforms (``/tf_static``) into one ``T_target_source``.

Only what the offline tools need to get ``T_base_camera`` from a bag; the live
node uses tf2's buffer instead.
"""
from __future__ import annotations

from collections import deque

import numpy as np
from scipy.spatial.transform import Rotation

from .samples import TransformSample
from .timeseries import invert_T, make_T

__all__ = ["lookup_static"]


def lookup_static(transforms: list[TransformSample], target: str, source: str) -> np.ndarray:
    """(4,4) T_target_source through a tree of static transforms (either direction).

    Raises:
        LookupError: when the frames are not connected.
    """
    edges: dict[str, list[tuple[str, np.ndarray]]] = {}
    for t in transforms:
        T = make_T(Rotation.from_quat(np.array(t.rotation)), t.translation)  # T_parent_child
        p, c = t.parent_frame.lstrip("/"), t.child_frame.lstrip("/")
        edges.setdefault(p, []).append((c, T))
        edges.setdefault(c, []).append((p, invert_T(T)))
    target, source = target.lstrip("/"), source.lstrip("/")
    # BFS from target: T_target_frame for every reachable frame.
    found = {target: np.eye(4)}
    queue = deque([target])
    while queue:
        f = queue.popleft()
        for nxt, T_f_nxt in edges.get(f, ()):
            if nxt not in found:
                found[nxt] = found[f] @ T_f_nxt
                queue.append(nxt)
    if source not in found:
        raise LookupError(f"no static transform chain from {source!r} to {target!r} "
                          f"(known frames: {sorted(edges)})")
    return found[source]
