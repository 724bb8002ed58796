"""One adaptation session, two feeders (issue 13): the node's path and the bag path train bit-identical weights.

The node path is the node's own code without DDS: the bag's messages are deserialised into rclpy
messages and handed to the callbacks of the subscriptions the node's rooms created (TF and
ego-motion), camera frames go through the node's image/camera_info conversions into
``NodeAdaptation.on_frame``, and the adaptation's steps run through ``run_due_steps`` (the
adaptation thread's body) after every frame. The bag path is ``mono-depth adapt``'s ``adapt_bag``.
"""
import numpy as np
import pytest
import torch

BAG_TO_NODE = {"/odom": "/odom", "/imu/data": "/imu", "/gps/fix": "/gps/fix", "/tf": "/tf", "/tf_static": "/tf_static",
               "/pose": "/pose"}


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    from mono_depth_ros.tools.synth import generate_bag
    out = tmp_path_factory.mktemp("drive") / "drive_A_session"
    generate_bag(out, preset="A", seed=12, duration_s=5.0, width=320, height=96, progress=False, contact_sheet=False)
    return out


def _anchors():
    from mono_depth_ros.adapt.anchors import load_anchor_images
    return load_anchor_images("synthetic_A")[:4]


def _node_path(bag, tmp_path, anchors, monkeypatch, process=False):
    import rclpy
    from rclpy.serialization import deserialize_message

    from mono_depth_ros.bagio import open_reader
    from mono_depth_ros.checkpoint import load_checkpoint, shipped_checkpoint_path
    from mono_depth_ros.conventions import Topics
    from mono_depth_ros.inference import DepthPredictor
    from mono_depth_ros.ros import adaptation as node_adaptation
    from mono_depth_ros.ros.adaptation import NodeAdaptation
    from mono_depth_ros.ros.conversions import camera_info_to_K, image_to_rgb
    from mono_depth_ros.ros.params import NodeConfig
    from mono_depth_ros.ros.problems import ProblemReporter
    from mono_depth_ros.ros.conversions import message_class
    from mono_depth_ros.ros.tf import TfSource

    monkeypatch.setattr(node_adaptation, "load_anchor_images", lambda spec: anchors)
    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("session_node_path", context=ctx)
    try:
        tf = TfSource(node, use_tf2_ros=False)
        cfg = NodeConfig(adapt=True, adapt_anchor="synthetic_A", adapt_steps_per_frame=1.0, checkpoint_period=0.0,
                         checkpoint_dir=str(tmp_path / "ckpt"), resume=False, adapt_process=process)
        model, meta = load_checkpoint(shipped_checkpoint_path())
        predictor = DepthPredictor(model, tuple(meta["input_size"]))
        ad = NodeAdaptation(node, cfg, predictor, model.state_dict(), ProblemReporter(node.get_logger(), lambda: 5.0),
                            tf, start_thread=False)
        subs = {}
        for sub in node.subscriptions:
            subs.setdefault(sub.topic_name, []).append(sub.callback)
        assert {"/odom", "/imu", "/gps/fix", "/tf", "/tf_static"} <= set(subs), sorted(subs)
        info = None
        with open_reader(bag) as reader:
            classes = {c.id: message_class(c.msgtype) for c in reader.connections}
            for conn, _, raw in reader.messages():
                msg = deserialize_message(bytes(raw), classes[conn.id])
                if conn.topic in BAG_TO_NODE:
                    for cb in subs.get(BAG_TO_NODE[conn.topic], []):
                        cb(msg)
                elif conn.topic == Topics.BAG_CAMERA_INFO:
                    info = msg
                elif conn.topic == Topics.BAG_IMAGE and info is not None:
                    ad.on_frame(msg.header, image_to_rgb(msg), camera_info_to_K(info))
                    ad.run_due_steps()
        ad.session.close()
        return ad.session
    finally:
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def _bag_path(bag, anchors, node_cfg):
    from mono_depth_ros.adapt.offline import adapt_bag, load_start
    model, input_size, _ = load_start("")
    session, _ = adapt_bag([bag], model, input_size, node_cfg["adapt"], node_cfg["ego"], node_cfg["gating"],
                           steps_per_frame=1.0, eval_every=0, progress=False, anchors=anchors)
    return session


@pytest.mark.parametrize("process", [False, True], ids=["thread", "process"])
def test_node_path_and_bag_path_train_bit_identical_weights(drive, tmp_path, monkeypatch, process):
    """The node's training in a thread or in its training process (``adapt_process``) and the bag path."""
    torch.set_num_threads(1)
    anchors = _anchors()
    torch.manual_seed(0)
    node = _node_path(drive, tmp_path, anchors, monkeypatch, process)
    torch.manual_seed(0)
    cfgs = {"adapt": node.engine.cfg, "ego": node.provider.config, "gating": node.selector.config}
    bag = _bag_path(drive, anchors, cfgs)
    assert bag.engine.cfg == node.engine.cfg
    sn, sb = node.stats(), bag.stats()
    assert sn["adapt_steps"] >= 20, sn
    for k in ("adapt_frames", "adapt_steps", "adapt_learned_frames", "adapt_swaps", "adapt_rollbacks",
              "egomotion_source"):
        assert sn[k] == sb[k], (k, sn[k], sb[k])
    gn, gb = node.engine.good_state(), bag.engine.good_state()
    moved = max(float((gb[k].float() - v.float()).abs().max()) for k, v in bag.engine.initial.items()
                if v.is_floating_point())
    assert moved > 1e-4   # it learned something
    if not process:   # the trained (not only the verified) weights live here too
        wn, wb = node.engine.model.state_dict(), bag.engine.model.state_dict()
        assert all(torch.equal(wn[k], wb[k]) for k in wn), [k for k in wn if not torch.equal(wn[k], wb[k])][:5]
    assert all(torch.equal(gn[k], gb[k]) for k in gn)


def test_ego_motion_subscriptions_exist_only_while_adapting(tmp_path):
    """adapt true -> odom/imu/gps//tf subscriptions; switched off at runtime -> gone; on again -> back."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from mono_depth_ros.ros.depth_node import DepthNode

    ego = {"/odom", "/imu", "/gps/fix"}
    ctx = Context()
    rclpy.init(context=ctx)
    overrides = [Parameter("adapt_anchor", value="none"), Parameter("resume", value=False),
                 Parameter("checkpoint_dir", value=str(tmp_path / "ck")), Parameter("checkpoint_period", value=0.0)]
    node = DepthNode("session_subs", context=ctx, parameter_overrides=overrides)
    try:
        topics = lambda: [s.topic_name for s in node.subscriptions]  # noqa: E731
        assert ego <= set(topics()) and topics().count("/tf") == 1, topics()   # one /tf: the node's lookup
        assert node.set_parameters([Parameter("adapt", value=False)])[0].successful
        assert not ego & set(topics()) and topics().count("/tf") == 1, topics()
        assert node.adaptation.engine.enabled is False
        assert node.set_parameters([Parameter("adapt", value=True)])[0].successful
        assert ego <= set(topics()) and node.adaptation.engine.enabled is True
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_node_subscribes_the_inputs_of_its_sources(tmp_path):
    """One subscription per input the configured sources read: the pose source adds /pose
    (PoseWithCovarianceStamped), imu_gps adds /imu and /gps/fix; TF only through the node's lookup."""
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from mono_depth_ros.ros.depth_node import DepthNode

    ctx = Context()
    rclpy.init(context=ctx)
    overrides = [Parameter("adapt_anchor", value="none"), Parameter("resume", value=False),
                 Parameter("egomotion_sources", value="pose,tf"),
                 Parameter("checkpoint_dir", value=str(tmp_path / "ck")), Parameter("checkpoint_period", value=0.0)]
    node = DepthNode("session_pose", context=ctx, parameter_overrides=overrides)
    try:
        subs = {s.topic_name: s.msg_type.__name__ for s in node.subscriptions}
        assert subs.get("/pose") == "PoseWithCovarianceStamped", subs
        assert not {"/odom", "/imu", "/gps/fix"} & set(subs), subs
        assert [s.topic_name for s in node.subscriptions].count("/tf") == 1
    finally:
        node.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)


def test_pacer_keeps_the_credits_of_frames_that_came_while_a_step_found_nothing():
    """A step that finds nothing to train drops the credits, except those of frames that arrived while
    it ran: the node's first step waits seconds for its training process, and the frames of those
    seconds must still be learned from (a CI run once learned nothing from a 3 s bag)."""
    from mono_depth_ros.adapt.session import StepPacer
    p = StepPacer(steps_per_frame=1.0)
    p.credit()
    assert p.take()
    mark = p.mark()
    p.credit()
    p.credit()                     # two frames while the step ran
    p.clear(since=mark)
    assert p.take() and p.take() and not p.take()
    p.credit()
    mark = p.mark()
    p.clear(since=mark)            # no frame since: nothing kept
    assert not p.take()
    p.credit()
    p.clear()
    assert not p.take()
    half = StepPacer(steps_per_frame=0.5)
    m = half.mark()
    for _ in range(20):
        half.credit()              # banked up to 4 x max(1, 0.5) = 4
    half.clear(since=m)
    assert sum(half.take() for _ in range(10)) == 4
