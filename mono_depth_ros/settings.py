"""The node's settings: nested dataclasses, the only home of every default.

:class:`NodeSettings` nests one dataclass per part: :class:`InferenceSettings`,
:class:`InputSettings`, :class:`OutputSettings`, :class:`AdaptationSettings`
(the node's adaptation wiring) and the engine's own types
:class:`~mono_depth_ros.adapt.AdaptConfig`,
:class:`~mono_depth_ros.egomotion.EgoMotionConfig` and
:class:`~mono_depth_ros.egomotion.GatingConfig`. Each field that is a ROS
parameter or a ``mono-depth adapt`` option carries an
:class:`~mono_depth_ros.options.Option` (name, description, range, choices,
read-only reason, unit conversion). Everything else is derived here:

* :data:`PARAMS`: the parameter table (flat names: ``adapt_lr``, ``point_stride``, ...);
* :class:`NodeConfig`: the flat, typed view of the parameters (field names = parameter names,
  defaults from the dataclasses) that the ROS layer declares, validates and updates;
  :meth:`NodeConfig.settings` maps it back onto :class:`NodeSettings`;
* :func:`add_cli_arguments` / :func:`from_cli`: the command-line options.

ROS-free: :mod:`mono_depth_ros.ros.params` declares the table on a node.
"""
from __future__ import annotations

import argparse
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, make_dataclass, replace

from mono_depth_ros.adapt.engine import AdaptConfig
from mono_depth_ros.conventions import Topics
from mono_depth_ros.egomotion.provider import EgoMotionConfig
from mono_depth_ros.egomotion.selector import GatingConfig
from mono_depth_ros.models.registry import MODEL_CHOICES, size_multiple_of
from mono_depth_ros.options import OPTION_KEY, Option, option

__all__ = ["InferenceSettings", "InputSettings", "OutputSettings", "AdaptationSettings", "NodeSettings",
           "ParamSpec", "PARAMS", "BY_NAME", "NodeConfig", "ConfigError", "validate", "size_multiple_for",
           "add_cli_arguments", "from_cli", "CHECKPOINT_ROOT", "checkpoint_dir_for"]

#: Parent of the per-node checkpoint folders (``checkpoint_dir`` left empty).
CHECKPOINT_ROOT = "~/.ros/mono_depth_ros"

_SHAPE = "sets the network's tensor shapes"


def checkpoint_dir_for(fully_qualified_name: str) -> str:
    """``~/.ros/mono_depth_ros/<namespace>/<node name>`` for a node's fully qualified name.

    >>> checkpoint_dir_for("/front/mono_depth")
    '~/.ros/mono_depth_ros/front/mono_depth'
    >>> checkpoint_dir_for("/mono_depth")
    '~/.ros/mono_depth_ros/mono_depth'
    """
    return "/".join([CHECKPOINT_ROOT, *[p for p in fully_qualified_name.split("/") if p]])


def size_multiple_for(model: str) -> int:
    """The input-size multiple of a ``model`` choice (the network class's ``size_multiple``: 14 for
    Depth Anything V2's ViT patches, 32 for the U-Nets); 32 for an unknown name (refused elsewhere)."""
    return size_multiple_of(model) if model in MODEL_CHOICES else 32


# ------------------------------------------------------------------ the node's parts
@dataclass(frozen=True)
class InferenceSettings:
    """The serving network."""

    model: str = option("default", "model", "network architecture; the checkpoint file decides where it can (see "
                        "docs: Use your own network)", choices=MODEL_CHOICES,
                        read_only="the network is loaded at start")
    checkpoint: str = option("", "checkpoint", "checkpoint file to load; empty = the package's shipped weights",
                             read_only="the network is loaded at start")
    device: str = option("cpu", "device", "torch device for inference: cpu, cuda or auto (cuda when available)",
                         choices=("cpu", "cuda", "auto"), read_only="the network is loaded at start")
    input_width: int = option(0, "input_width", "network input width in pixels (multiple of 32, 14 for Depth Anything "
                              "V2); 0 = the checkpoint's training size (recommended: metric depth is learned at one "
                              "scale)", range=(0, 2048), step=2, read_only=_SHAPE)
    input_height: int = option(0, "input_height", "network input height in pixels (multiple of 32, 14 for Depth "
                               "Anything V2); 0 = the checkpoint's training size", range=(0, 2048), step=2,
                               read_only=_SHAPE)
    min_depth: float = option(0.1, "min_depth", "smallest depth the network outputs [m]", range=(0.01, 10.0),
                              read_only="built into the network's output layer")
    max_depth: float = option(100.0, "max_depth", "largest depth the network outputs [m]", range=(1.0, 1000.0),
                              read_only="built into the network's output layer")
    num_threads: int = option(0, "num_threads", "CPU threads for inference; 0 = automatic (1 while adapting, so "
                              "training gets the other core)", range=(0, 64), read_only="the inference session is "
                              "built at start")
    inference_backend: str = option("auto", "inference_backend", "auto = onnxruntime if installed (fastest on "
                                    "CPU), else torchscript", choices=("auto", "onnxruntime", "torchscript", "eager"),
                                    read_only="the inference session is built at start")
    metric_scale: str = option("auto", "metric_scale", "scale (and shift) of relative depth estimated online from "
                               "the metric ego-motion: auto = for relative networks (output_kind), online = also "
                               "for metric ones, off = never (docs/backends.md)", choices=("auto", "online", "off"))


@dataclass(frozen=True)
class InputSettings:
    """The camera subscription and input problems."""

    use_compressed: bool = option(False, "use_compressed", "subscribe to image/compressed instead of image",
                                  read_only="the subscription is made at start")
    qos_reliability: str = option("best_effort", "qos_reliability", "image subscription reliability (best_effort "
                                  "accepts both kinds of publisher)", choices=("best_effort", "reliable"),
                                  read_only="the subscription is made at start")
    qos_depth: int = option(2, "qos_depth", "image subscription queue depth", range=(1, 100),
                            read_only="the subscription is made at start")
    error_throttle: float = option(5.0, "error_throttle", "seconds between repeats of the same input error in the "
                                   "log", range=(0.0, 3600.0))
    clock_jump_threshold: float = option(2.0, "clock_jump_threshold", "with use_sim_time: a /clock jump larger "
                                         "than this [s], backwards (bag loop) or forwards, resets dynamic TF, "
                                         "ego-motion buffers and the adaptation's frame history",
                                         range=(0.1, 3600.0), read_only="the clock's jump callback is made at start")


@dataclass(frozen=True)
class OutputSettings:
    """What the node publishes besides depth."""

    publish_colorized: bool = option(True, "publish_colorized", "publish depth/colorized (rgb8) for RViz")
    publish_points: bool = option(True, "publish_points", "publish the point cloud on points")
    point_stride: int = option(2, "point_stride", "keep every n-th row and column of the depth image in the cloud",
                               range=(1, 64), step=1)
    voxel_size: float = option(0.0, "voxel_size", "voxel downsampling of the cloud [m]; 0 = off (organised cloud)",
                               range=(0.0, 10.0))
    target_frame: str = option("", "target_frame", "frame of the point cloud; empty = the camera optical frame")
    tf_timeout: float = option(0.1, "tf_timeout", "longest wait for the transform at the image stamp [s]",
                               range=(0.0, 2.0))


@dataclass(frozen=True)
class AdaptationSettings:
    """The node's adaptation wiring around the engine (:class:`AdaptConfig`): pacing, sizes, checkpoints."""

    enabled: bool = option(True, "adapt", "online self-supervised adaptation from ego-motion (also: service "
                           "~/set_adaptation)")
    steps_per_frame: float = option(1.0, "adapt_steps_per_frame", "training steps per processed camera frame; "
                                    "above 1 the extra steps replay past samples, below 1 steps are spread over "
                                    "frames (the CPU sets the real pace)", range=(0.0, 16.0), cli="--steps-per-frame")
    train_width: int = option(0, "adapt_train_width", "training width (multiple of 32, 14 for Depth Anything V2); "
                              "0 = the inference size", range=(0, 2048), step=2, read_only=_SHAPE)
    train_height: int = option(0, "adapt_train_height", "training height (multiple of 32, 14 for Depth Anything "
                               "V2); 0 = the inference size", range=(0, 2048), step=2, read_only=_SHAPE)
    threads: int = option(1, "adapt_threads", "torch threads of the adaptation's training (inference keeps its own)",
                          range=(1, 64), read_only="torch's thread count is set once where the training runs")
    process: bool = option(True, "adapt_process", "train in a child process of its own (its own interpreter: "
                           "serving never waits for the training step's Python, docs/learning.md); false = on a "
                           "thread of the node", read_only="the training process (or thread) is started at start")
    anchor: str = option("auto", "adapt_anchor", "source-domain anchor images that keep the starting depth there: "
                         "auto (synthetic_A for the shipped weights, none for your own checkpoint), synthetic_A, "
                         "none, or a folder of png/jpg images of your training data",
                         read_only="anchor images are loaded at start", cli="--anchor")
    checkpoint_dir: str = option("", "checkpoint_dir", "where adapted checkpoints are written and resumed from; "
                                 f"empty = {CHECKPOINT_ROOT}/<namespace>/<node name>, one folder per node",
                                 read_only="checkpoints are resumed from it at start")
    checkpoint_period: float = option(60.0, "checkpoint_period", "seconds between adapted checkpoints; 0 = only on "
                                      "shutdown/service", range=(0.0, 86400.0))
    resume: bool = option(True, "resume", "start from the newest good checkpoint in checkpoint_dir",
                          read_only="checkpoints are resumed at start only")
    right_image_topic: str = option(Topics.RIGHT_IMAGE, "adapt_right_image_topic", "adapt_stereo: the rectified "
                                    "right image (subscribed only while adapting with adapt_stereo)",
                                    read_only="the subscription's topic is set at start")
    right_camera_info_topic: str = option(Topics.RIGHT_CAMERA_INFO, "adapt_right_camera_info_topic", "adapt_stereo: "
                                          "the right camera_info; its P gives the baseline (Tx = -fx * B), else TF "
                                          "right optical frame <- left optical frame",
                                          read_only="the subscription's topic is set at start")


@dataclass(frozen=True)
class NodeSettings:
    """Every setting of the depth node, grouped by the part that uses it."""

    inference: InferenceSettings = field(default_factory=InferenceSettings)
    input: InputSettings = field(default_factory=InputSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    adaptation: AdaptationSettings = field(default_factory=AdaptationSettings)
    adapt: AdaptConfig = field(default_factory=AdaptConfig)
    egomotion: EgoMotionConfig = field(default_factory=EgoMotionConfig)
    gating: GatingConfig = field(default_factory=GatingConfig)


# ------------------------------------------------------------------ the parameter table
@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter, derived from a settings field.

    ``default`` is in the parameter's units (``encode`` of the field default); ``path`` is the field's
    place in :class:`NodeSettings` (``("adapt", "lr")``); ``reason`` says why a read-only one is.
    """

    name: str
    default: object
    description: str
    range: tuple | None = None
    step: float | int = 0
    choices: tuple | None = None
    read_only: bool = False
    reason: str = ""
    path: tuple[str, ...] = ()
    option: Option | None = None


def _options(cls) -> list[tuple[Field, Option]]:
    return [(f, f.metadata[OPTION_KEY]) for f in fields(cls) if OPTION_KEY in f.metadata]


def _default(f: Field):
    return f.default_factory() if f.default is MISSING else f.default


def _walk(cls, path: tuple[str, ...] = ()) -> list[ParamSpec]:
    out = []
    for f in fields(cls):
        if f.default is MISSING and is_dataclass(f.default_factory):
            out += _walk(f.default_factory, path + (f.name,))
        elif OPTION_KEY in f.metadata and f.metadata[OPTION_KEY].param:
            o = f.metadata[OPTION_KEY]
            out.append(ParamSpec(o.param, o.encode(_default(f)), o.description, o.range, o.step, o.choices,
                                 bool(o.read_only), o.read_only, path + (f.name,), o))
    return out


#: Every node parameter, in :class:`NodeSettings` order.
PARAMS: tuple[ParamSpec, ...] = tuple(_walk(NodeSettings))
BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMS}
assert len(BY_NAME) == len(PARAMS), "two settings declare the same parameter name"
assert all(len(p.path) == 2 for p in PARAMS), "parameters live one level down: NodeSettings.<part>.<field>"


class ConfigError(ValueError):
    """A parameter value the node refuses; the text names the parameter and the allowed values."""


def _to_settings(cfg) -> NodeSettings:
    """Map the flat parameter values onto :class:`NodeSettings` (units converted, text parsed)."""
    parts: dict[str, dict] = {}
    for spec in PARAMS:
        parts.setdefault(spec.path[0], {})[spec.path[1]] = spec.option.decode(getattr(cfg, spec.name))
    # The engine's sizes as far as the parameters know them: training size 0 = the inference size (the node
    # fills it in once the network is loaded), crops rounded down to the model's multiple (Depth Anything V2: 14s).
    adapt, mult = parts["adapt"], size_multiple_for(cfg.model)
    adapt.update(train_height=cfg.adapt_train_height, train_width=cfg.adapt_train_width, size_multiple=mult,
                 crop_width=adapt["crop_width"] // mult * mult, crop_height=adapt["crop_height"] // mult * mult)
    return NodeSettings(**{f.name: f.default_factory(**parts[f.name]) for f in fields(NodeSettings)})


def _from_settings(cls, s: NodeSettings):
    """The flat parameter values of ``s``."""
    values = {}
    for spec in PARAMS:
        obj = s
        for name in spec.path:
            obj = getattr(obj, name)
        values[spec.name] = spec.option.encode(obj)
    return cls(**values)


#: The flat, typed view of the parameters: field names = parameter names, defaults derived from
#: :class:`NodeSettings`. ``cfg.settings()`` gives the nested settings.
NodeConfig = make_dataclass(
    "NodeConfig", [(p.name, type(p.default), field(default=p.default)) for p in PARAMS], frozen=True,
    namespace={"settings": _to_settings, "from_settings": classmethod(_from_settings),
               "__doc__": "Typed view of the node's parameters (field names = parameter names); defaults from "
                          "NodeSettings. ``settings()`` -> NodeSettings."})
NodeConfig.__module__ = __name__


def validate(cfg):
    """Check every value of a :class:`NodeConfig`; raise ConfigError naming the first bad one.
    Returns the config with ints given for floats converted."""
    mult = size_multiple_for(cfg.model)   # the network's size_multiple
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
        try:
            spec.option.decode(v)         # the one parser of text forms (egomotion_sources)
        except ValueError as exc:
            raise ConfigError(f"parameter {spec.name!r} = {exc}") from None
    for name in ("adapt_crop_width", "adapt_crop_height"):
        if getattr(cfg, name) % 32 and mult == 32:  # Depth Anything V2: rounded down to 14s (ros/adaptation.py)
            raise ConfigError(f"parameter {name!r} = {getattr(cfg, name)} must be a multiple of 32 (0 = whole frames)")
    if cfg.min_depth >= cfg.max_depth:
        raise ConfigError(f"min_depth ({cfg.min_depth}) must be smaller than max_depth ({cfg.max_depth})")
    return cfg


# ------------------------------------------------------------------ the command line
def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def add_cli_arguments(parser: argparse.ArgumentParser, *classes) -> None:
    """Add the options of ``classes`` (settings dataclasses) that name a ``cli`` flag: type, default
    (in parameter units: degrees, "odom,tf"), help and choices from the field's :class:`Option`."""
    for cls in classes:
        for f, o in _options(cls):
            if o.cli:
                default = o.encode(_default(f))
                help_ = o.description + (f" (node parameter: {o.param})" if o.param else "")
                parser.add_argument(o.cli, type=type(default), default=default, choices=o.choices, help=help_)


def from_cli(cls, args: argparse.Namespace, **overrides):
    """``cls`` built from the options :func:`add_cli_arguments` added (ranges checked, text parsed)
    plus ``overrides`` for fields without a flag. ValueError names the flag."""
    values = {}
    for f, o in _options(cls):
        if o.cli and f.name not in overrides:
            v = getattr(args, _dest(o.cli))
            if o.range is not None and not (o.range[0] <= v <= o.range[1]):
                raise ValueError(f"{o.cli} must be in [{o.range[0]}, {o.range[1]}], got {v}")
            try:
                values[f.name] = o.decode(v)
            except ValueError as exc:
                raise ValueError(f"{o.cli} {exc}") from None
    return cls(**values, **overrides)


def _check_defaults() -> None:
    """Import-time guard: every parameter default passes its own range and choices."""
    bad = [p.name for p in PARAMS if (p.range and not p.range[0] <= p.default <= p.range[1])
           or (p.choices and p.default not in p.choices)]
    assert not bad, f"defaults outside their range/choices: {bad}"


_check_defaults()
