"""Every node parameter, declared in one place with descriptors and ranges.

:data:`PARAMS` is the single table; :func:`declare` declares it on a node and
returns a :class:`NodeConfig`; :func:`validate` checks values (ranges, choices,
cross-field rules) at start and on every runtime change. Read-only parameters
are those that change tensor shapes or the graph's wiring.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from mono_depth_ros.egomotion import GatingConfig
from mono_depth_ros.models.registry import MODEL_CHOICES, size_multiple_of

__all__ = ["NodeConfig", "ParamSpec", "PARAMS", "ConfigError", "declare", "validate", "install_runtime_validation",
           "CHECKPOINT_ROOT", "checkpoint_dir_for"]

#: Parent of the per-node checkpoint folders (``checkpoint_dir`` left empty).
CHECKPOINT_ROOT = "~/.ros/mono_depth_ros"

#: The gating's rotation limit between training frames, in degrees (default from GatingConfig).
_MAX_ROTATION_DEG = round(math.degrees(GatingConfig().max_rotation_rad), 6)


def checkpoint_dir_for(fully_qualified_name: str) -> str:
    """``~/.ros/mono_depth_ros/<namespace>/<node name>`` for a node's fully qualified name.

    >>> checkpoint_dir_for("/front/mono_depth")
    '~/.ros/mono_depth_ros/front/mono_depth'
    >>> checkpoint_dir_for("/mono_depth")
    '~/.ros/mono_depth_ros/mono_depth'
    """
    return "/".join([CHECKPOINT_ROOT, *[p for p in fully_qualified_name.split("/") if p]])


class ConfigError(ValueError):
    """A parameter value the node refuses; the text names the parameter and the allowed values."""


@dataclass(frozen=True)
class ParamSpec:
    name: str
    default: object
    description: str
    range: tuple | None = None        # (min, max) inclusive, for int/float
    step: float | int = 0
    choices: tuple | None = None      # allowed strings
    read_only: bool = False


@dataclass(frozen=True)
class NodeConfig:
    """Typed view of the parameters (field names = parameter names)."""

    model: str = "default"
    checkpoint: str = ""
    device: str = "cpu"
    input_width: int = 0
    input_height: int = 0
    min_depth: float = 0.1
    max_depth: float = 100.0
    num_threads: int = 0
    inference_backend: str = "auto"
    use_compressed: bool = False
    qos_reliability: str = "best_effort"
    qos_depth: int = 2
    publish_colorized: bool = True
    publish_points: bool = True
    point_stride: int = 2
    voxel_size: float = 0.0
    target_frame: str = ""
    tf_timeout: float = 0.1
    error_throttle: float = 5.0
    adapt: bool = True
    adapt_lr: float = 3e-4
    adapt_steps_per_frame: float = 1.0
    adapt_replay_per_step: int = 3
    adapt_train_width: int = 0
    adapt_train_height: int = 0
    adapt_min_translation: float = 0.2
    adapt_max_rotation: float = _MAX_ROTATION_DEG
    adapt_threads: int = 1
    adapt_step: str = "fast"
    adapt_crop_width: int = 192
    adapt_crop_height: int = 0
    adapt_anchor: str = "auto"
    adapt_anchor_weight: float = 0.3
    egomotion_sources: str = "odom,tf,imu_gps,imu_speed"
    odom_frame: str = "odom"
    base_frame: str = "base_link"
    checkpoint_dir: str = ""
    checkpoint_period: float = 60.0
    resume: bool = True
    evaluate_gt: bool = False
    clock_jump_threshold: float = 2.0


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec("model", "default", "network architecture; the checkpoint file decides where it can (see docs: "
              "Use your own network)", choices=MODEL_CHOICES, read_only=True),
    ParamSpec("checkpoint", "", "checkpoint file to load; empty = the package's shipped weights", read_only=True),
    ParamSpec("device", "cpu", "torch device for inference: cpu, cuda or auto (cuda when available)",
              choices=("cpu", "cuda", "auto"), read_only=True),
    ParamSpec("input_width", 0, "network input width in pixels (multiple of 32, 14 for Depth Anything V2); 0 = "
              "the checkpoint's training size (recommended: metric depth is learned at one scale)", range=(0, 2048),
              step=2, read_only=True),
    ParamSpec("input_height", 0, "network input height in pixels (multiple of 32, 14 for Depth Anything V2); 0 = "
              "the checkpoint's training size", range=(0, 2048), step=2, read_only=True),
    ParamSpec("min_depth", 0.1, "smallest depth the network outputs [m]", range=(0.01, 10.0), read_only=True),
    ParamSpec("max_depth", 100.0, "largest depth the network outputs [m]", range=(1.0, 1000.0), read_only=True),
    ParamSpec("num_threads", 0, "CPU threads for inference; 0 = automatic (1 while adapting, so training "
              "gets the other core)", range=(0, 64), read_only=True),
    ParamSpec("inference_backend", "auto", "auto = onnxruntime if installed (fastest on CPU), else torchscript",
              choices=("auto", "onnxruntime", "torchscript", "eager"), read_only=True),
    ParamSpec("use_compressed", False, "subscribe to image/compressed instead of image", read_only=True),
    ParamSpec("qos_reliability", "best_effort", "image subscription reliability (best_effort accepts both kinds "
              "of publisher)", choices=("best_effort", "reliable"), read_only=True),
    ParamSpec("qos_depth", 2, "image subscription queue depth", range=(1, 100), read_only=True),
    ParamSpec("publish_colorized", True, "publish depth/colorized (rgb8) for RViz"),
    ParamSpec("publish_points", True, "publish the point cloud on points"),
    ParamSpec("point_stride", 2, "keep every n-th row and column of the depth image in the cloud", range=(1, 64),
              step=1),
    ParamSpec("voxel_size", 0.0, "voxel downsampling of the cloud [m]; 0 = off (organised cloud)", range=(0.0, 10.0)),
    ParamSpec("target_frame", "", "frame of the point cloud; empty = the camera optical frame"),
    ParamSpec("tf_timeout", 0.1, "longest wait for the transform at the image stamp [s]", range=(0.0, 2.0)),
    ParamSpec("error_throttle", 5.0, "seconds between repeats of the same input error in the log", range=(0.0, 3600.0)),
    ParamSpec("adapt", True, "online self-supervised adaptation from ego-motion (also: service ~/set_adaptation)"),
    ParamSpec("adapt_lr", 3e-4, "adaptation learning rate (Adam)", range=(1e-7, 1.0)),
    ParamSpec("adapt_steps_per_frame", 1.0, "training steps per processed camera frame; above 1 the extra steps "
              "replay past samples, below 1 steps are spread over frames (the CPU sets the real pace)",
              range=(0.0, 16.0)),
    ParamSpec("adapt_replay_per_step", 3, "replayed samples mixed into each step (CoMoDA: 3)", range=(0, 16),
              read_only=True),
    ParamSpec("adapt_train_width", 0, "training width (multiple of 32, 14 for Depth Anything V2); 0 = the "
              "inference size", range=(0, 2048), step=2, read_only=True),
    ParamSpec("adapt_train_height", 0, "training height (multiple of 32, 14 for Depth Anything V2); 0 = the "
              "inference size", range=(0, 2048), step=2, read_only=True),
    ParamSpec("adapt_min_translation", 0.2, "minimum camera motion between training frames [m]", range=(0.0, 10.0),
              read_only=True),
    ParamSpec("adapt_max_rotation", _MAX_ROTATION_DEG, "largest camera rotation between training frames [deg]; "
              "raise it for hand-held or slowly turning cameras", range=(0.1, 180.0), read_only=True),
    ParamSpec("adapt_threads", 1, "torch threads of the adaptation thread (inference keeps its own)", range=(1, 64),
              read_only=True),
    ParamSpec("adapt_step", "fast", "training step: fast (random crops at full resolution, each loss scale at "
              "its own resolution; docs/learning.md) or reference (release 0.2's step: whole frames, every scale "
              "upsampled to full resolution, ~8x slower)", choices=("fast", "reference"), read_only=True),
    ParamSpec("adapt_crop_width", 192, "fast step: width of the random training crop (multiple of 32; Depth "
              "Anything V2: rounded down to 14s; 0 or >= the training width = whole width)", range=(0, 2048),
              step=2, read_only=True),
    ParamSpec("adapt_crop_height", 0, "fast step: height of the random training crop (multiple of 32; Depth "
              "Anything V2: rounded down to 14s; 0 or >= the training height = whole height, the default: depth "
              "is read from a pixel's row)", range=(0, 2048), step=2, read_only=True),
    ParamSpec("adapt_anchor", "auto", "source-domain anchor images that keep the starting depth there: auto "
              "(synthetic_A for the shipped weights, none for your own checkpoint), synthetic_A, none, or a folder "
              "of png/jpg images of your training data", read_only=True),
    ParamSpec("adapt_anchor_weight", 0.3, "weight of the anchor (distillation) term; 0 = off", range=(0.0, 100.0),
              read_only=True),
    ParamSpec("egomotion_sources", "odom,tf,imu_gps,imu_speed", "ego-motion sources in priority order "
              "(odom, odom_twist, tf, imu_gps, imu_speed)", read_only=True),
    ParamSpec("odom_frame", "odom", "odometry frame of the tf ego-motion source (REP 105)", read_only=True),
    ParamSpec("base_frame", "base_link", "vehicle frame (REP 105); extrinsics are looked up from it",
              read_only=True),
    ParamSpec("checkpoint_dir", "", "where adapted checkpoints are written and resumed from; empty = "
              f"{CHECKPOINT_ROOT}/<namespace>/<node name>, one folder per node", read_only=True),
    ParamSpec("checkpoint_period", 60.0, "seconds between adapted checkpoints; 0 = only on shutdown/service",
              range=(0.0, 86400.0)),
    ParamSpec("resume", True, "start from the newest good checkpoint in checkpoint_dir", read_only=True),
    ParamSpec("evaluate_gt", False, "score every frame against a ground-truth depth topic (depth_gt; synthetic "
              "bags) before learning from it", read_only=True),
    ParamSpec("clock_jump_threshold", 2.0, "with use_sim_time: a /clock jump larger than this [s], backwards (bag "
              "loop) or forwards, resets dynamic TF, ego-motion buffers and the adaptation's frame history",
              range=(0.1, 3600.0), read_only=True),
)

_BY_NAME = {p.name: p for p in PARAMS}
assert set(_BY_NAME) == {f.name for f in fields(NodeConfig)}, "PARAMS and NodeConfig must list the same names"


def _descriptor(spec: ParamSpec) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.description, read_only=spec.read_only)
    if spec.choices:
        d.additional_constraints = "one of: " + ", ".join(spec.choices)
    if spec.range is not None:
        lo, hi = spec.range
        if isinstance(spec.default, bool):
            pass
        elif isinstance(spec.default, int):
            d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=int(spec.step))]
        else:
            d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=float(spec.step))]
    if isinstance(spec.default, float):
        # `-p adapt_lr:=1` arrives as an integer; accept it (validate() converts and range-checks).
        d.dynamic_typing = True
    return d


def validate(cfg: NodeConfig) -> NodeConfig:
    """Check every value; raise ConfigError naming the first bad one."""
    mult = size_multiple_of(cfg.model) if cfg.model in MODEL_CHOICES else 32  # the network's size_multiple
    for spec in PARAMS:
        v = getattr(cfg, spec.name)
        want = type(spec.default)
        if want is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
            cfg = replace(cfg, **{spec.name: v})
        if not isinstance(v, want) or (want is int and isinstance(v, bool)):
            raise ConfigError(f"parameter {spec.name!r} must be {want.__name__}, got {v!r}")
        if spec.choices and v not in spec.choices:
            raise ConfigError(f"parameter {spec.name!r} = {v!r} is not one of {list(spec.choices)}")
        if spec.range is not None and not (spec.range[0] <= v <= spec.range[1]):
            raise ConfigError(f"parameter {spec.name!r} = {v!r} is outside [{spec.range[0]}, {spec.range[1]}]")
        if spec.name.startswith(("input_", "adapt_train_")) and v and (v % mult or v < 2 * mult):
            raise ConfigError(f"parameter {spec.name!r} = {v} must be 0 (checkpoint's size) or a multiple of {mult} "
                              f">= {2 * mult} for model {cfg.model!r}")
    for name in ("adapt_crop_width", "adapt_crop_height"):
        if getattr(cfg, name) % 32 and mult == 32:  # Depth Anything V2: rounded down to 14s (ros/adaptation.py)
            raise ConfigError(f"parameter {name!r} = {getattr(cfg, name)} must be a multiple of 32 (0 = whole frames)")
    if cfg.min_depth >= cfg.max_depth:
        raise ConfigError(f"min_depth ({cfg.min_depth}) must be smaller than max_depth ({cfg.max_depth})")
    from mono_depth_ros.egomotion import SOURCES
    srcs = [x.strip() for x in cfg.egomotion_sources.split(",") if x.strip()]
    bad = [x for x in srcs if x not in SOURCES]
    if not srcs or bad:
        raise ConfigError(f"parameter 'egomotion_sources' = {cfg.egomotion_sources!r}: unknown {bad}; "
                          f"use a comma-separated list of {list(SOURCES)}")
    return cfg


def declare(node: Node) -> NodeConfig:
    """Declare all parameters on ``node`` and return the validated config (ConfigError if invalid)."""
    values = {}
    for spec in PARAMS:
        try:
            p = node.declare_parameter(spec.name, spec.default, _descriptor(spec))
        except (InvalidParameterValueException, ParameterException) as exc:
            raise ConfigError(f"parameter {spec.name!r}: {exc}") from None
        values[spec.name] = p.value
    cfg = validate(NodeConfig(**values))
    if not cfg.checkpoint_dir.strip():
        # Per node: two nodes (namespaces, names) never resume each other's weights.
        cfg = replace(cfg, checkpoint_dir=checkpoint_dir_for(node.get_fully_qualified_name()))
    return cfg


def install_runtime_validation(node: Node, get_cfg, set_cfg) -> None:
    """Refuse invalid runtime changes with a reason; apply valid ones to the config."""

    def on_set(params: list[Parameter]) -> SetParametersResult:
        cfg = get_cfg()
        try:
            for p in params:
                if p.name not in _BY_NAME:
                    continue
                cfg = replace(cfg, **{p.name: p.value})
            cfg = validate(cfg)
        except (ConfigError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        set_cfg(cfg)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
