"""Training poses for a bag from the ego-motion provider (odometry / TF / IMU / GPS), not ground truth.

The bag's messages are read in log-time order and handed to an
:class:`~mono_depth_ros.egomotion.feed.EgoMotionFeed`, the same dispatch the node
and ``mono-depth adapt`` use; after every camera frame the selector is asked for
source frames of each waiting target (chosen by motion, gated by
:class:`~mono_depth_ros.egomotion.GatingConfig`). Frames without a pose are
dropped from training (and counted by reason), never guessed.
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..conventions import Topics
from ..egomotion import EgoMotionConfig, GatingConfig, PoseStatus, stamp_to_ns
from ..egomotion.feed import EgoMotionFeed

__all__ = ["EgoPairs", "egomotion_pairs"]


@dataclass(frozen=True)
class EgoPairs:
    """Training tuples of one drive, as indices into its :class:`~mono_depth_ros.learning.data.BagFrames`.

    Attributes:
        target: (M,) int64 target frame indices.
        sources: (M,S) int64 source frame indices, one column per selector direction
            (earlier, later).
        T_source_target: (M,S,4,4) float64 camera-optical motion target -> source
            (``inv(T_map_cam_source) @ T_map_cam_target``), metres.
        source_used: ego-motion source name per tuple (e.g. ``odom``).
        dropped: why the other frames got no pose ({reason: count}).
        stats: the feed's ego-motion counters at the end of the bag.
    """

    target: np.ndarray
    sources: np.ndarray
    T_source_target: np.ndarray
    source_used: tuple[str, ...] = ()
    dropped: dict = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.target.shape[0])


def _short(reason: str) -> str:
    """A reason without its numbers, to count similar ones together."""
    return "".join(c for c in reason.split("(")[0] if not c.isdigit()).replace(" .", "").strip()


def egomotion_pairs(path: str | os.PathLike, stamps_ns, ego: EgoMotionConfig | None = None,
                    gating: GatingConfig | None = None) -> EgoPairs:
    """Select source frames and their metric poses for the frames ``stamps_ns`` of the bag ``path``.

    Args:
        stamps_ns: (N,) image header stamps of the loaded frames (``BagFrames.stamps``); a
            selected source frame outside them is skipped.
        ego / gating: provider and selector configuration (as ``mono-depth adapt``).
    Raises:
        ValueError: no camera frame could be given a pose, with the reasons (no motion
            topics, no /tf_static chain to the camera frame, standing still, ...).
    """
    from ..bagio import iter_messages

    bag = Path(path)
    index = {int(s): i for i, s in enumerate(np.asarray(stamps_ns, dtype=np.int64))}
    feed = EgoMotionFeed(ego, gating)
    n_dir = len(feed.selector.config.directions)
    pending: list[int] = []
    rows: list[tuple[int, tuple[int, ...], np.ndarray, str]] = []
    dropped: Counter = Counter()
    topics = [Topics.BAG_IMAGE, *feed.bag_handlers()]
    images = 0

    def resolve(final: bool) -> None:
        keep = []
        for t in pending:
            sel = feed.selector.select(t)
            if sel.ok:
                src = tuple(index.get(int(s), -1) for s in sel.source_stamps_ns)
                if min(src) < 0:
                    dropped["source frame not loaded"] += 1
                    continue
                T = np.stack([np.linalg.inv(p.T_target_source) for p in sel.poses])
                rows.append((index[t], src, T, sel.poses[0].source or ""))
            elif sel.status is PoseStatus.NOT_YET and not final:
                keep.append(t)
            else:
                dropped[_short(sel.reason) or "no pose"] += 1
        pending[:] = keep

    dispatch = feed.bag_handlers()
    for topic, _, msg in iter_messages(bag, topics):
        if topic != Topics.BAG_IMAGE:
            dispatch[topic](msg)
            continue
        images += 1
        stamp = stamp_to_ns(msg.header.stamp)
        if not feed.offer_frame(stamp, msg.header.frame_id):
            dropped["camera extrinsics unknown (no /tf_static chain to the camera frame)"] += 1
            continue
        if stamp in index:
            pending.append(stamp)
        resolve(final=False)
    resolve(final=True)
    stats = feed.egomotion_stats()
    if not rows:
        why = ", ".join(f"{k}: {v}" for k, v in dropped.most_common(4)) or "no frames"
        raise ValueError(f"{bag}: no training frame got an ego-motion pose from sources "
                         f"{','.join(feed.provider.config.priority)} ({images} images; {why}). Record "
                         f"{Topics.BAG_ODOM}, {Topics.BAG_TF} or {Topics.BAG_IMU}+{Topics.BAG_GPS} with "
                         f"{Topics.BAG_TF_STATIC}, or train synthetic bags with --poses ground-truth")
    rows.sort(key=lambda r: r[0])
    return EgoPairs(np.array([r[0] for r in rows], dtype=np.int64),
                    np.array([r[1] for r in rows], dtype=np.int64).reshape(len(rows), n_dir),
                    np.stack([r[2] for r in rows]), tuple(r[3] for r in rows), dict(dropped), stats)
