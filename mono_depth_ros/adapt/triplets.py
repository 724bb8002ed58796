"""Training triplets from a stream of camera frames: the frame store and the target schedule.

A :class:`TripletBuilder` keeps recent frames at training resolution and the targets still waiting
for their sources; a motion-based :class:`~mono_depth_ros.egomotion.FrameSelector` decides, per
target, which frames are its sources and gives their metric relative poses.

Stereo (``stereo_tolerance_ns`` set): right frames offered with :meth:`TripletBuilder.add_right_frame`
are matched to left targets by stamp (within the tolerance) and ride in the triplet as one more
source with their known ``T_right_left`` (monodepth2's MS training, online). A target whose temporal
sources cannot come (the vehicle stands still: the selector says NEVER, or no ego-motion reached it
within the selector's time gap) still trains on its stereo pair alone: the baseline keeps the scale
metric without any motion.
"""
from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass

import numpy as np
import torch

from mono_depth_ros.conventions import scale_intrinsics
from mono_depth_ros.preprocess import resize_rgb

__all__ = ["Triplet", "TripletBuilder", "FrameCounters"]


@dataclass(frozen=True)
class Triplet:
    """One training sample at training resolution.

    target: (3,h,w) uint8; sources: tuple of (3,h,w) uint8; T_source_target:
    tuple of (4,4) float32 (target-camera points -> source camera, metres);
    K: (3,3) float32. Stereo: ``right`` (3,h,w) uint8, the right image of the pair (also the
    first source, with ``T_right_left`` (4,4) as its pose); None without a pair.
    Intrinsics calibration (``TripletBuilder(wide_gap_ns=...)``): ``wide_source`` (3,h,w) uint8, an
    earlier frame about that far back, and ``T_wide_target`` (4,4) its pose (not trained on: the
    calibrator's turning pairs, adapt/calibration.py); None otherwise.
    """

    stamp_ns: int
    target: torch.Tensor
    sources: tuple
    T_source_target: tuple
    K: torch.Tensor
    right: torch.Tensor | None = None
    T_right_left: torch.Tensor | None = None
    wide_source: torch.Tensor | None = None
    T_wide_target: torch.Tensor | None = None


@dataclass
class FrameCounters:
    frames: int = 0
    duplicate_frames: int = 0
    time_resets: int = 0
    no_motion: int = 0
    right_frames: int = 0
    stereo_only: int = 0             # triplets with the stereo pair as their only source (standing still)


class TripletBuilder:
    """Frame store + pending targets -> the newest ready :class:`Triplet`.

    Threads: :meth:`add_frame` and :meth:`clear` run on the feeding thread (the node's inference
    worker, or the bag loop); :meth:`next` on the training thread. One lock guards the store.

    Args:
        selector: ``add_frame(stamp)``, ``frames`` (stamps it keeps) and ``select(stamp) ->
            FrameSelection`` (status, source stamps, poses).
        size: (h, w) training resolution.
        max_pending: targets waiting for motion / later frames.
        stereo_tolerance_ns: largest stamp difference of a left and a right frame that form a
            pair; None = no stereo (right frames are refused).
        wide_gap_ns: a temporal triplet also carries the kept frame nearest this far before its target
            (within half of it) with its pose from the selector's provider (``Triplet.wide_source``: the
            intrinsics calibrator's pairs); None = none.
    """

    def __init__(self, selector, size: tuple[int, int], max_pending: int = 30,
                 stereo_tolerance_ns: int | None = None, wide_gap_ns: int | None = None):
        self.selector = selector
        self.size = size
        self.max_pending = max_pending
        self.stereo_tolerance_ns = stereo_tolerance_ns
        self.wide_gap_ns = wide_gap_ns
        self.counters = FrameCounters()
        self.frames: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.right: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}   # stamp -> (image, T_right_left)
        self.pending: deque[int] = deque()
        self._lock = threading.Lock()

    def _small(self, rgb: np.ndarray, K: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """(H,W,3) uint8 + its K -> (3,h,w) uint8 at training size (own copy) + K at that size."""
        h, w = self.size
        H, W = rgb.shape[:2]
        small = resize_rgb(rgb, (h, w))
        Ks = scale_intrinsics(K, w / W, h / H)
        if not small.flags.writeable or small is rgb:
            small = small.copy()  # own the pixels: message buffers are read-only and may be reused
        return torch.from_numpy(small).permute(2, 0, 1).contiguous(), Ks

    def add_right_frame(self, stamp_ns: int, rgb: np.ndarray, T_right_left: np.ndarray) -> bool:
        """Offer the right image of a rectified stereo pair: (H,W,3) uint8 RGB (the left camera's size
        and K) and ``T_right_left`` (4,4) (left-camera points -> right camera, metres). False when
        stereo is off."""
        if self.stereo_tolerance_ns is None:
            return False
        img, _ = self._small(rgb, np.eye(3))
        T = torch.from_numpy(np.asarray(T_right_left, dtype=np.float32).copy())
        with self._lock:
            self.right[int(stamp_ns)] = (img, T)
            self.counters.right_frames += 1
            self._prune_right()
        return True

    def _prune_right(self) -> None:
        """Right frames older than the oldest kept left frame (less the tolerance) are forgotten, and
        at most ``2 * max_pending`` are kept (a pair is wanted only for a pending target)."""
        if self.frames:
            limit = min(self.frames) - self.stereo_tolerance_ns
            for s in [s for s in self.right if s < limit]:
                del self.right[s]
        for s in sorted(self.right)[: max(0, len(self.right) - 2 * self.max_pending)]:
            del self.right[s]

    def _pair(self, stamp_ns: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """The right frame nearest ``stamp_ns`` within the tolerance, or None."""
        if self.stereo_tolerance_ns is None or not self.right:
            return None
        best = min(self.right, key=lambda s: abs(s - stamp_ns))
        return self.right[best] if abs(best - stamp_ns) <= self.stereo_tolerance_ns else None

    def add_frame(self, stamp_ns: int, rgb: np.ndarray, K: np.ndarray) -> None:
        """Offer one camera frame: (H,W,3) uint8 RGB and its (3,3) K at that size."""
        img, Ks = self._small(rgb, K)
        stamp_ns = int(stamp_ns)
        with self._lock:
            if stamp_ns in self.frames:  # a repeated stamp: another image claiming the same instant
                self.counters.duplicate_frames += 1
                return
            self.frames[stamp_ns] = (img, torch.from_numpy(Ks.astype(np.float32)))
            self.selector.add_frame(stamp_ns)
            known = set(self.selector.frames)
            for s in [s for s in self.frames if s not in known]:  # selector pruned it (age / time jump)
                del self.frames[s]
            self.pending.append(stamp_ns)
            while len(self.pending) > self.max_pending:
                self.pending.popleft()
            self.counters.frames += 1
            if self.stereo_tolerance_ns is not None:
                self._prune_right()

    def next(self) -> Triplet | None:
        """Newest pending target whose sources are ready; NEVER targets are dropped, older pending
        targets are superseded by a newer ready one (latest first, bounded work).

        Stereo: a target waits for its right frame (up to the selector's ``max_time_gap_s`` of newer
        frames), which becomes its first source. When its temporal sources cannot come (NEVER: no
        motion; or still NOT_YET once the newest frame is more than ``max_time_gap_s`` later: no
        ego-motion at all) it trains on the pair alone.
        """
        from mono_depth_ros.egomotion.timeseries import PoseStatus
        with self._lock:
            newest = max(self.frames) if self.frames else 0
            gap_cfg = getattr(self.selector, "config", None)
            stale_ns = int(getattr(gap_cfg, "max_time_gap_s", 1.0) * 1e9)
            for stamp in sorted(self.pending, reverse=True):
                if stamp not in self.frames:
                    self.pending.remove(stamp)
                    continue
                pair = self._pair(stamp)
                late = newest - stamp > stale_ns
                if pair is None and self.stereo_tolerance_ns is not None and not late:
                    continue        # its right frame may still be on its way (another topic, another thread)
                sel = self.selector.select(stamp)
                if sel.status is PoseStatus.NOT_YET and not (pair is not None and late):
                    continue
                self.pending.remove(stamp)
                target, K = self.frames[stamp]
                if sel.status is not PoseStatus.OK:
                    self.counters.no_motion += 1
                    if pair is None:
                        continue
                    self.counters.stereo_only += 1
                    return Triplet(stamp, target, (pair[0],), (pair[1],), K, pair[0], pair[1])
                if any(s not in self.frames for s in sel.source_stamps_ns):
                    continue
                srcs = tuple(self.frames[s][0] for s in sel.source_stamps_ns)
                T_st = tuple(torch.from_numpy(np.linalg.inv(p.T_target_source).astype(np.float32))
                             for p in sel.poses)
                wide = self._wide(stamp)
                if pair is None:
                    return Triplet(stamp, target, srcs, T_st, K, None, None, *wide)
                return Triplet(stamp, target, (pair[0], *srcs), (pair[1], *T_st), K, pair[0], pair[1], *wide)
        return None

    def _wide(self, stamp: int) -> tuple:
        """(image, T_source_target) of the kept frame nearest ``wide_gap_ns`` before ``stamp`` (within half
        of it) whose pose the provider knows, else (None, None). Under the lock."""
        from mono_depth_ros.egomotion.timeseries import PoseStatus
        provider = getattr(self.selector, "provider", None)
        if self.wide_gap_ns is None or provider is None:
            return None, None
        want = stamp - self.wide_gap_ns
        earlier = [s for s in self.frames if s < stamp and abs(s - want) <= self.wide_gap_ns // 2]
        if not earlier:
            return None, None
        s = min(earlier, key=lambda x: abs(x - want))
        rp = provider.relative_pose(stamp, s)
        if rp.status is not PoseStatus.OK:
            return None, None
        return self.frames[s][0], torch.from_numpy(np.linalg.inv(rp.T_target_source).astype(np.float32))

    def clear(self) -> None:
        """Forget frame history and pending targets (time jumped: never pair frames across it)."""
        with self._lock:
            self.frames.clear()
            self.right.clear()
            self.pending.clear()
            self.counters.time_resets += 1
