"""Quality gating: choose training source frames for a target frame BY MOTION.

Given the stamps of recent images, :class:`FrameSelector` picks for a target
frame t the nearest earlier frame (t-k) and/or the nearest later frame (t+k)
whose camera moved at least ``min_translation_m`` from t, within
``max_time_gap_s`` and with at most ``max_rotation_rad`` of rotation. Frames
are never chosen by index: a stopped car yields no pair (nothing to learn,
the photometric loss would be degenerate), a fast one yields the neighbour.
"""
from __future__ import annotations

import bisect
import math
import threading
from dataclasses import dataclass, field

from ..conventions import NS_PER_S
from ..options import option
from .provider import EgoMotionProvider, RelativePose
from .timeseries import PoseStatus

__all__ = ["GatingConfig", "FrameSelection", "FrameSelector"]


def _degrees(rad: float) -> float:
    """Radians -> degrees as a parameter shows them (15.0, not 15.000000000000002)."""
    return round(math.degrees(rad), 6)


@dataclass(frozen=True)
class GatingConfig:
    """Gating thresholds.

    Attributes:
        min_translation_m: camera must move at least this far (m) between the
            target and a source frame (CoMoDA uses 0.2 m).
        max_rotation_rad: and rotate at most this much (rad).
        max_time_gap_s: source frames at most this far in time from the target (s).
        directions: which neighbours are required: -1 = earlier, +1 = later.
        history_s: image stamps older than this (s, vs the newest) are forgotten.
        allowed_sources: if set, only poses from these sources pass (e.g. to
            train only on odometry-quality motion).
    """

    min_translation_m: float = option(0.2, "adapt_min_translation", "minimum camera motion between training "
                                      "frames [m]", range=(0.0, 10.0), read_only="the frame selector is built at "
                                      "start", cli="--min-translation")
    max_rotation_rad: float = option(math.radians(15.0), "adapt_max_rotation", "largest camera rotation between "
                                     "training frames [deg]; raise it for hand-held or slowly turning cameras",
                                     range=(0.1, 180.0), read_only="the frame selector is built at start",
                                     cli="--max-rotation", to_param=_degrees, from_param=math.radians)
    max_time_gap_s: float = 1.0
    directions: tuple[int, ...] = (-1, 1)
    history_s: float = 10.0
    allowed_sources: tuple[str, ...] | None = None

    def __post_init__(self):
        if not self.directions or any(d not in (-1, 1) for d in self.directions):
            raise ValueError(f"directions must be a non-empty subset of (-1, 1), got {self.directions}")
        if self.min_translation_m < 0 or self.max_rotation_rad <= 0 or self.max_time_gap_s <= 0:
            raise ValueError("min_translation_m >= 0, max_rotation_rad > 0, max_time_gap_s > 0 required")


@dataclass(frozen=True)
class FrameSelection:
    """Result of :meth:`FrameSelector.select`.

    Attributes:
        status: OK (all requested directions found), NOT_YET (ask again after
            more images/motion arrive), NEVER (this target cannot be used).
        target_ns: the target image stamp.
        poses: one :class:`RelativePose` per requested direction when OK
            (``stamp_source_ns`` is the chosen frame; ``T_target_source`` its motion).
        reason: why not OK.
    """

    status: PoseStatus
    target_ns: int
    poses: tuple[RelativePose, ...] = field(default_factory=tuple)
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.status is PoseStatus.OK

    @property
    def source_stamps_ns(self) -> tuple[int, ...]:
        return tuple(p.stamp_source_ns for p in self.poses)


class FrameSelector:
    """History of image stamps + motion-based choice of source frames.

    Args:
        provider: the :class:`EgoMotionProvider` answering relative poses.
        config: :class:`GatingConfig`.
    """

    def __init__(self, provider: EgoMotionProvider, config: GatingConfig | None = None):
        self.provider = provider
        self.config = config or GatingConfig()
        self._frames: list[int] = []
        self._epoch = provider.epoch
        self._lock = threading.RLock()

    def _sync_epoch(self) -> None:
        if self.provider.epoch != self._epoch:  # time jumped: old frames are meaningless
            self._frames.clear()
            self._epoch = self.provider.epoch

    def add_frame(self, stamp_ns: int) -> None:
        """Record an image stamp (sorted insert; duplicates dropped; old ones pruned)."""
        with self._lock:
            self._add_frame(stamp_ns)

    def _add_frame(self, stamp_ns: int) -> None:
        self._sync_epoch()
        stamp_ns = int(stamp_ns)
        i = bisect.bisect_left(self._frames, stamp_ns)
        if i < len(self._frames) and self._frames[i] == stamp_ns:
            return
        if self._frames and stamp_ns < self._frames[-1] - int(self.provider.config.time_jump_tolerance_s * NS_PER_S):
            self._frames.clear()  # image time jumped backwards
            i = 0
        self._frames.insert(i, stamp_ns)
        keep_from = self._frames[-1] - int(self.config.history_s * NS_PER_S)
        j = bisect.bisect_left(self._frames, keep_from)
        if j:
            del self._frames[:j]

    @property
    def frames(self) -> tuple[int, ...]:
        """Known image stamps, sorted (int ns); none from before the provider's last reset."""
        with self._lock:
            self._sync_epoch()
            return tuple(self._frames)

    def _pick(self, target: int, direction: int) -> tuple[PoseStatus, RelativePose | None, str]:
        c = self.config
        gap = int(c.max_time_gap_s * NS_PER_S)
        i = bisect.bisect_left(self._frames, target)
        if direction < 0:
            candidates = self._frames[:i][::-1]
        else:
            candidates = self._frames[i + 1:] if i < len(self._frames) and self._frames[i] == target \
                else self._frames[i:]
        last_reason = "no frames"
        for stamp in candidates:
            if abs(stamp - target) > gap:
                return PoseStatus.NEVER, None, f"no frame within {c.max_time_gap_s} s moved " \
                    f"{c.min_translation_m} m ({last_reason})"
            rp = self.provider.relative_pose(target, stamp)
            if rp.status is PoseStatus.NOT_YET:
                return PoseStatus.NOT_YET, None, rp.reason
            if rp.status is PoseStatus.NEVER:
                last_reason = rp.reason
                continue
            if c.allowed_sources is not None and rp.source not in c.allowed_sources:
                return PoseStatus.NEVER, None, f"source {rp.source} not allowed"
            if rp.rotation_rad > c.max_rotation_rad:
                return PoseStatus.NEVER, None, f"rotation {math.degrees(rp.rotation_rad):.1f} deg too large"
            if rp.translation_m >= c.min_translation_m:
                return PoseStatus.OK, rp, ""
            last_reason = f"moved only {rp.translation_m:.3f} m"
        if direction > 0:
            return PoseStatus.NOT_YET, None, f"waiting for later frames ({last_reason})"
        return PoseStatus.NEVER, None, f"no earlier frame moved enough ({last_reason})"

    def select(self, target_ns: int) -> FrameSelection:
        """Pick source frames for ``target_ns`` (which should itself have been added)."""
        with self._lock:
            return self._select(target_ns)

    def _select(self, target_ns: int) -> FrameSelection:
        self._sync_epoch()
        target_ns = int(target_ns)
        poses = []
        for d in self.config.directions:
            status, rp, reason = self._pick(target_ns, d)
            if status is not PoseStatus.OK:
                return FrameSelection(status, target_ns, (), f"{'earlier' if d < 0 else 'later'}: {reason}")
            poses.append(rp)
        return FrameSelection(PoseStatus.OK, target_ns, tuple(poses))
