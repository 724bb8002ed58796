"""Security: weights-only checkpoint loading everywhere, the save path confined to the checkpoint
directory, and every parameter refused outside its range (at start and at runtime).

Name validation and symlink escape of ``CheckpointStore.path_for`` are in
test_adapt_engine.py::TestCheckpointStore (marked ``faults``); symlinks planted in a running node's
directory are in test_faults_checkpoint.py.
"""
import ast
import math
from pathlib import Path

import pytest

from mono_depth_ros.ros import params as P

from .rosutil import ROOT, NodeProcess, spin_until
from .test_node_dds import _wait_ready, ros_node  # noqa: F401  (fixture)

pytestmark = [pytest.mark.faults]


def _torch_load_calls():
    for path in sorted((ROOT / "mono_depth_ros").rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "load" \
                    and isinstance(n.func.value, ast.Name) and n.func.value.id == "torch":
                yield path.relative_to(ROOT), n


def test_every_torch_load_is_weights_only():
    calls = list(_torch_load_calls())
    assert calls, "no torch.load found: the scan is broken"
    bad = [f"{p}:{n.lineno}" for p, n in calls
           if not any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                      for k in n.keywords)]
    assert not bad, f"torch.load without weights_only=True: {bad}"


def test_no_pickle_or_unsafe_loaders_in_the_package():
    bad = []
    for path in sorted((ROOT / "mono_depth_ros").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("load", "loads") \
                    and isinstance(n.func.value, ast.Name) and n.func.value.id in ("pickle", "dill", "marshal"):
                bad.append(f"{path.relative_to(ROOT)}:{n.lineno}")
    assert not bad, bad


# ---------------------------------------------------------------- parameters
RANGED = [s for s in P.PARAMS if s.range is not None]


def _outside(spec):
    lo, hi = spec.range
    if isinstance(spec.default, int):
        return [lo - 1, hi + 1]
    eps = lambda v: max(abs(v) * 1e-3, 1e-9)  # noqa: E731
    return [lo - eps(lo), hi + eps(hi), math.nan, math.inf]


def test_every_numeric_parameter_has_a_range():
    missing = [s.name for s in P.PARAMS if isinstance(s.default, (int, float)) and not isinstance(s.default, bool)
               and s.range is None]
    assert not missing, missing


@pytest.fixture(scope="module")
def rcl_context():
    rclpy = pytest.importorskip("rclpy")
    from rclpy.context import Context
    ctx = Context()
    rclpy.init(context=ctx)
    yield ctx
    rclpy.shutdown(context=ctx)


def _declare_with(ctx, name, value):
    import rclpy
    from rclpy.parameter import Parameter
    node = rclpy.create_node("param_probe", context=ctx, parameter_overrides=[Parameter(name, value=value)],
                             automatically_declare_parameters_from_overrides=False)
    try:
        return P.declare(node)
    finally:
        node.destroy_node()


@pytest.mark.parametrize("spec,value", [(s, v) for s in RANGED for v in _outside(s)],
                         ids=lambda x: x.name if isinstance(x, P.ParamSpec) else repr(x))
def test_value_just_outside_range_refused_at_start(rcl_context, spec, value):
    with pytest.raises(P.ConfigError, match=spec.name):
        _declare_with(rcl_context, spec.name, value)


@pytest.mark.parametrize("spec", RANGED, ids=lambda s: s.name)
def test_range_ends_accepted_at_start(rcl_context, spec):
    lo, hi = spec.range
    for v in (lo, hi):
        if spec.name.startswith(("input_", "adapt_train_")) and v:
            v = 2048  # multiples of 32 only
        if spec.name == "min_depth" and v >= 100.0 or spec.name == "max_depth" and v <= 0.1:
            continue  # cross-field rule min < max
        cfg = _declare_with(rcl_context, spec.name, v)
        assert getattr(cfg, spec.name) == v


@pytest.mark.parametrize("spec", [s for s in P.PARAMS if s.choices], ids=lambda s: s.name)
def test_unknown_choice_refused_at_start(rcl_context, spec):
    with pytest.raises(P.ConfigError, match=f"'{spec.name}' = 'bogus' is not one of"):
        _declare_with(rcl_context, spec.name, "bogus")


def test_unknown_egomotion_source_refused(rcl_context):
    with pytest.raises(P.ConfigError, match="egomotion_sources"):
        _declare_with(rcl_context, "egomotion_sources", "odom,warp_drive")


@pytest.mark.ros
@pytest.mark.slow
def test_every_ranged_parameter_refused_outside_range_at_runtime(tmp_path, ros_node):
    """One node process: every writable ranged parameter just outside its range (and NaN) is refused
    with the parameter's name; read-only ones are refused as such; the node keeps its values."""
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import GetParameters, SetParameters

    node, ex = ros_node
    proc = NodeProcess(tmp_path, params={"input_width": 320, "input_height": 96, "publish_points": False})
    try:
        _wait_ready(proc)
        cli = node.create_client(SetParameters, "/mono_depth/set_parameters")
        get = node.create_client(GetParameters, "/mono_depth/get_parameters")
        assert cli.wait_for_service(timeout_sec=20) and get.wait_for_service(timeout_sec=20)

        def pv(value):
            if isinstance(value, int):
                return ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
            if isinstance(value, float):
                return ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
            return ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)

        def call(client, req):
            fut = client.call_async(req)
            assert spin_until(node, fut.done, 10, ex)
            return fut.result()

        failures = []
        for spec in P.PARAMS:
            values = _outside(spec) if spec.range else (["bogus"] if spec.choices else [])
            for v in values:
                r = call(cli, SetParameters.Request(parameters=[Parameter(name=spec.name, value=pv(v))])).results[0]
                want = "read-only" if spec.read_only else spec.name
                if r.successful or want not in r.reason:
                    failures.append((spec.name, v, r.successful, r.reason))
        assert not failures, failures
        names = [s.name for s in RANGED]
        got = call(get, GetParameters.Request(names=names)).values
        for spec, val in zip(RANGED, got):
            now = val.integer_value if isinstance(spec.default, int) else val.double_value
            if spec.name not in ("input_width", "input_height"):
                assert now == spec.default, (spec.name, now)
        assert proc.alive()
    finally:
        assert proc.stop() == 0
