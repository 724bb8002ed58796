"""``depth_scorer`` (tools/score_node.py) over real DDS: pairs depth with depth_gt by stamp, in either order,
and publishes the known metrics of each pair on depth/metrics; logs the running mean."""
import time

import numpy as np
import pytest

from mono_depth_ros.metrics import PrequentialScorer

from .rosutil import NodeProcess, spin_until

rclpy = pytest.importorskip("rclpy")

H, W = 24, 32


def _gt() -> np.ndarray:
    """(H,W) metres 2..50 with a few invalid pixels (inf, NaN, beyond 80 m)."""
    gt = np.linspace(2.0, 50.0, H * W, dtype=np.float32).reshape(H, W)
    gt[0, :3] = (np.inf, np.nan, 100.0)
    return gt


def _expected(e: float) -> dict[str, float]:
    """Metrics of pred = gt * (1 + e) on the valid pixels (all clamps inactive)."""
    g = _gt().astype(np.float64)
    g = g[np.isfinite(g) & (g <= 80.0)]
    return {"abs_rel": e, "sq_rel": e * e * g.mean(), "rmse": e * np.sqrt((g * g).mean()),
            "a1": 1.0 if 1 + e < 1.25 else 0.0, "scale_ratio": 1.0 / (1.0 + e)}


def _depth_msg(depth, stamp_ns, frame="camera_optical_frame"):
    from mono_depth_ros.ros.conversions import depth_to_msg
    from std_msgs.msg import Header
    h = Header(frame_id=frame)
    h.stamp.sec, h.stamp.nanosec = divmod(int(stamp_ns), 1_000_000_000)
    return depth_to_msg(depth, h)


def _gt_msg_16u(depth, stamp_ns):
    """16UC1 millimetres (0 = invalid), as some datasets store ground truth."""
    from sensor_msgs.msg import Image
    mm = np.where(np.isfinite(depth) & (depth < 65.0), np.round(depth * 1000.0), 0).astype("<u2")
    msg = _depth_msg(np.zeros((1, 1), np.float32), stamp_ns)
    msg.height, msg.width = mm.shape
    msg.encoding, msg.step, msg.data = "16UC1", mm.shape[1] * 2, mm.tobytes()
    return msg


def test_stamp_scorer_pairs_in_either_order_and_bounds_the_unmatched():
    s = PrequentialScorer(keep=3)
    gt = _gt()
    assert s.add_prediction(1, gt * 1.1) is None
    m = s.add_ground_truth(1, gt)
    assert m["abs_rel"] == pytest.approx(0.1, abs=1e-6)
    assert s.add_ground_truth(2, np.repeat(np.repeat(gt, 2, 0), 2, 1)) is None    # 2x GT: resized (nearest)
    assert s.add_prediction(2, gt * 1.2)["abs_rel"] == pytest.approx(0.2, abs=1e-6)
    for k in range(10, 20):
        s.add_prediction(k, gt)
    assert s.add_ground_truth(10, gt) is None        # dropped: only the 3 newest wait
    assert s.add_ground_truth(19, gt)["abs_rel"] == pytest.approx(0.0, abs=1e-7)
    assert s.frames == 3 and s.mean["abs_rel"] == pytest.approx(0.1, abs=1e-6)
    assert s.add_prediction(30, np.full((H, W), np.nan, np.float32)) is None
    assert s.add_ground_truth(30, np.full((H, W), np.inf, np.float32)) is None   # nothing valid
    assert s.unscorable == 1 and s.frames == 3


@pytest.mark.ros
@pytest.mark.slow
def test_scorer_node_over_dds_publishes_known_metrics_per_paired_stamp(tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    proc = NodeProcess(tmp_path, params={"log_every": 4}, remaps={"depth_gt": "/camera/depth_gt"},
                       module="mono_depth_ros.tools.score_node", name="scorer")
    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(f"test_scorer_client_{int(time.time() * 1000) % 100000}", context=ctx)
    ex = SingleThreadedExecutor(context=ctx)
    ex.add_node(node)
    try:
        qos = QoSProfile(depth=20, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        pub_depth = node.create_publisher(Image, "depth", qos)
        pub_gt = node.create_publisher(Image, "/camera/depth_gt", qos)
        heard = []
        node.create_subscription(DiagnosticArray, "depth/metrics", heard.append, 20)
        assert proc.wait_for_log("depth scorer ready", 60), proc.log()
        assert spin_until(node, lambda: pub_depth.get_subscription_count() and pub_gt.get_subscription_count()
                          and node.count_publishers("depth/metrics"), 30, ex)
        time.sleep(0.5)
        gt = _gt()
        errors = {1: 0.05, 2: 0.1, 3: 0.3, 4: 0.03}
        t0 = 1_700_000_000_000_000_000
        for k, e in errors.items():
            stamp = t0 + k * 100_000_000
            pred, g = _depth_msg(gt * (1 + e), stamp), _depth_msg(gt, stamp)
            first, second = ((pub_depth, pred), (pub_gt, g)) if k % 2 else ((pub_gt, g), (pub_depth, pred))
            first[0].publish(first[1])
            spin_until(node, lambda: False, 0.15, ex)
            second[0].publish(second[1])
            spin_until(node, lambda: False, 0.15, ex)
        pub_depth.publish(_depth_msg(gt, t0 + 9 * 100_000_000))           # never paired: never scored
        stamp5 = t0 + 5 * 100_000_000                                     # 16UC1 GT, scored too
        pub_gt.publish(_gt_msg_16u(gt, stamp5))
        spin_until(node, lambda: False, 0.15, ex)
        pub_depth.publish(_depth_msg(gt, stamp5))
        assert spin_until(node, lambda: len(heard) >= 5, 20, ex), [len(heard), proc.log()]
        spin_until(node, lambda: False, 0.5, ex)
        assert len(heard) == 5
        by_stamp = {}
        for arr in heard:
            st = arr.status[0]
            vals = {kv.key: float(kv.value) for kv in st.values}
            assert set(vals) == {"abs_rel", "sq_rel", "rmse", "a1", "scale_ratio", "frames"}
            by_stamp[(arr.header.stamp.sec * 1_000_000_000 + arr.header.stamp.nanosec - t0) // 100_000_000] = vals
        assert sorted(by_stamp) == [1, 2, 3, 4, 5]
        for k, e in errors.items():
            for key, want in _expected(e).items():
                assert by_stamp[k][key] == pytest.approx(want, rel=1e-3, abs=1e-4), (k, key)
        # 16UC1 millimetres: pred == gt to within the millimetre rounding
        assert by_stamp[5]["abs_rel"] < 1e-3 and by_stamp[5]["scale_ratio"] == pytest.approx(1.0, abs=1e-3)
        assert [v["frames"] for _, v in sorted(by_stamp.items())] == [1, 2, 3, 4, 5]
        assert proc.wait_for_log("prequential over 4 frames: AbsRel ", 10), proc.log()
        assert _logged_mean(proc.log(), 4) == pytest.approx(np.mean(list(errors.values())), abs=1e-3)
    finally:
        ex.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=ctx)
        proc.stop()
    log = proc.log_path.read_text()
    assert _logged_mean(log, 5) == pytest.approx((sum(errors.values()) + by_stamp[5]["abs_rel"]) / 5, abs=1e-3)


def _logged_mean(log: str, frames: int) -> float:
    import re
    found = re.findall(rf"prequential over {frames} frames: AbsRel ([0-9.]+)", log)
    assert found, log
    return float(found[-1])
