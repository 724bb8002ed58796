"""Training triplets from a stream of camera frames: the frame store and the target schedule.

A :class:`TripletBuilder` keeps recent frames at training resolution and the targets still waiting
for their sources; a motion-based :class:`~mono_depth_ros.egomotion.FrameSelector` decides, per
target, which frames are its sources and gives their metric relative poses.
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
    K: (3,3) float32.
    """

    stamp_ns: int
    target: torch.Tensor
    sources: tuple
    T_source_target: tuple
    K: torch.Tensor


@dataclass
class FrameCounters:
    frames: int = 0
    duplicate_frames: int = 0
    time_resets: int = 0
    no_motion: int = 0


class TripletBuilder:
    """Frame store + pending targets -> the newest ready :class:`Triplet`.

    Threads: :meth:`add_frame` and :meth:`clear` run on the feeding thread (the node's inference
    worker, or the bag loop); :meth:`next` on the training thread. One lock guards the store.

    Args:
        selector: ``add_frame(stamp)``, ``frames`` (stamps it keeps) and ``select(stamp) ->
            FrameSelection`` (status, source stamps, poses).
        size: (h, w) training resolution.
        max_pending: targets waiting for motion / later frames.
    """

    def __init__(self, selector, size: tuple[int, int], max_pending: int = 30):
        self.selector = selector
        self.size = size
        self.max_pending = max_pending
        self.counters = FrameCounters()
        self.frames: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.pending: deque[int] = deque()
        self._lock = threading.Lock()

    def add_frame(self, stamp_ns: int, rgb: np.ndarray, K: np.ndarray) -> None:
        """Offer one camera frame: (H,W,3) uint8 RGB and its (3,3) K at that size."""
        h, w = self.size
        H, W = rgb.shape[:2]
        small = resize_rgb(rgb, (h, w))
        Ks = scale_intrinsics(K, w / W, h / H)
        if not small.flags.writeable or small is rgb:
            small = small.copy()  # own the pixels: message buffers are read-only and may be reused
        img = torch.from_numpy(small).permute(2, 0, 1).contiguous()
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

    def next(self) -> Triplet | None:
        """Newest pending target whose sources are ready; NEVER targets are dropped, older pending
        targets are superseded by a newer ready one (latest first, bounded work)."""
        from mono_depth_ros.egomotion.timeseries import PoseStatus
        with self._lock:
            for stamp in sorted(self.pending, reverse=True):
                if stamp not in self.frames:
                    self.pending.remove(stamp)
                    continue
                sel = self.selector.select(stamp)
                if sel.status is PoseStatus.NOT_YET:
                    continue
                self.pending.remove(stamp)
                if sel.status is PoseStatus.NEVER:
                    self.counters.no_motion += 1
                    continue
                if any(s not in self.frames for s in sel.source_stamps_ns):
                    continue
                target, K = self.frames[stamp]
                srcs = tuple(self.frames[s][0] for s in sel.source_stamps_ns)
                T_st = tuple(torch.from_numpy(np.linalg.inv(p.T_target_source).astype(np.float32))
                             for p in sel.poses)
                return Triplet(stamp, target, srcs, T_st, K)
        return None

    def clear(self) -> None:
        """Forget frame history and pending targets (time jumped: never pair frames across it)."""
        with self._lock:
            self.frames.clear()
            self.pending.clear()
            self.counters.time_resets += 1
