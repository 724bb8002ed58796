#!/usr/bin/env python3
"""Does the training step on one core slow inference on the other? (exploration probe, issue 17)

Inference (the node's predictor, 1 thread) pinned to core 0; the node's fast adaptation step looping in a
child process pinned to core 1. Prints inference p50 / p95 alone, beside the training, with the training
paused (SIGSTOP), beside it again, and beside a plain Python busy loop. Linux, 2+ cores.

    tools/serving_contention.py
"""
import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TRAINER = """
import random, sys, torch
sys.path.insert(0, %r)
torch.set_num_threads(1)
from mono_depth_ros.tools.bench.core import node_adaptation_engines
fast, _, trips = node_adaptation_engines(192, 640)
rng = random.Random(0)
print('ready', flush=True)
while True:
    fast.train_batch(rng.sample(trips, 1 + fast.cfg.replay_per_step), True)
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=60, help="inferences per condition (20 ms apart)")
    args = p.parse_args(argv)
    import numpy as np
    import torch

    from mono_depth_ros.inference import node_predictor
    from mono_depth_ros.ros.params import NodeConfig

    os.sched_setaffinity(0, {0})
    torch.set_num_threads(1)
    pred, _ = node_predictor(NodeConfig())
    rgb = (np.random.default_rng(0).random((192, 640, 3)) * 255).astype(np.uint8)
    K = np.array([[370.0, 0, 320], [0, 370, 96], [0, 0, 1]])

    def lat(label):
        out = []
        for _ in range(args.frames):
            t0 = time.perf_counter()
            pred.predict(rgb, K)
            out.append(1e3 * (time.perf_counter() - t0))
            time.sleep(0.02)
        print(f"{label:40s} p50 {np.percentile(out, 50):6.2f} ms  p95 {np.percentile(out, 95):6.2f} ms", flush=True)

    for _ in range(5):
        pred.predict(rgb, K)
    lat("inference alone (core 0)")
    trainer = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", TRAINER % str(ROOT)],
                               stdout=subprocess.PIPE, text=True)
    try:
        trainer.stdout.readline()
        time.sleep(3)
        lat("beside the training step (core 1)")
        os.kill(trainer.pid, signal.SIGSTOP)
        time.sleep(0.5)
        lat("training paused (SIGSTOP)")
        os.kill(trainer.pid, signal.SIGCONT)
        time.sleep(1)
        lat("beside the training step again")
    finally:
        trainer.kill()
    busy = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1)
        lat("beside a Python busy loop (core 1)")
    finally:
        busy.kill()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
