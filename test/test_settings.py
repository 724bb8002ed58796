"""Settings: the dataclasses are the one home of defaults; the ROS table and the CLI are derived;
every runtime parameter change takes effect or is refused as read-only with a reason."""
from __future__ import annotations

import argparse
import math
from dataclasses import fields

import pytest

from mono_depth_ros import settings as S
from mono_depth_ros.adapt import AdaptConfig
from mono_depth_ros.egomotion import EgoMotionConfig, GatingConfig

from .rosutil import ROOT, make_camera_info, make_image, spin_until, textured_image


def _field_default(path):
    obj = S.NodeSettings()
    for name in path:
        obj = getattr(obj, name)
    return obj


def _adapt_parser() -> argparse.ArgumentParser:
    from mono_depth_ros.adapt.offline import add_arguments
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


# ------------------------------------------------------------------ one source of defaults
def test_ros_table_node_config_and_dataclasses_share_every_default():
    cfg = S.NodeConfig()
    assert len(S.PARAMS) == len(fields(S.NodeConfig)) == 55  # 41 - evaluate_gt (a tool now: depth_scorer) + metric_scale + 4 stereo + 5 intrinsics + 2 object motion + adapt_process, adapt_yield + adapt_compile_loss
    for spec in S.PARAMS:
        assert spec.default == spec.option.encode(_field_default(spec.path)), spec.name
        assert getattr(cfg, spec.name) == spec.default and type(getattr(cfg, spec.name)) is type(spec.default)
    # The engine's own types carry the values: one learning rate, one rotation limit, one source list.
    assert S.BY_NAME["adapt_lr"].default == AdaptConfig().lr == 3e-4
    assert S.BY_NAME["adapt_max_rotation"].default == 15.0
    assert math.radians(S.BY_NAME["adapt_max_rotation"].default) == GatingConfig().max_rotation_rad
    assert S.BY_NAME["egomotion_sources"].default == "odom,tf,imu_gps,imu_speed"
    assert cfg.settings().egomotion.priority == EgoMotionConfig().priority == ("odom", "tf", "imu_gps", "imu_speed")
    assert S.NodeConfig.from_settings(cfg.settings()) == cfg


def test_cli_defaults_are_the_dataclass_defaults():
    args = _adapt_parser().parse_args(["bag", "--out", "x.pt"])
    flagged = {o.cli: (f, o) for cls in (S.AdaptationSettings, AdaptConfig, GatingConfig, EgoMotionConfig)
               for f, o in S._options(cls) if o.cli}
    assert set(flagged) >= {"--lr", "--replay-per-step", "--anchor-weight", "--step", "--scales", "--scale-mode",
                            "--min-translation", "--max-rotation", "--egomotion", "--steps-per-frame", "--anchor"}
    for flag, (f, o) in flagged.items():
        got = getattr(args, flag.lstrip("-").replace("-", "_"))
        assert got == o.encode(f.default), flag
        if o.param:
            assert got == S.BY_NAME[o.param].default, flag
    assert args.crop == f"{S.BY_NAME['adapt_crop_height'].default}x{S.BY_NAME['adapt_crop_width'].default}"
    # Built from the CLI without flags: the very defaults of the engine's types.
    assert S.from_cli(GatingConfig, args) == GatingConfig()
    assert S.from_cli(EgoMotionConfig, args) == EgoMotionConfig()
    assert S.from_cli(AdaptConfig, args, train_height=96, train_width=320, crop_height=0, crop_width=192) \
        == AdaptConfig()


def test_cli_values_are_parsed_and_range_checked_like_the_parameters():
    p = _adapt_parser()
    args = p.parse_args(["b", "--out", "x.pt", "--lr", "1e-3", "--max-rotation", "40", "--egomotion", "tf, odom"])
    assert S.from_cli(AdaptConfig, args, train_height=96, train_width=320).lr == 1e-3
    assert S.from_cli(GatingConfig, args).max_rotation_rad == pytest.approx(math.radians(40.0), abs=1e-15)
    assert S.from_cli(EgoMotionConfig, args).priority == ("tf", "odom")
    for flag, bad in (("--max-rotation", "0"), ("--lr", "2"), ("--steps-per-frame", "17")):
        args = p.parse_args(["b", "--out", "x.pt", flag, bad])
        with pytest.raises(ValueError, match=flag):
            for cls in (GatingConfig, S.AdaptationSettings):
                S.from_cli(cls, args)
            S.from_cli(AdaptConfig, args, train_height=96, train_width=320)
    args = p.parse_args(["b", "--out", "x.pt", "--egomotion", "odom,warp"])
    with pytest.raises(ValueError, match="--egomotion .*warp"):
        S.from_cli(EgoMotionConfig, args)


def test_egomotion_sources_are_parsed_in_one_place():
    """Only egomotion.provider.parse_sources splits a source list; the node, the CLI and validation use it."""
    hits = []
    for path in sorted((ROOT / "mono_depth_ros").rglob("*.py")):
        text = path.read_text()
        for needle in ("egomotion_sources.split", "args.egomotion.split", "priority=tuple(s.strip()"):
            if needle in text:
                hits.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not hits, hits
    with pytest.raises(S.ConfigError, match="egomotion_sources.*warp"):
        S.validate(S.NodeConfig(egomotion_sources="odom,warp"))


def test_settings_map_parameter_units_onto_the_engine_types():
    cfg = S.NodeConfig(adapt_max_rotation=30.0, egomotion_sources="tf,odom", adapt_lr=1e-3, adapt_crop_width=256,
                       odom_frame="world", point_stride=5)
    s = cfg.settings()
    assert s.gating.max_rotation_rad == pytest.approx(math.radians(30.0), abs=1e-15)
    assert s.egomotion.priority == ("tf", "odom") and s.egomotion.odom_frame == "world"
    assert (s.adapt.lr, s.adapt.crop_width, s.output.point_stride) == (1e-3, 256, 5)
    # Depth Anything V2: crops rounded down to 14s, like the node's adaptation does.
    da = S.NodeConfig(model="depth_anything_v2_small").settings()
    assert (da.adapt.crop_width, da.adapt.size_multiple) == (182, 14)


# ------------------------------------------------------------------ runtime changes on a running node
#: A new valid value for each runtime-changeable parameter; the test checks each one's effect.
CHANGES = {"publish_colorized": False, "publish_points": False, "point_stride": 4, "voxel_size": 0.5,
           "target_frame": "camera_optical_frame", "tf_timeout": 0.3, "error_throttle": 7.5, "adapt": False,
           "adapt_lr": 1e-4, "adapt_steps_per_frame": 0.5, "checkpoint_period": 120.0, "metric_scale": "online",
           "adapt_yield": False}


def _another_value(spec, v):
    """A valid value other than the current ``v`` (read-only parameters are refused before validation)."""
    if isinstance(v, bool):
        return not v
    if spec.choices:
        return next(c for c in spec.choices if c != v)
    if spec.name.startswith(("input_", "adapt_train_")):
        return 640 if v != 640 else 320
    if spec.range is not None:
        lo, hi = spec.range
        return type(v)(hi if v != hi else lo)
    return str(v) + "_other"


@pytest.mark.ros
def test_every_parameter_changes_at_runtime_or_is_refused_as_read_only(tmp_path):
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from mono_depth_ros.ros.depth_node import DepthNode

    changeable = {s.name for s in S.PARAMS if not s.read_only}
    assert changeable == set(CHANGES), "give each new runtime parameter a value and an effect check here"

    ctx = Context()
    rclpy.init(context=ctx)
    overrides = [Parameter("input_width", value=320), Parameter("input_height", value=96),
                 Parameter("inference_backend", value="eager"), Parameter("adapt_anchor", value="none"),
                 Parameter("resume", value=False), Parameter("checkpoint_dir", value=str(tmp_path / "ck")),
                 Parameter("checkpoint_period", value=0.0)]
    node = DepthNode("settings_probe", context=ctx, parameter_overrides=overrides)
    peer = rclpy.create_node("settings_peer", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    ex.add_node(peer)
    try:
        clouds: list[PointCloud2] = []
        depths: list[Image] = []
        colorized: list[Image] = []
        qos = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
        peer.create_subscription(PointCloud2, "points", clouds.append, qos)
        peer.create_subscription(Image, "depth", depths.append, qos)
        peer.create_subscription(Image, "depth/colorized", colorized.append, qos)
        pub_img = peer.create_publisher(Image, "image", qos)
        pub_info = peer.create_publisher(CameraInfo, "camera_info", qos)
        assert spin_until(peer, lambda: node.pub_points.get_subscription_count() > 0
                          and node.pub_color.get_subscription_count() > 0
                          and pub_img.get_subscription_count() > 0, 10, ex)
        rgb = textured_image(320, 96)

        def frame() -> tuple[PointCloud2 | None, bool]:
            """One frame through the node: (its cloud or None, whether a colorized image came)."""
            clouds.clear(), depths.clear(), colorized.clear()
            info = make_camera_info(320, 96, 200.0)
            msg = make_image(rgb)
            msg.header.stamp = info.header.stamp = peer.get_clock().now().to_msg()
            pub_info.publish(info)
            assert spin_until(peer, lambda: node._info is not None, 5, ex)
            pub_img.publish(msg)
            assert spin_until(peer, lambda: bool(depths), 30, ex), "no depth"
            spin_until(peer, lambda: bool(clouds) and bool(colorized), 1.0, ex)   # both follow the depth image
            return (clouds[-1] if clouds else None), bool(colorized)

        c, col = frame()
        h, w = depths[-1].height, depths[-1].width
        assert col and (c.height, c.width) == (math.ceil(h / 2), math.ceil(w / 2))   # default stride 2

        engine = node.adaptation.engine
        assert engine.enabled and engine.lr == 3e-4
        refused, applied = {}, {}
        for spec in S.PARAMS:
            before = getattr(node.cfg, spec.name)
            new = CHANGES[spec.name] if spec.name in CHANGES else _another_value(spec, before)
            assert new != before, spec.name
            r = node.set_parameters([Parameter(spec.name, value=new)])[0]
            if spec.read_only:
                refused[spec.name] = r.reason
                assert not r.successful and "read-only" in r.reason and spec.name in r.reason, (spec.name, r)
                assert getattr(node.cfg, spec.name) == before, spec.name
                assert node.get_parameter(spec.name).value == before
                assert spec.reason, f"{spec.name}: read-only without a reason"
            else:
                applied[spec.name] = new
                assert r.successful, (spec.name, r.reason)
                assert getattr(node.cfg, spec.name) == new, spec.name
        assert set(refused) | set(applied) == {s.name for s in S.PARAMS}

        # The effects beyond the config field.
        assert node.metric_scale.active and "metric_scale_state" in node.diagnostics()   # metric_scale online
        assert engine.enabled is False                                   # adapt
        assert engine.lr == engine.cfg.lr == 1e-4                         # adapt_lr
        assert engine.optimizer_lrs() == [1e-4]    # in the training process, its optimiser
        assert node.adaptation.cfg.adapt_yield is False                    # adapt_yield: read per served frame
        c, col = frame()                                                  # publish_points, publish_colorized off
        assert c is None and not col
        assert node.set_parameters([Parameter("publish_points", value=True)])[0].successful
        c, col = frame()                                                  # voxel_size 0.5 m: unorganised
        assert c is not None and c.height == 1 and 0 < c.width < math.ceil(h / 4) * math.ceil(w / 4)
        assert c.header.frame_id == "camera_optical_frame"                # target_frame = the camera frame
        assert node.set_parameters([Parameter("voxel_size", value=0.0)])[0].successful
        c, _ = frame()                                                    # point_stride 4
        assert (c.height, c.width) == (math.ceil(h / 4), math.ceil(w / 4))
        r = node.set_parameters([Parameter("adapt", value=True)])[0]
        assert r.successful and engine.enabled is True
        # The ~/set_adaptation service and the `adapt` parameter are one switch.
        from std_srvs.srv import SetBool
        node.adaptation._srv_enable(SetBool.Request(data=False), SetBool.Response())
        assert engine.enabled is False and node.get_parameter("adapt").value is False and not node.cfg.adapt
        assert node.set_parameters([Parameter("adapt", value=True)])[0].successful and engine.enabled is True
        # Refused values leave everything as it was: the engine keeps its learning rate.
        r = node.set_parameters([Parameter("adapt_lr", value=2.0)])[0]
        assert not r.successful and "adapt_lr" in r.reason and engine.lr == 1e-4
        # The descriptor tells a user why a parameter is read-only (ros2 param describe).
        d = node.describe_parameter("adapt_step")
        assert d.read_only and "read-only:" in d.description
    finally:
        node.shutdown()
        ex.shutdown()
        node.destroy_node()
        peer.destroy_node()
        rclpy.shutdown(context=ctx)


def test_shipped_params_file_lists_every_parameter_at_its_default():
    """config/mono_depth.yaml restates the defaults for users; it must not drift from the dataclasses."""
    import yaml
    values = yaml.safe_load((ROOT / "config" / "mono_depth.yaml").read_text())["/**"]["ros__parameters"]
    assert set(values) == set(S.BY_NAME)
    drift = {k: (v, S.BY_NAME[k].default) for k, v in values.items() if v != S.BY_NAME[k].default}
    assert not drift, drift


@pytest.mark.ros
def test_adapt_cannot_be_switched_on_where_the_node_started_without_it(tmp_path):
    """Started with adapt: false, the shipped weights serve through the canonical-camera conversion and no
    anchors are loaded: switching adaptation on is refused with that reason, by parameter and by service."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter
    from std_srvs.srv import SetBool

    from mono_depth_ros.ros.depth_node import DepthNode

    ctx = Context()
    rclpy.init(context=ctx)
    overrides = [Parameter("adapt", value=False), Parameter("input_width", value=320),
                 Parameter("input_height", value=96), Parameter("inference_backend", value="eager"),
                 Parameter("resume", value=False), Parameter("checkpoint_dir", value=str(tmp_path / "ck"))]
    node = DepthNode("settings_probe_off", context=ctx, parameter_overrides=overrides)
    try:
        r = node.set_parameters([Parameter("adapt", value=True)])[0]
        assert not r.successful and "started with adapt: false" in r.reason and "canonical" in r.reason, r.reason
        assert node.adaptation.engine.enabled is False and node.cfg.adapt is False
        assert node.get_parameter("adapt").value is False
        resp = node.adaptation._srv_enable(SetBool.Request(data=True), SetBool.Response())
        assert not resp.success and "started with adapt: false" in resp.message
        assert node.adaptation.engine.enabled is False
        # Everything else still changes at runtime.
        assert node.set_parameters([Parameter("point_stride", value=3)])[0].successful and node.cfg.point_stride == 3
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
