"""``mono-depth evaluate`` scores exactly what the node publishes (issue 13, point 8).

The same frames of a synthetic bag go through the node's path -- the predictor the node builds from
its parameters (``inference.node_predictor``), fed with rclpy messages decoded by the node's
converters -- and through ``evaluate``'s path (its CLI options, ``load_bag``, ``predict_frames``).
The depth must be identical to the bit, with the resize (320x96 bag, 640x192 network), the backend
and the canonical-camera conversion all in play.
"""
import argparse
import dataclasses

import numpy as np
import pytest

from mono_depth_ros.conventions import Topics

pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def gt_bag(tmp_path_factory):
    from mono_depth_ros.tools.synth import generate_bag
    out = tmp_path_factory.mktemp("ident") / "gt"
    generate_bag(out, preset="B", seed=7, duration_s=0.6, width=320, height=96, progress=False,
                 contact_sheet=False, sensors="camera,depth_gt")
    return out


def _as_rclpy(msg, cls):
    """A rosbags message -> the rclpy message the node would receive (same fields, same bytes)."""
    out = cls()
    out.header.frame_id = msg.header.frame_id
    out.header.stamp.sec, out.header.stamp.nanosec = int(msg.header.stamp.sec), int(msg.header.stamp.nanosec)
    for f in ("height", "width"):
        setattr(out, f, int(getattr(msg, f)))
    if hasattr(msg, "encoding"):
        out.encoding, out.is_bigendian, out.step = str(msg.encoding), int(msg.is_bigendian), int(msg.step)
        out.data = bytes(np.asarray(msg.data, np.uint8))
    else:
        out.k = [float(v) for v in msg.k]
    return out


def test_evaluate_gives_the_depth_the_node_publishes(gt_bag):
    from sensor_msgs.msg import CameraInfo, Image

    from mono_depth_ros.bagio import iter_messages
    from mono_depth_ros.inference import node_predictor
    from mono_depth_ros.learning import evaluate_cli
    from mono_depth_ros.learning.data import load_bag
    from mono_depth_ros.learning.evaluate import evaluate_frames, predict_frames
    from mono_depth_ros.ros import params as P
    from mono_depth_ros.ros.conversions import camera_info_to_K, image_to_rgb

    # evaluate's path: its own options, as `mono-depth evaluate --bag B --threads 1` parses them
    parser = argparse.ArgumentParser()
    evaluate_cli.add_arguments(parser)
    args = parser.parse_args(["--bag", str(gt_bag), "--threads", "1"])
    drives = [load_bag(gt_bag, need_depth=True)]
    ev = evaluate_cli.build_predictor(args, drives)
    ev_depth = [p.depth for p in predict_frames(ev, drives[0].images, drives[0].K)]

    # the node's path: default parameters (no adaptation: the canonical camera applies), one thread
    cfg = dataclasses.replace(P.NodeConfig(), adapt=False, num_threads=1)
    node, _ = node_predictor(cfg)
    images, K = [], None
    for topic, _, msg in iter_messages(gt_bag, [Topics.BAG_IMAGE, Topics.BAG_CAMERA_INFO]):
        if topic == Topics.BAG_IMAGE:
            images.append(image_to_rgb(_as_rclpy(msg, Image)))
        elif K is None:
            K = camera_info_to_K(_as_rclpy(msg, CameraInfo))
    node_depth = [node.predict(rgb, K).depth for rgb in images]

    assert ev.backend == node.backend == "onnxruntime"
    assert ev.canonical is not None and ev.canonical == node.canonical
    assert len(ev_depth) == len(node_depth) == len(drives[0]) >= 5
    for a, b in zip(ev_depth, node_depth):
        assert a.shape == b.shape == (192, 640)           # network resolution, as published
        assert np.array_equal(a, b)
    assert np.isfinite(node_depth[0]).all() and 1.0 < float(np.median(node_depth[0])) < 80.0

    # and the score evaluate prints is the one of those very depth images against the GT on their grid
    from mono_depth_ros.metrics import MetricAccumulator
    from mono_depth_ros.preprocess import resize_depth
    acc = evaluate_frames(ev, drives)
    ref = MetricAccumulator()
    for d, gt in zip(node_depth, drives[0].depths):
        ref.add(resize_depth(gt.astype(np.float32), d.shape), d)
    assert acc.count == len(node_depth) and acc.summary() == ref.summary()
