"""Frames from rosbags (synthetic drives) as in-memory arrays, plus batch samplers.

A bag is read once (topics from :class:`mono_depth_ros.conventions.Topics`:
``BAG_IMAGE`` rgb8, ``BAG_CAMERA_INFO``, ``BAG_DEPTH_GT`` 32FC1 with +inf sky,
``BAG_POSE_GT`` PoseStamped = T_map_cameraoptical, ``BAG_DYNAMIC_MASK_GT`` mono8 where the
synthetic world records its moving objects), matched by header stamp,
optionally resized, and cached as an ``.npz`` keyed by the bag's path, size
and mtime so later runs skip decoding.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..conventions import Topics, scale_intrinsics, stereo_baseline_from_P
from ..geometry import stereo_T_source_target
from ..msgconv import camera_info_to_K, depth_image_to_metres, image_to_rgb, pose_to_matrix, stamp_to_ns
from ..preprocess import resize_depth, resize_rgb_batch, to_tensor

__all__ = ["BagFrames", "load_bag", "SupervisedSampler", "SelfSupervisedSampler",
           "color_augment"]

CACHE_VERSION = 3


@dataclass(frozen=True)
class BagFrames:
    """Frames of one drive.

    Attributes:
        images: (N,H,W,3) uint8 RGB.
        depths: (N,H,W) float16 metres (+inf = sky / no return) or None.
        T_map_camera: (N,4,4) float64 optical-frame poses or None.
        K: (3,3) float64 pixel intrinsics at (H, W).
        stamps: (N,) int64 nanoseconds.
        source: the bag path.
        right_images: (N,H,W,3) uint8 rectified right-camera images or None.
        baseline: stereo baseline in metres (from the right CameraInfo's P) or None.
        dynamic_masks: (N,H,W) bool ground-truth mask of independently moving objects (the synthetic
            world's ``BAG_DYNAMIC_MASK_GT``) or None.
    """

    images: np.ndarray
    depths: np.ndarray | None
    T_map_camera: np.ndarray | None
    K: np.ndarray
    stamps: np.ndarray
    source: str
    right_images: np.ndarray | None = None
    baseline: float | None = None
    dynamic_masks: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.images.shape[1]), int(self.images.shape[2])


def _stamp(msg) -> int:
    return stamp_to_ns(msg.header.stamp)


def _cache_file(cache_dir: Path, bag: Path, size: tuple[int, int] | None, hfov_deg: float | None = None) -> Path:
    st_files = sorted(bag.glob("*")) if bag.is_dir() else [bag]
    sig = [str(bag.resolve()), str(size), str(CACHE_VERSION)] + ([] if hfov_deg is None else [f"hfov={hfov_deg!r}"])
    sig += [f"{p.name}:{p.stat().st_size}:{int(p.stat().st_mtime)}" for p in st_files if p.is_file()]
    digest = hashlib.sha1("|".join(sig).encode()).hexdigest()[:16]
    return cache_dir / f"{bag.name}_{digest}.npz"


def _resize(images: np.ndarray, depths: np.ndarray | None, K: np.ndarray, size: tuple[int, int]):
    H, W = size
    h0, w0 = images.shape[1:3]
    if (H, W) == (h0, w0):
        return images, depths, K
    images = resize_rgb_batch(images, size)
    if depths is not None:
        # Nearest keeps depth edges and +inf sky exact (no averaging across edges).
        depths = np.stack([resize_depth(d.astype(np.float32), size) for d in depths]).astype(np.float16)
    return images, depths, scale_intrinsics(K, W / w0, H / h0)


def load_bag(path: str | os.PathLike, size: tuple[int, int] | None = None, need_depth: bool = False,
             need_pose: bool = False, cache_dir: str | os.PathLike | None = None,
             max_frames: int | None = None, hfov_deg: float | None = None) -> BagFrames:
    """Read a drive's frames from a bag (cached).

    Args:
        size: (H, W) to resize to (K scaled accordingly), or None for the bag's size.
        need_depth / need_pose: raise if the bag lacks GT depth / GT poses.
        cache_dir: where to keep decoded ``.npz`` caches (None: no cache).
        max_frames: read at most this many frames (not cached).
        hfov_deg: K guessed from this horizontal field of view at the bag's image size (square pixels,
            principal point at the centre: :func:`~mono_depth_ros.adapt.intrinsics.K_from_hfov`) instead of
            the camera_info, which may then be absent (``mono-depth train --intrinsics estimate``).
    Raises:
        ValueError: missing topics or no camera info.
    """
    from ..bagio import iter_messages

    bag = Path(path)
    cache = None
    if cache_dir is not None and max_frames is None:
        cache = _cache_file(Path(cache_dir), bag, size, hfov_deg)
        if cache.is_file():
            z = np.load(cache, allow_pickle=False)
            frames = BagFrames(z["images"], z["depths"] if z["depths"].size else None,
                               z["poses"] if z["poses"].size else None, z["K"], z["stamps"], str(bag),
                               z["right"] if z["right"].size else None,
                               float(z["baseline"]) if np.isfinite(z["baseline"]) else None,
                               z["dynamic"] if z["dynamic"].size else None)
            _check_needs(frames, need_depth, need_pose)
            return frames
    images: dict[int, np.ndarray] = {}
    depths: dict[int, np.ndarray] = {}
    poses: dict[int, np.ndarray] = {}
    rights: dict[int, np.ndarray] = {}
    dynamic: dict[int, np.ndarray] = {}
    K = None
    baseline = None
    topics = [Topics.BAG_IMAGE, Topics.BAG_CAMERA_INFO, Topics.BAG_DEPTH_GT, Topics.BAG_POSE_GT,
              Topics.BAG_RIGHT_IMAGE, Topics.BAG_RIGHT_CAMERA_INFO, Topics.BAG_DYNAMIC_MASK_GT]
    for topic, _, msg in iter_messages(bag, topics):
        if topic == Topics.BAG_IMAGE:
            if max_frames is not None and len(images) >= max_frames:
                break
            images[_stamp(msg)] = image_to_rgb(msg)
        elif topic == Topics.BAG_DEPTH_GT:
            depths[_stamp(msg)] = depth_image_to_metres(msg).astype(np.float16)
        elif topic == Topics.BAG_POSE_GT:
            poses[_stamp(msg)] = pose_to_matrix(msg.pose)
        elif topic == Topics.BAG_CAMERA_INFO and K is None:
            K = camera_info_to_K(msg)
        elif topic == Topics.BAG_RIGHT_IMAGE:
            rights[_stamp(msg)] = image_to_rgb(msg)
        elif topic == Topics.BAG_DYNAMIC_MASK_GT:
            dynamic[_stamp(msg)] = image_to_rgb(msg)[..., 0] > 127   # mono8 0 / 255
        elif topic == Topics.BAG_RIGHT_CAMERA_INFO and baseline is None:
            baseline = stereo_baseline_from_P(msg.p)
    if not images:
        raise ValueError(f"{bag}: no images on {Topics.BAG_IMAGE}")
    if hfov_deg is not None:
        from ..adapt.intrinsics import K_from_hfov
        h0, w0 = next(iter(images.values())).shape[:2]
        K = K_from_hfov(w0, h0, hfov_deg)
    if K is None:
        raise ValueError(f"{bag}: no camera info on {Topics.BAG_CAMERA_INFO}")
    stamps = sorted(images)
    if need_depth:
        stamps = [s for s in stamps if s in depths]
    if need_pose:
        stamps = [s for s in stamps if s in poses]
    if not stamps:   # no image has the ground truth asked for
        _check_needs(BagFrames(np.zeros((0, 1, 1, 3), np.uint8), None, None, K, np.zeros(0, np.int64), str(bag)),
                     need_depth, need_pose)
    img = np.stack([images[s] for s in stamps])
    dep = np.stack([depths[s] for s in stamps]) if depths and all(s in depths for s in stamps) else None
    pos = np.stack([poses[s] for s in stamps]) if poses and all(s in poses for s in stamps) else None
    right = np.stack([rights[s] for s in stamps]) if rights and all(s in rights for s in stamps) else None
    dyn = np.stack([dynamic[s] for s in stamps]) if dynamic and all(s in dynamic for s in stamps) else None
    if size is not None:
        if right is not None and tuple(size) != right.shape[1:3]:
            right = resize_rgb_batch(right, size)
        if dyn is not None and tuple(size) != dyn.shape[1:3]:   # nearest, as the depth
            dyn = np.stack([resize_depth(m.astype(np.float32), size) > 0.5 for m in dyn])
        img, dep, K = _resize(img, dep, K, size)
    frames = BagFrames(img, dep, pos, K, np.asarray(stamps, dtype=np.int64), str(bag), right,
                       baseline if right is not None else None, dyn)
    _check_needs(frames, need_depth, need_pose)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez(tmp, images=img, depths=dep if dep is not None else np.zeros(0, np.float16),
                 poses=pos if pos is not None else np.zeros(0), K=K, stamps=frames.stamps,
                 right=right if right is not None else np.zeros(0, np.uint8),
                 baseline=np.float64(frames.baseline if frames.baseline is not None else np.nan),
                 dynamic=dyn if dyn is not None else np.zeros(0, bool))
        os.replace(tmp, cache)
    return frames


def _check_needs(frames: BagFrames, need_depth: bool, need_pose: bool) -> None:
    if need_depth and frames.depths is None:
        raise ValueError(f"{frames.source}: no ground-truth depth on {Topics.BAG_DEPTH_GT}")
    if need_pose and frames.T_map_camera is None:
        raise ValueError(f"{frames.source}: no ground-truth poses on {Topics.BAG_POSE_GT}")


def color_augment(images: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random brightness, contrast, saturation and gamma per image (monodepth2-like ranges).

    Args:
        images: (B,3,H,W) in [0,1]. Returns the same shape, clamped to [0,1].
    """
    B = images.shape[0]
    u = lambda lo, hi: torch.rand(B, 1, 1, 1, generator=gen) * (hi - lo) + lo
    x = images * u(0.8, 1.2)
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * u(0.8, 1.2) + mean
    gray = x.mean(1, keepdim=True)
    x = (x - gray) * u(0.8, 1.2) + gray
    x = x.clamp(0, 1) ** u(0.85, 1.15)
    return x.clamp(0, 1)


class SupervisedSampler:
    """Random batches (image (B,3,H,W), gt depth (B,1,H,W) with +inf sky) over several drives.

    ``shard=(rank, world)`` keeps every ``world``-th frame from ``rank`` (distributed training)."""

    def __init__(self, drives: Sequence[BagFrames], batch_size: int, seed: int = 0, augment: bool = True,
                 shard: tuple[int, int] = (0, 1)):
        if not drives:
            raise ValueError("no drives")
        for d in drives:
            _check_needs(d, True, False)
        self.drives = list(drives)
        self.batch_size = int(batch_size)
        self.augment = augment
        self.index = np.array([(i, k) for i, d in enumerate(self.drives) for k in range(len(d))])
        rank, world = shard
        if world > 1:   # frames of the drives split across ranks (distributed training)
            self.index = self.index[rank::world]
            if len(self.index) == 0:
                raise ValueError(f"rank {rank} of {world} got no training frames (too few frames)")
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.index)

    def sample(self) -> tuple[torch.Tensor, torch.Tensor]:
        pick = self.index[self.rng.integers(0, len(self.index), self.batch_size)]
        imgs = np.stack([self.drives[i].images[k] for i, k in pick])
        deps = np.stack([self.drives[i].depths[k] for i, k in pick]).astype(np.float32)
        x = to_tensor(imgs)
        d = torch.from_numpy(deps)[:, None]
        if self.augment:
            flip = torch.rand(self.batch_size, generator=self.gen) < 0.5
            x[flip] = x[flip].flip(-1)
            d[flip] = d[flip].flip(-1)
            x = color_augment(x, self.gen)
        return x, d


class SelfSupervisedSampler:
    """Random (target, sources [prev, next(, right)], T_source_target, K) batches.

    Poses come from ``pairs`` (one :class:`~mono_depth_ros.learning.egoposes.EgoPairs`
    per drive: source frames chosen by motion, poses from the ego-motion provider),
    or, without ``pairs``, from the drives' ground-truth poses with sources at
    target +/- ``frame_gap``. Either way
    ``T_source_target = inv(T_map_cam_source) @ T_map_cam_target``. With
    ``stereo``, the right image is a third source with the known
    ``T_right_left`` of the rectified pair. Horizontal flips mirror the images,
    the poses (S T S with S = diag(-1,1,1,1)) and cx; ``last_flip`` ((B,) bool) says which
    rows of the last batch were mirrored. ``shard=(rank, world)`` keeps
    every ``world``-th training tuple from ``rank`` (distributed training).
    """

    def __init__(self, drives: Sequence[BagFrames], batch_size: int, frame_gap: int = 1, seed: int = 0,
                 augment: bool = True, stereo: bool = False, pairs: Sequence | None = None,
                 shard: tuple[int, int] = (0, 1)):
        if not drives:
            raise ValueError("no drives")
        if pairs is not None and len(pairs) != len(drives):
            raise ValueError(f"one EgoPairs per drive needed, got {len(pairs)} for {len(drives)} drives")
        for d in drives:
            if pairs is None:
                _check_needs(d, False, True)
            if stereo and (d.right_images is None or d.baseline is None):
                raise ValueError(f"{d.source}: no right camera ({Topics.BAG_RIGHT_IMAGE} + "
                                 f"{Topics.BAG_RIGHT_CAMERA_INFO}) for stereo training")
        self.stereo = bool(stereo)
        self.drives = list(drives)
        self.batch_size = int(batch_size)
        self.gap = int(frame_gap)
        self.augment = augment
        # Rows (drive, target, source_0, source_1); poses[(drive, row)] from pairs or ground truth.
        if pairs is None:
            self.pairs = None
            self.index = np.array([(i, k, k - self.gap, k + self.gap) for i, d in enumerate(self.drives)
                                   for k in range(self.gap, len(d) - self.gap)], dtype=np.int64).reshape(-1, 4)
            if len(self.index) == 0:
                raise ValueError("drives too short for the frame gap")
        else:
            self.pairs = list(pairs)
            rows = [(i, p.target[r], *p.sources[r], r) for i, p in enumerate(self.pairs) for r in range(len(p))]
            if rows and any(p.sources.shape[1] != 2 for p in self.pairs):
                raise ValueError("ego-motion pairs need an earlier and a later source frame (directions -1, 1)")
            self.index = np.array(rows, dtype=np.int64).reshape(-1, 5)
            if len(self.index) == 0:
                raise ValueError("no frame of the drives has ego-motion poses")
        rank, world = shard
        if not 0 <= rank < world:
            raise ValueError(f"shard rank {rank} out of range for world size {world}")
        if world > 1:   # frames of the drives split across ranks (distributed training)
            self.index = self.index[rank::world]
            if len(self.index) == 0:
                raise ValueError(f"rank {rank} of {world} got no training frames (too few frames)")
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.index)

    def sample(self) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
        rows = self.index[self.rng.integers(0, len(self.index), self.batch_size)]
        pick = rows[:, :2]
        tgt = to_tensor(np.stack([self.drives[i].images[k] for i, k in pick]))
        sources, poses = [], []
        for j in range(2):
            sources.append(to_tensor(np.stack([self.drives[r[0]].images[r[2 + j]] for r in rows])))
            if self.pairs is None:
                T = np.stack([np.linalg.inv(self.drives[r[0]].T_map_camera[r[2 + j]])
                              @ self.drives[r[0]].T_map_camera[r[1]] for r in rows])
            else:
                T = np.stack([self.pairs[r[0]].T_source_target[r[4], j] for r in rows])
            poses.append(torch.from_numpy(T).float())
        if self.stereo:
            sources.append(to_tensor(np.stack([self.drives[i].right_images[k] for i, k in pick])))
            poses.append(stereo_T_source_target(torch.tensor([self.drives[i].baseline for i, _ in pick]),
                                                self.batch_size))   # T_right_left
        K = torch.from_numpy(np.stack([self.drives[i].K for i, _ in pick])).float()
        self.last_flip = torch.zeros(self.batch_size, dtype=torch.bool)
        if self.augment:
            W = tgt.shape[-1]
            flip = torch.rand(self.batch_size, generator=self.gen) < 0.5
            self.last_flip = flip
            S = torch.diag(torch.tensor([-1.0, 1.0, 1.0, 1.0]))
            tgt[flip] = tgt[flip].flip(-1)
            for j in range(len(sources)):
                sources[j][flip] = sources[j][flip].flip(-1)
                poses[j][flip] = S @ poses[j][flip] @ S
            K[flip, 0, 2] = W - 1 - K[flip, 0, 2]
            # Same colour change for target and its sources (photometric consistency).
            state = self.gen.get_state()
            tgt = color_augment(tgt, self.gen)
            for j in range(len(sources)):
                self.gen.set_state(state)
                sources[j] = color_augment(sources[j], self.gen)
        return tgt, sources, poses, K
