"""Relative -> metric depth online: the scale (and shift) of a relative network from metric ego-motion.

A relative network (monocular monodepth2: depth up to one scale; Depth Anything V2
relative: disparity up to scale AND shift) gives the right shapes but no metres.
The camera's metric motion does: warping the previous frame into the current one
with depth ``s * d`` and the known pose ``T_source_target`` reproduces the
current image only at the true ``s``. Per frame pair:

1. both images and the relative output are shrunk to a small size (160x48 by default);
2. a log-spaced grid of candidate scales (median depth 0.5 .. 250 m) is scored in one
   batch: monodepth2's photometric error (0.85 SSIM + 0.15 L1) per pixel, capped by the
   error of not warping at all (auto-masking: pixels the motion does not explain, or
   that do not move, weigh the same for every candidate), mean over pixels;
3. the best grid point is refined (bounded 1-D search, or Nelder-Mead over scale and
   shift for affine-invariant disparity);
4. a guard rejects flat or ambiguous minima (the dip below the no-motion cost is too
   shallow, the minimum is on the grid's edge, or a second, distant minimum is as deep);
5. accepted estimates enter a running median in log-scale over the last ``window`` frames;
   its standard error is the uncertainty.

:class:`MetricScaleEstimator` does 1-5 for one frame pair (no ROS, no threads);
:class:`OnlineMetricScale` keeps the recent frames, asks an
:class:`~mono_depth_ros.egomotion.provider.EgoMotionProvider` (through a
:class:`~mono_depth_ros.egomotion.selector.FrameSelector` of its own, earlier frames
only) for the metric pose to an earlier frame that moved enough, and applies the
current estimate to depth maps.

Output kinds (``models.base.OUTPUT_KINDS``): ``relative_scale`` -> ``depth = s * d``;
``relative_affine_disparity`` -> ``depth = 1 / (a / d + b)`` with ``d`` the network's
clamped ``1/disparity`` (so ``1/d`` is its disparity), ``a = 1/s`` and ``b`` the shift
in 1/m; ``metric`` -> a scale correction like ``relative_scale`` (``metric_scale: online``).
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from mono_depth_ros.conventions import scale_intrinsics
from mono_depth_ros.geometry import PinholeCamera, check_shape, warp
from mono_depth_ros.losses import photometric_error
from mono_depth_ros.preprocess import resize_rgb, to_tensor

__all__ = ["MetricScaleConfig", "ScaleEstimate", "MetricScaleEstimator", "RunningLogScale", "OnlineMetricScale",
           "apply_scale_shift", "MODES", "wants_online_scale"]

#: Node parameter ``metric_scale``: auto = online for relative networks only; online = always
#: (also corrects a metric network's scale); off = never.
MODES = ("auto", "online", "off")


def wants_online_scale(mode: str, output_kind: str) -> bool:
    """Whether depth of a network with ``output_kind`` gets an online scale under ``mode``.

    >>> wants_online_scale("auto", "relative_scale"), wants_online_scale("auto", "metric")
    (True, False)
    """
    if mode not in MODES:
        raise ValueError(f"metric_scale must be one of {MODES}, got {mode!r}")
    return mode == "online" or (mode == "auto" and output_kind != "metric")


@dataclass(frozen=True)
class MetricScaleConfig:
    """Settings of the online scale estimate (defaults measured on synthetic domain A).

    Attributes:
        width, height: size the images and relative depth are shrunk to for the search.
        median_depth_range: (m) the grid spans scales that put the median depth in this range.
        grid: number of log-spaced candidate scales.
        shift_grid: candidate shifts (relative to the median metric disparity) for
            affine-invariant disparity; 1-D scale search alone otherwise.
        min_dip: guard: the best cost must lie at least this fraction below the no-motion cost.
        max_second_ratio: guard: a second minimum farther than ``second_min_log`` (log-scale)
            whose dip is at least this fraction of the best one's makes the frame ambiguous.
        second_min_log: distance in log-scale beyond which another minimum counts as a second one.
        min_translation_m, max_rotation_rad, max_time_gap_s: frame pairs the scale is measured on.
        window: accepted per-frame estimates in the running median.
        min_frames: estimates needed before the scale is applied.
        max_depth: depth of pixels whose metric disparity is <= 0 (affine disparity only).
    """

    width: int = 160
    height: int = 48
    median_depth_range: tuple[float, float] = (0.5, 250.0)
    grid: int = 64
    shift_grid: tuple[float, ...] = (-0.5, -0.25, 0.0, 0.25, 0.5)
    min_dip: float = 0.03
    max_second_ratio: float = 0.8
    second_min_log: float = 0.5
    min_translation_m: float = 0.3
    max_rotation_rad: float = math.radians(15.0)
    max_time_gap_s: float = 1.0
    window: int = 30
    min_frames: int = 3
    max_depth: float = 1000.0

    def __post_init__(self):
        lo, hi = self.median_depth_range
        if not (0 < lo < hi) or self.grid < 8 or self.width < 16 or self.height < 8 or self.window < 1:
            raise ValueError(f"invalid MetricScaleConfig {self}")


@dataclass(frozen=True)
class ScaleEstimate:
    """One frame pair's result.

    Attributes:
        ok: accepted by the guard.
        scale: metric depth = scale * relative depth (for affine disparity: 1/a).
        shift: metric disparity shift b (1/m); 0 for scale-only outputs.
        cost: photometric cost at the optimum; ``cost_identity``: the no-motion cost.
        dip: (cost_identity - cost) / cost_identity.
        reason: why it was rejected ("" when ok).
    """

    ok: bool
    scale: float
    shift: float = 0.0
    cost: float = float("nan")
    cost_identity: float = float("nan")
    dip: float = 0.0
    reason: str = ""


def apply_scale_shift(depth: np.ndarray, scale: float, shift: float, output_kind: str,
                      max_depth: float = 1000.0) -> np.ndarray:
    """Relative network output -> metric depth.

    Args:
        depth: (H,W) float32 network output (relative depth, or 1/disparity clamped).
        scale, shift: see :class:`ScaleEstimate`.
        output_kind: ``relative_affine_disparity`` uses ``1/(a/d + b)``, anything else ``scale * d``.
        max_depth: depth where the metric disparity is <= 1/max_depth.
    Returns:
        (H,W) float32 metres.
    """
    if output_kind != "relative_affine_disparity" or shift == 0.0:
        return (depth * np.float32(scale)).astype(np.float32, copy=False)
    disp = np.float32(1.0 / scale) / np.maximum(depth, 1e-6) + np.float32(shift)
    return (1.0 / np.maximum(disp, np.float32(1.0 / max_depth))).astype(np.float32)


class MetricScaleEstimator:
    """Scale (and shift) of a relative depth map from one frame pair with a metric pose.

    Stateless between calls; see the module docstring for the method.
    """

    def __init__(self, config: MetricScaleConfig | None = None):
        self.config = config or MetricScaleConfig()
        self._cams: dict = {}

    # ------------------------------------------------------------ helpers
    def _camera(self, K: np.ndarray, H: int, W: int) -> PinholeCamera:
        key = (H, W, tuple(np.round(np.asarray(K, np.float64).ravel(), 6)))
        cam = self._cams.get(key)
        if cam is None:
            self._cams.clear()  # one camera at a time
            cam = self._cams[key] = PinholeCamera(torch.as_tensor(np.asarray(K), dtype=torch.float32), H, W)
        return cam

    def shrink(self, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray
               ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        """(H,W,3) uint8 + (H,W) relative depth + (3,3) K -> (1,3,h,w) [0,1], (1,1,h,w), K at (h, w)."""
        c = self.config
        H, W = rgb.shape[:2]
        if depth.shape != (H, W):
            raise ValueError(f"depth {depth.shape} and image {rgb.shape[:2]} differ in size")
        small = resize_rgb(rgb, (c.height, c.width))
        # Shrink disparity, not depth: an area average of depth is dominated by far pixels.
        disp = cv2.resize(1.0 / np.maximum(depth.astype(np.float32), 1e-6), (c.width, c.height),
                          interpolation=cv2.INTER_AREA)
        img = to_tensor(small)
        d = torch.from_numpy(1.0 / np.maximum(disp, 1e-9)).reshape(1, 1, c.height, c.width)
        return img, d, scale_intrinsics(K, c.width / W, c.height / H)

    def costs(self, target: torch.Tensor, source: torch.Tensor, depths: torch.Tensor, T_source_target: np.ndarray,
              cam: PinholeCamera) -> torch.Tensor:
        """Photometric cost of each candidate depth map, auto-masked.

        Args:
            target, source: (1,3,h,w) images in [0,1].
            depths: (N,1,h,w) candidate metric depths of the target.
            T_source_target: (4,4) metric pose, target camera -> source camera.
            cam: intrinsics at (h, w).
        Returns:
            (N,) mean over pixels of min(warp error, no-motion error); invalid pixels
            count as the no-motion error.
        """
        check_shape(target, "target", ["1", "3", "H", "W"])
        b = check_shape(depths, "depths", ["N", "1", "H", "W"], dict(H=target.shape[2], W=target.shape[3]))
        N = b["N"]
        T = torch.as_tensor(np.asarray(T_source_target), dtype=torch.float32).expand(N, 4, 4)
        warped, valid = warp(source.expand(N, -1, -1, -1), depths, T, cam)   # the package's one view synthesis
        inside = valid > 0
        err = photometric_error(warped, target.expand(N, -1, -1, -1))
        ident = photometric_error(source, target)               # (1,1,h,w)
        err = torch.where(inside, torch.minimum(err, ident), ident)
        return err.mean(dim=(1, 2, 3))

    # ----------------------------------------------------------- estimate
    @torch.inference_mode()
    def estimate(self, target_rgb: np.ndarray, target_depth: np.ndarray, source_rgb: np.ndarray,
                 T_source_target: np.ndarray, K: np.ndarray, affine: bool = False) -> ScaleEstimate:
        """Best scale (and shift) of ``target_depth`` from one frame pair.

        Args:
            target_rgb, source_rgb: (H,W,3) uint8, same size.
            target_depth: (H,W) relative network output of the target (positive).
            T_source_target: (4,4) metric pose, target camera optical frame -> source's.
            K: (3,3) intrinsics of the (H,W) images.
            affine: also estimate a disparity shift (``relative_affine_disparity`` outputs).
        Returns:
            :class:`ScaleEstimate` (``ok`` False when the guard rejects it).
        """
        tgt, d, Ks = self.shrink(target_rgb, target_depth, K)
        src = self.shrink(source_rgb, np.ones(source_rgb.shape[:2], np.float32), K)[0]
        return self.estimate_small(tgt, d, src, T_source_target, Ks, affine)

    @torch.inference_mode()
    def estimate_small(self, tgt: torch.Tensor, d: torch.Tensor, src: torch.Tensor, T_source_target: np.ndarray,
                       Ks: np.ndarray, affine: bool = False) -> ScaleEstimate:
        """:meth:`estimate` on inputs already shrunk by :meth:`shrink`.

        Args:
            tgt, src: (1,3,h,w) images in [0,1]; d: (1,1,h,w) relative depth of ``tgt``;
            Ks: (3,3) K at (h, w) = the config's size.
        """
        c = self.config
        cam = self._camera(Ks, c.height, c.width)
        T = np.asarray(T_source_target, np.float64)
        if float(np.linalg.norm(T[:3, 3])) < 1e-3:
            return ScaleEstimate(False, float("nan"), reason="no motion")
        med = float(torch.median(d))
        if not math.isfinite(med) or med <= 0:
            return ScaleEstimate(False, float("nan"), reason="relative depth not positive")
        lo, hi = c.median_depth_range
        logs = torch.linspace(math.log(lo / med), math.log(hi / med), c.grid, dtype=torch.float64)
        disp = 1.0 / d                                          # relative disparity (1,1,h,w)
        med_disp = float(torch.median(disp))

        def depths_for(params: torch.Tensor) -> torch.Tensor:
            """(N,2) [log s, beta] -> (N,1,h,w); beta = shift / median metric disparity."""
            s = torch.exp(params[:, 0]).float().reshape(-1, 1, 1, 1)
            if not affine:
                return s * d
            a = 1.0 / s
            shift = params[:, 1].float().reshape(-1, 1, 1, 1) * a * med_disp
            return 1.0 / (a * disp + shift).clamp(min=1.0 / c.max_depth)

        ident = float(photometric_error(src, tgt).mean())
        if affine:
            betas = torch.tensor(c.shift_grid, dtype=torch.float64)
            params = torch.cartesian_prod(logs, betas)
        else:
            params = torch.stack([logs, torch.zeros_like(logs)], 1)
        cost = torch.cat([self.costs(tgt, src, depths_for(chunk), T, cam)   # chunks stay in the caches
                          for chunk in params.split(64)]).double()
        if not torch.isfinite(cost).all():
            return ScaleEstimate(False, float("nan"), reason="non-finite cost")
        # Along the scale axis: the best shift for each scale.
        profile = cost.reshape(len(logs), -1).min(dim=1).values if affine else cost
        i = int(torch.argmin(profile))
        best = float(profile[i])
        dip = (ident - best) / max(ident, 1e-12)
        if dip < c.min_dip:
            return ScaleEstimate(False, float("nan"), cost=best, cost_identity=ident, dip=dip,
                                 reason=f"flat minimum (dip {dip:.3f} < {c.min_dip})")
        if i == 0 or i == len(logs) - 1:
            return ScaleEstimate(False, float("nan"), cost=best, cost_identity=ident, dip=dip,
                                 reason="minimum at the edge of the search range")
        # Ambiguity: another local minimum far away whose dip is nearly as deep.
        prof = profile.numpy()
        local = [j for j in range(1, len(prof) - 1) if prof[j] <= prof[j - 1] and prof[j] <= prof[j + 1]]
        far = [j for j in local if abs(float(logs[j] - logs[i])) > c.second_min_log]
        if far and not affine:  # with a shift, scale and shift trade off along a valley: no second-minimum test
            j = min(far, key=lambda k: prof[k])
            if (ident - prof[j]) >= c.max_second_ratio * (ident - best):
                return ScaleEstimate(False, float("nan"), cost=best, cost_identity=ident, dip=dip,
                                     reason=f"ambiguous: minima at scale {math.exp(logs[i]):.3g} and "
                                            f"{math.exp(logs[j]):.3g}")
        step = float(logs[1] - logs[0])
        if affine:
            x0 = params[int(torch.argmin(cost))].numpy()
            x, fbest = self._refine_2d(lambda p: float(self.costs(tgt, src, depths_for(
                torch.as_tensor(p, dtype=torch.float64).reshape(1, 2)), T, cam)[0]), x0, step)
            s = math.exp(x[0])
            shift = float(x[1]) * med_disp / s
        else:
            x, fbest = self._refine_1d(lambda ls: float(self.costs(tgt, src, depths_for(
                torch.tensor([[ls, 0.0]], dtype=torch.float64)), T, cam)[0]), float(logs[i]), step)
            s, shift = math.exp(x), 0.0
        return ScaleEstimate(True, s, shift, fbest, ident, (ident - fbest) / max(ident, 1e-12))

    @staticmethod
    def _refine_1d(f, x0: float, step: float) -> tuple[float, float]:
        """Bounded scalar minimisation (scipy, Brent) within one grid step of ``x0``."""
        from scipy.optimize import minimize_scalar
        r = minimize_scalar(f, bounds=(x0 - step, x0 + step), method="bounded",
                            options={"xatol": 2e-3, "maxiter": 20})
        f0 = f(x0)
        return (float(r.x), float(r.fun)) if r.fun <= f0 else (x0, f0)

    @staticmethod
    def _refine_2d(f, x0: np.ndarray, step: float) -> tuple[np.ndarray, float]:
        """Nelder-Mead over (log scale, relative shift) from the best grid point (scipy)."""
        from scipy.optimize import minimize
        simplex = np.array([x0, x0 + [step, 0.0], x0 + [0.0, 0.125]], dtype=np.float64)
        r = minimize(f, x0, method="Nelder-Mead",
                     options={"initial_simplex": simplex, "xatol": 2e-3, "fatol": 1e-6, "maxfev": 60})
        f0 = f(x0)
        return (np.asarray(r.x), float(r.fun)) if r.fun <= f0 else (np.asarray(x0), f0)


class RunningLogScale:
    """Robust running estimate: median of the last ``window`` accepted log-scales (and shifts).

    ``std`` is the standard error of that median (1.2533 * 1.4826 * MAD / sqrt(n)), in the
    same relative units as the scale (a std of 0.02 means +-2 %).
    """

    def __init__(self, window: int = 30):
        self._log: deque[float] = deque(maxlen=window)
        self._shift: deque[float] = deque(maxlen=window)
        self.accepted = 0

    def add(self, scale: float, shift: float = 0.0) -> None:
        self._log.append(math.log(scale))
        self._shift.append(float(shift))
        self.accepted += 1

    def __len__(self) -> int:
        return len(self._log)

    @property
    def scale(self) -> float:
        return math.exp(float(np.median(self._log))) if self._log else float("nan")

    @property
    def shift(self) -> float:
        return float(np.median(self._shift)) if self._shift else 0.0

    @property
    def std(self) -> float:
        """Relative standard error of :attr:`scale`; nan with fewer than 2 estimates."""
        n = len(self._log)
        if n < 2:
            return float("nan")
        x = np.asarray(self._log)
        mad = float(np.median(np.abs(x - np.median(x))))
        return 1.2533 * 1.4826 * mad / math.sqrt(n)


@dataclass
class _Counters:
    frames: int = 0
    accepted: int = 0
    rejected: int = 0
    no_pose: int = 0
    last_reason: str = "waiting for frames"
    reasons: dict = field(default_factory=dict)


class OnlineMetricScale:
    """Frames in (network size: image, relative output, K), current scale/shift out.

    Threads: :meth:`on_frame` and :meth:`apply` run on the caller's one inference thread;
    :meth:`stats` may run on any thread (a lock guards the running estimate and counters).
    The ego-motion ``provider`` is shared and thread-safe; the selector here is this
    object's own (earlier frames only: the current frame is the target, so no waiting for
    later frames).

    Args:
        provider: :class:`~mono_depth_ros.egomotion.provider.EgoMotionProvider` with the
            camera extrinsics set (its ``T_target_source`` are camera optical frame poses).
        output_kind: the network's (``models.base.OUTPUT_KINDS``).
        config: :class:`MetricScaleConfig`.
    """

    def __init__(self, provider, output_kind: str, config: MetricScaleConfig | None = None):
        from mono_depth_ros.egomotion.selector import FrameSelector, GatingConfig
        self.config = config or MetricScaleConfig()
        c = self.config
        self.output_kind = output_kind
        self.affine = output_kind == "relative_affine_disparity"
        self.provider = provider
        self.selector = FrameSelector(provider, GatingConfig(
            min_translation_m=c.min_translation_m, max_rotation_rad=c.max_rotation_rad,
            max_time_gap_s=c.max_time_gap_s, directions=(-1,), history_s=max(2.0, 2 * c.max_time_gap_s)))
        self.estimator = MetricScaleEstimator(c)
        self.running = RunningLogScale(c.window)
        self._frames: OrderedDict[int, tuple] = OrderedDict()   # stamp -> (rgb, depth, K)
        self._pending: deque[int] = deque(maxlen=3)               # targets whose pose was NOT_YET
        self._epoch = provider.epoch
        self._lock = threading.Lock()
        self.counters = _Counters()

    @property
    def ready(self) -> bool:
        """Whether enough estimates were accepted to apply the scale."""
        with self._lock:
            return len(self.running) >= self.config.min_frames

    def current(self) -> tuple[float, float] | None:
        """(scale, shift) to apply now, or None before ``min_frames`` estimates."""
        with self._lock:
            if len(self.running) < self.config.min_frames:
                return None
            return self.running.scale, self.running.shift

    def apply(self, depth: np.ndarray) -> np.ndarray | None:
        """(H,W) relative output -> (H,W) metric depth with the current estimate; None before one exists."""
        cur = self.current()
        if cur is None:
            return None
        return apply_scale_shift(depth, cur[0], cur[1], self.output_kind, self.config.max_depth)

    def on_frame(self, stamp_ns: int, rgb: np.ndarray, depth: np.ndarray, K: np.ndarray) -> ScaleEstimate | None:
        """Remember the frame and estimate the scale from it (or a pending earlier one).

        Args:
            stamp_ns: image stamp.
            rgb: (h,w,3) uint8 at network size; depth: (h,w) the network's raw output; K: (3,3) at (h,w).
        Returns:
            the estimate made now (accepted or not), or None when no pose is available yet.
        """
        from mono_depth_ros.egomotion.timeseries import PoseStatus
        c = self.config
        stamp_ns = int(stamp_ns)
        if self.provider.epoch != self._epoch:   # time jumped: no pair spans it
            self._frames.clear()
            self._pending.clear()
            self._epoch = self.provider.epoch
        img, d, K_small = self.estimator.shrink(rgb, depth, K)   # only the small copies are kept
        self._frames[stamp_ns] = (img, d, K_small)
        keep_from = stamp_ns - int(self.selector.config.history_s * 1e9)
        for s in [s for s in self._frames if s < keep_from]:
            del self._frames[s]
        self.selector.add_frame(stamp_ns)
        with self._lock:
            self.counters.frames += 1
        self._pending.append(stamp_ns)
        result = None
        for target in sorted(self._pending, reverse=True):
            sel = self.selector.select(target)
            if sel.status is PoseStatus.NOT_YET:
                continue
            self._pending.remove(target)
            if not sel.ok:
                with self._lock:
                    self.counters.no_pose += 1
                    self.counters.last_reason = f"no frame pair: {sel.reason}"
                continue
            rp = sel.poses[0]
            src = self._frames.get(rp.stamp_source_ns)
            tgt = self._frames.get(target)
            if src is None or tgt is None:
                continue
            result = self._estimate(tgt, src, rp.T_target_source)
            self._pending.clear()   # older pending targets are superseded by this one
            break
        return result

    def _estimate(self, tgt, src, T_target_source: np.ndarray) -> ScaleEstimate:
        T_source_target = np.linalg.inv(np.asarray(T_target_source, np.float64))
        est = self.estimator.estimate_small(tgt[0], tgt[1], src[0], T_source_target, tgt[2], affine=self.affine)
        with self._lock:
            if est.ok:
                self.running.add(est.scale, est.shift)
                self.counters.accepted += 1
                self.counters.last_reason = ""
            else:
                self.counters.rejected += 1
                self.counters.last_reason = est.reason
                key = est.reason.split(" (")[0].split(":")[0]
                self.counters.reasons[key] = self.counters.reasons.get(key, 0) + 1
        return est

    def stats(self) -> dict[str, str]:
        """Diagnostics: ``metric_scale``, ``metric_scale_std``, ``metric_shift``, ``metric_scale_frames``, ..."""
        with self._lock:
            n = len(self.running)
            applied = n >= self.config.min_frames
            out = {
                "metric_scale": f"{self.running.scale:.5f}" if n else "nan",
                "metric_scale_std": f"{self.running.std:.5f}" if n >= 2 else "nan",
                "metric_shift": f"{self.running.shift:.6f}",
                "metric_scale_frames": str(self.counters.accepted),
                "metric_scale_rejected": str(self.counters.rejected),
                "metric_scale_no_pose": str(self.counters.no_pose),
                "metric_scale_state": "applied" if applied else f"converging ({n}/{self.config.min_frames})",
                "metric_scale_last_reason": self.counters.last_reason,
            }
        return out
