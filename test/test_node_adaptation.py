"""Online adaptation inside the running node, over real DDS with a replayed synthetic drive (sim time)."""
import re
import time

import pytest

from .rosutil import BAG_REMAPS as REMAPS
from .rosutil import NodeProcess, spin_until
from .rosutil import diagnostics as _diag
from .rosutil import replay_in_thread as _replay_in_thread
from .test_node_dds import ros_node  # noqa: F401  (fixture)

rclpy = pytest.importorskip("rclpy")
pytestmark = [pytest.mark.ros, pytest.mark.slow]


@pytest.fixture(scope="module")
def small_drive(tmp_path_factory):
    from mono_depth_ros.tools.synth import generate_bag
    out = tmp_path_factory.mktemp("drive") / "drive_A_small"
    generate_bag(out, preset="A", seed=11, duration_s=8.0, width=320, height=96, progress=False,
                 contact_sheet=False)
    return out


@pytest.mark.faults
def test_adapts_checkpoints_and_resumes_after_sigkill(tmp_path, ros_node, small_drive):
    node, ex = ros_node
    params = {"use_sim_time": True, "checkpoint_period": 1.5, "adapt_steps_per_frame": 2, "publish_points": False,
              "adapt_train_width": 192, "adapt_train_height": 64}
    proc = NodeProcess(tmp_path, params=params, remaps=REMAPS)
    try:
        assert proc.wait_for_log("depth node ready", 90), proc.log()
        assert proc.wait_for_log("adaptation ready", 120), proc.log()   # its training process is up
        done = _replay_in_thread(node, small_drive)
        assert spin_until(node, done.is_set, 60, ex)
        assert proc.wait_for_log("checkpoint saved (periodic)", 20), proc.log()
        stats = _diag(node, ex)
        assert int(stats["adapt_steps"]) > 0 and stats["egomotion_source"] in ("odom", "tf"), stats
        assert int(stats["weights_version"]) > 0, stats  # verified weights were swapped into serving
        saved_steps = int(stats["adapt_steps"])
    finally:
        proc.kill()  # SIGKILL: no shutdown save happens
    assert (tmp_path / "checkpoints" / "adapted.pt").exists()
    # Restart with the same checkpoint directory: resumes from the last good checkpoint.
    proc2 = NodeProcess(tmp_path, params=params, remaps=REMAPS, name="node2")
    try:
        assert proc2.wait_for_log("depth node ready", 90), proc2.log()
        log = proc2.log()
        m = re.search(r"resuming from adapted checkpoint \S+adapted\.pt \((\d+) steps\)", log)
        assert m, log
        assert 0 < int(m.group(1)) <= saved_steps
        assert "(resumed)" in log
    finally:
        assert proc2.stop() == 0


def test_services_and_shutdown_checkpoint(tmp_path, ros_node, small_drive):
    from std_srvs.srv import SetBool, Trigger
    node, ex = ros_node
    proc = NodeProcess(tmp_path, params={"use_sim_time": True, "checkpoint_period": 0.0, "publish_points": False,
                                         "adapt_train_width": 192, "adapt_train_height": 64}, remaps=REMAPS)
    try:
        assert proc.wait_for_log("depth node ready", 90), proc.log()

        def call(srv_type, name, req):
            cli = node.create_client(srv_type, name)
            assert cli.wait_for_service(timeout_sec=20), name
            fut = cli.call_async(req)
            assert spin_until(node, fut.done, 30, ex)
            return fut.result()

        r = call(SetBool, "/mono_depth/set_adaptation", SetBool.Request(data=False))
        assert r.success and "disabled" in r.message
        r = call(SetBool, "/mono_depth/set_adaptation", SetBool.Request(data=True))
        assert r.success
        done = _replay_in_thread(node, small_drive, rate=1.0)
        assert spin_until(node, done.is_set, 60, ex)
        r = call(Trigger, "/mono_depth/save_checkpoint", Trigger.Request())
        assert r.success and r.message.endswith("adapted.pt"), r.message
        r = call(Trigger, "/mono_depth/reset_weights", Trigger.Request())
        assert r.success
    finally:
        assert proc.stop() == 0  # SIGINT: clean exit
    assert "checkpoint saved (requested)" in proc.log()


def test_too_high_learning_rate_rolls_back_instead_of_publishing_garbage(tmp_path, ros_node, small_drive):
    """Shipped weights + a far too high learning rate: the node rolls back, and the depth it
    publishes (scored against GT before learning from each frame) stays as good as the start."""
    import numpy as np
    from diagnostic_msgs.msg import DiagnosticArray

    from mono_depth_ros.bagio import iter_messages
    from mono_depth_ros.msgconv import depth_image_to_metres, image_to_rgb
    from mono_depth_ros.checkpoint import load_checkpoint, shipped_checkpoint_path
    from mono_depth_ros.conventions import Topics
    from mono_depth_ros.inference import DepthPredictor
    from mono_depth_ros.metrics import compute_depth_metrics

    if not shipped_checkpoint_path().exists():
        pytest.skip("shipped weights not built")
    # Baseline: the shipped weights on every frame of the drive, offline.
    model, meta = load_checkpoint(shipped_checkpoint_path())
    pred = DepthPredictor(model, meta["input_size"])
    K, base, frame = None, {}, {}
    for topic, _, msg in iter_messages(small_drive, [Topics.BAG_CAMERA_INFO, Topics.BAG_IMAGE, Topics.BAG_DEPTH_GT]):
        s = msg.header.stamp.sec * 10**9 + msg.header.stamp.nanosec
        if topic == Topics.BAG_CAMERA_INFO:
            K = np.array(msg.k).reshape(3, 3)
        elif topic == Topics.BAG_IMAGE and K is not None:
            frame[s] = pred.predict(image_to_rgb(msg), K).depth
        elif s in frame:
            import cv2
            d = frame.pop(s)
            gt = cv2.resize(depth_image_to_metres(msg), (d.shape[1], d.shape[0]), interpolation=cv2.INTER_NEAREST)
            base[s] = compute_depth_metrics(gt, d)["abs_rel"]
    start = float(np.mean(list(base.values())))

    node, ex = ros_node
    proc = NodeProcess(tmp_path, params={"use_sim_time": True, "adapt_lr": 0.05, "adapt_steps_per_frame": 2,
                                         "publish_points": False, "checkpoint_period": 0.0},
                       remaps=REMAPS)
    # Ground truth is scored by the separate tool (tools/score_node.py), as the demo does.
    scorer = NodeProcess(tmp_path, params={"use_sim_time": True}, remaps={"depth_gt": REMAPS["depth_gt"]},
                         module="mono_depth_ros.tools.score_node", name="scorer")
    metrics = []
    node.create_subscription(DiagnosticArray, "/depth/metrics", lambda m: metrics.append(m), 50)
    try:
        assert proc.wait_for_log("depth node ready", 90), proc.log()
        assert proc.wait_for_log("adaptation ready", 120), proc.log()   # its training process is up
        assert scorer.wait_for_log("depth scorer ready", 60), scorer.log()
        done = _replay_in_thread(node, small_drive)
        assert spin_until(node, done.is_set, 60, ex)
        spin_until(node, lambda: False, 2.0, ex)
        stats = _diag(node, ex)
    finally:
        proc.stop()
        scorer.stop()
    assert int(stats["adapt_rollbacks"]) > 0, stats
    served = {m.header.stamp.sec * 10**9 + m.header.stamp.nanosec:
              float({kv.key: kv.value for kv in m.status[0].values}["abs_rel"]) for m in metrics}
    assert len(served) >= 10, (len(served), proc.log()[-2000:])
    worst = max(served.values())
    mean = float(np.mean(list(served.values())))
    assert mean < 1.3 * start and worst < 2.0 * max(base.values()), (start, mean, worst, stats)
