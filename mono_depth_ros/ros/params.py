"""The node's parameters declared on a ROS node: a thin layer over :mod:`mono_depth_ros.settings`.

The table (:data:`PARAMS`), the flat :class:`NodeConfig`, their defaults and
:func:`validate` come from the settings dataclasses; this module only turns
them into ``ParameterDescriptor`` s (:func:`declare`) and checks runtime changes
(:func:`install_runtime_validation`). Read-only parameters are refused by rclpy
("Trying to set a read-only parameter"); each one's reason is in its
description.
"""
from __future__ import annotations

from dataclasses import replace

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, SetParametersResult
from rclpy.exceptions import InvalidParameterValueException, ParameterException
from rclpy.node import Node
from rclpy.parameter import Parameter

from mono_depth_ros.settings import (BY_NAME, CHECKPOINT_ROOT, PARAMS, ConfigError, NodeConfig, ParamSpec,
                                     checkpoint_dir_for, validate)

__all__ = ["NodeConfig", "ParamSpec", "PARAMS", "ConfigError", "declare", "validate", "install_runtime_validation",
           "CHECKPOINT_ROOT", "checkpoint_dir_for", "descriptor"]

_BY_NAME = BY_NAME


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """The ROS descriptor of one parameter: description (with the read-only reason), range, choices."""
    text = spec.description + (f" [read-only: {spec.reason}]" if spec.read_only else "")
    d = ParameterDescriptor(description=text, read_only=spec.read_only)
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


def declare(node: Node) -> NodeConfig:
    """Declare all parameters on ``node`` and return the validated config (ConfigError if invalid)."""
    values = {}
    for spec in PARAMS:
        try:
            p = node.declare_parameter(spec.name, spec.default, descriptor(spec))
        except (InvalidParameterValueException, ParameterException) as exc:
            raise ConfigError(f"parameter {spec.name!r}: {exc}") from None
        values[spec.name] = p.value
    cfg = validate(NodeConfig(**values))
    if not cfg.checkpoint_dir.strip():
        # Per node: two nodes (namespaces, names) never resume each other's weights.
        cfg = replace(cfg, checkpoint_dir=checkpoint_dir_for(node.get_fully_qualified_name()))
    return cfg


def install_runtime_validation(node: Node, get_cfg, set_cfg) -> None:
    """Refuse invalid runtime changes with a reason; hand valid ones to ``set_cfg``, which applies them.

    rclpy refuses read-only parameters before this callback runs. ``set_cfg`` may raise
    ConfigError/ValueError to refuse a change it cannot apply; the parameter then keeps its value.
    """

    def on_set(params: list[Parameter]) -> SetParametersResult:
        cfg = get_cfg()
        try:
            for p in params:
                if p.name not in BY_NAME:
                    continue
                cfg = replace(cfg, **{p.name: p.value})
            cfg = validate(cfg)
            set_cfg(cfg)
        except (ConfigError, ValueError, TypeError) as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)
