"""A ROS-free transform buffer with the tf2 semantics users rely on.

Used by the node where ``tf2_ros`` is not importable (the PyPI-wheel install);
with a ROS 2 installation the node uses tf2_ros itself. Semantics:

* static transforms are valid at every time; dynamic ones are kept for
  ``cache_time_s`` and interpolated between stamps (slerp for rotation, linear
  for translation, scipy's :class:`~scipy.spatial.transform.Slerp`);
* a lookup outside the buffered time range by more than ``extrapolation_tol_s``
  raises :class:`ExtrapolationError` naming the frames and the times;
* time 0 means "latest time common to the whole chain" (tf2's ``Time()``);
* a frame that receives a new parent switches to it (latest wins, like tf2);
  the switch is counted and remembered in ``last_parent_switch`` (the node
  reports it, throttled: two publishers contradicting each other switch at
  their publication rate);
* a quaternion whose squared norm is off 1 by more than 0.01 is rejected
  (tf2's ``TF_DENORMALIZED_QUATERNION``); smaller deviations are normalised.

Transforms are returned as ``T_target_source`` 4x4 float64 matrices
(``p_target = T @ p_source``), tf2's ``lookup_transform(target, source, t)``.

Why our own: tf2_ros has no PyPI wheel, and tf2's C++ buffer is not reachable
from the wheels; this is the thin part of it the node needs.

:class:`TransformLookup` is the one transform interface of the package: this
buffer implements it, and so does the node's tf2_ros-backed
:class:`mono_depth_ros.ros.tf.TfSource`. The ego-motion provider's ``tf``
source, the camera extrinsics and the point-cloud projection all ask it; a time
jump clears it through :meth:`TransformLookup.clear`.
"""
from __future__ import annotations

import bisect
import logging
import threading
from typing import Protocol, runtime_checkable

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from mono_depth_ros.conventions import to_sec, transform_matrix
from mono_depth_ros.egomotion.samples import TransformSample

__all__ = ["TransformLookup", "TransformSample", "TfBuffer", "TfError", "LookupError_", "ExtrapolationError", "quat_to_matrix"]

log = logging.getLogger(__name__)



class TfError(Exception):
    """Base class of transform lookup failures."""


class LookupError_(TfError):  # noqa: N801 - avoid shadowing builtins.LookupError
    """A frame is unknown or the two frames are not connected."""


class ExtrapolationError(TfError):
    """The requested time lies outside the buffered range of a link.

    Attributes:
        future: True when the time is newer than the newest data (data may still come), False when it is
            older than the oldest kept data, None when unknown.
        latest_ns: the newest stamp of the link that failed (0 when unknown).
    """

    def __init__(self, message: str, future: bool | None = None, latest_ns: int = 0):
        super().__init__(message)
        self.future = future
        self.latest_ns = latest_ns


@runtime_checkable
class TransformLookup(Protocol):
    """The one transform lookup of the package (tf2_ros semantics; 4x4 float64, metres).

    Implemented by :class:`TfBuffer` and by the node's ``ros.tf.TfSource`` (tf2_ros or TfBuffer behind it).
    Failures raise :class:`TfError` (:class:`LookupError_`, :class:`ExtrapolationError`).
    """

    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> np.ndarray:
        """(4,4) T_target_source at ``stamp_ns`` (0: latest common time)."""

    def lookup_full(self, target: str, target_ns: int, source: str, source_ns: int, fixed: str) -> np.ndarray:
        """(4,4) T_target(target_ns)_source(source_ns) through ``fixed`` (assumed not to move between the two times):
        ``inv(T_fixed_target(target_ns)) @ T_fixed_source(source_ns)``; tf2's ``lookup_transform_full``."""

    def clear(self) -> None:
        """Forget dynamic transforms (a time jump); static ones stay."""


def quat_to_matrix(translation, rotation_xyzw) -> np.ndarray:
    """(3,), (4,) -> (4,4) homogeneous transform (tf2's quaternion tolerance). Raises ValueError on bad input."""
    return transform_matrix(translation, rotation_xyzw)


class _Link:
    """Time series of T_parent_child for one child frame."""

    def __init__(self, parent: str, static: bool):
        self.parent = parent
        self.static = static
        self.stamps: list[int] = []
        self.trans: list[np.ndarray] = []
        self.quats: list[np.ndarray] = []

    def insert(self, stamp_ns: int, t: np.ndarray, q: np.ndarray) -> None:
        if self.static:
            self.stamps, self.trans, self.quats = [stamp_ns], [t], [q]
            return
        i = bisect.bisect_left(self.stamps, stamp_ns)
        if i < len(self.stamps) and self.stamps[i] == stamp_ns:
            self.trans[i], self.quats[i] = t, q  # duplicate stamp: replace
            return
        self.stamps.insert(i, stamp_ns)
        self.trans.insert(i, t)
        self.quats.insert(i, q)

    def prune(self, older_than_ns: int) -> None:
        if self.static:
            return
        i = bisect.bisect_left(self.stamps, older_than_ns)
        # Keep one sample before the horizon so interpolation at the horizon works.
        i = max(0, i - 1)
        if i:
            del self.stamps[:i], self.trans[:i], self.quats[:i]

    def at(self, stamp_ns: int, tol_ns: int, child: str) -> np.ndarray:
        if self.static:
            return _matrix(self.trans[-1], self.quats[-1])
        s = self.stamps
        if stamp_ns < s[0] - tol_ns or stamp_ns > s[-1] + tol_ns:
            raise ExtrapolationError(
                f"lookup of {self.parent} -> {child} at t={to_sec(stamp_ns):.3f}s is outside the buffered "
                f"range [{to_sec(s[0]):.3f}, {to_sec(s[-1]):.3f}]s (tolerance {to_sec(tol_ns):.3f}s)",
                future=stamp_ns > s[-1], latest_ns=s[-1])
        if stamp_ns <= s[0]:
            return _matrix(self.trans[0], self.quats[0])
        if stamp_ns >= s[-1]:
            return _matrix(self.trans[-1], self.quats[-1])
        i = bisect.bisect_right(s, stamp_ns)
        t0, t1 = s[i - 1], s[i]
        a = (stamp_ns - t0) / (t1 - t0)
        rots = Rotation.from_quat(np.stack([self.quats[i - 1], self.quats[i]]))
        R = Slerp([0.0, 1.0], rots)([a]).as_matrix()[0]
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = (1.0 - a) * self.trans[i - 1] + a * self.trans[i]
        return T


def _matrix(t: np.ndarray, q: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat(q).as_matrix()
    T[:3, 3] = t
    return T


class TfBuffer:
    """Thread-safe transform tree. See module docstring for semantics."""

    def __init__(self, cache_time_s: float = 10.0, extrapolation_tol_s: float = 0.05):
        self.cache_ns = int(cache_time_s * 1e9)
        self.tol_ns = int(extrapolation_tol_s * 1e9)
        self._links: dict[str, _Link] = {}
        self._lock = threading.Lock()
        self._latest_ns = 0
        self.counters = {"rejected": 0, "parent_switches": 0, "resets": 0}
        #: (child, old parent, new parent) of the newest parent switch, or None.
        self.last_parent_switch: tuple[str, str, str] | None = None

    # ------------------------------------------------------------------ input
    def set_transform(self, sample: TransformSample, static: bool = False) -> bool:
        """Insert one transform. Returns False (and counts) when it is rejected."""
        try:
            T = quat_to_matrix(sample.translation, sample.rotation)
        except ValueError as exc:
            self.counters["rejected"] += 1
            log.warning("rejected transform %s -> %s: %s", sample.parent_frame, sample.child_frame, exc)
            return False
        parent, child = sample.parent_frame.lstrip("/"), sample.child_frame.lstrip("/")
        if not parent or not child or parent == child:
            self.counters["rejected"] += 1
            log.warning("rejected transform with frames %r -> %r", parent, child)
            return False
        q = Rotation.from_matrix(T[:3, :3]).as_quat()
        with self._lock:
            link = self._links.get(child)
            if link is None or link.static != static:
                link = self._links[child] = _Link(parent, static)
            elif link.parent != parent:
                self.counters["parent_switches"] += 1
                self.last_parent_switch = (child, link.parent, parent)
                # Debug only: contradicting publishers switch at their rate; the node reports it throttled.
                log.debug("frame %r changed parent %r -> %r (latest wins)", child, link.parent, parent)
                link = self._links[child] = _Link(parent, static)
            link.insert(int(sample.stamp_ns), T[:3, 3].copy(), q)
            if not static:
                self._latest_ns = max(self._latest_ns, int(sample.stamp_ns))
                link.prune(self._latest_ns - self.cache_ns)
        return True

    def clear(self, dynamic_only: bool = True) -> None:
        """Forget dynamic transforms (e.g. after time jumped backwards)."""
        with self._lock:
            for child in [c for c, lk in self._links.items() if (not lk.static or not dynamic_only)]:
                del self._links[child]
            self._latest_ns = 0
            self.counters["resets"] += 1

    # ----------------------------------------------------------------- query
    def frames(self) -> list[str]:
        with self._lock:
            names = set(self._links) | {lk.parent for lk in self._links.values()}
        return sorted(names)

    def _chain(self, frame: str) -> list[str]:
        chain = [frame]
        seen = {frame}
        while chain[-1] in self._links:
            parent = self._links[chain[-1]].parent
            if parent in seen:  # a loop can only come from contradicting parents
                break
            chain.append(parent)
            seen.add(parent)
        return chain

    def lookup(self, target: str, source: str, stamp_ns: int = 0) -> np.ndarray:
        """Return T_target_source (4,4) at ``stamp_ns`` (0 = latest common time).

        Raises LookupError_ (unknown / unconnected frames) or ExtrapolationError.
        """
        with self._lock:
            return self._lookup_locked(target, source, stamp_ns, self.tol_ns)

    def lookup_full(self, target: str, target_ns: int, source: str, source_ns: int, fixed: str) -> np.ndarray:
        """(4,4) T_target(target_ns)_source(source_ns) through ``fixed``, tf2's ``lookup_transform_full``.

        ``T_fixed_target(target_ns)^-1 @ T_fixed_source(source_ns)``: e.g. camera(t0) -> camera(t1) through
        ``odom``, whatever chain links odom and the camera. Unlike :meth:`lookup` it never extrapolates
        (tolerance 0, like tf2): a held end value would be made-up motion. Times are taken literally, 0
        included (the ego-motion provider asks at image stamps; tf2's "0 = latest" is :meth:`lookup`'s).

        Raises LookupError_ (unknown / unconnected frames) or ExtrapolationError (``future`` says which side).
        """
        with self._lock:
            T_fixed_source = self._lookup_locked(fixed, source, source_ns, 0, literal=True)
            T_fixed_target = self._lookup_locked(fixed, target, target_ns, 0, literal=True)
        return np.linalg.inv(T_fixed_target) @ T_fixed_source

    def _lookup_locked(self, target: str, source: str, stamp_ns: int, tol_ns: int,
                       literal: bool = False) -> np.ndarray:
        if target == source:
            return np.eye(4)
        up_t, up_s = self._paths(target, source)
        if stamp_ns == 0 and not literal:
            stamp_ns = self._latest_common(up_t + up_s)
        T_common_source = self._walk(up_s, stamp_ns, tol_ns)
        T_common_target = self._walk(up_t, stamp_ns, tol_ns)
        return np.linalg.inv(T_common_target) @ T_common_source

    def latest_common_ns(self, target: str, source: str) -> int:
        """Newest stamp at which ``target`` <- ``source`` can be looked up (0: static only). Raises LookupError_."""
        with self._lock:
            up_t, up_s = self._paths(target, source)
            return self._latest_common(up_t + up_s)

    def _paths(self, target: str, source: str) -> tuple[list[str], list[str]]:
        """Children from ``target`` and from ``source`` up to (not including) their common ancestor."""
        known = set(self._links) | {lk.parent for lk in self._links.values()}
        for f in (target, source):
            if f not in known:
                raise LookupError_(f"frame {f!r} does not exist (known frames: {sorted(known)})")
        ct, cs = self._chain(target), self._chain(source)
        common = next((f for f in cs if f in set(ct)), None)
        if common is None:
            raise LookupError_(
                f"frames {target!r} and {source!r} are not connected (tree roots {ct[-1]!r} and {cs[-1]!r})")
        return ct[: ct.index(common)], cs[: cs.index(common)]

    def can_transform(self, target: str, source: str, stamp_ns: int = 0) -> bool:
        try:
            self.lookup(target, source, stamp_ns)
            return True
        except TfError:
            return False

    def _latest_common(self, children: list[str]) -> int:
        dyn = [self._links[c].stamps[-1] for c in children if not self._links[c].static]
        return min(dyn) if dyn else 0

    def _walk(self, children: list[str], stamp_ns: int, tol_ns: int) -> np.ndarray:
        """Compose T_ancestor_child along ``children`` (child first, upwards)."""
        T = np.eye(4)
        for child in children:
            T = self._links[child].at(stamp_ns, tol_ns, child) @ T
        return T
