"""The adaptation's training room in a child process (``adapt_process``, adapt/worker.py).

Same triplets in -> the same verified weights out as the in-process engine; errors cross the
pipe with their type; a killed training process is reported and replaced, and nothing verified
is lost; the process never outlives its parent.
"""
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

from mono_depth_ros.adapt.engine import AdaptationEngine
from mono_depth_ros.adapt.session import fit_to_model
from mono_depth_ros.adapt.triplets import Triplet
from mono_depth_ros.adapt.worker import ProcessEngine, TrainingProcessError
from mono_depth_ros.checkpoint import load_checkpoint, shipped_checkpoint_path

H, W = 96, 320


@pytest.fixture(scope="module")
def model():
    return load_checkpoint(shipped_checkpoint_path())[0]


def _triplets(n: int, seed: int = 3):
    """Textured frames moving 0.5 m forward per frame, known poses (training resolution)."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (3, H + 8, W + 8 * n + 24), dtype=np.uint8)
    K = torch.tensor([[0.58 * W, 0, W / 2], [0, 1.92 * H, H / 2], [0, 0, 1]], dtype=torch.float32)
    out = []
    for i in range(n):
        def img(k):
            return torch.from_numpy(np.ascontiguousarray(base[:, 4:4 + H, 4 + 8 * k:4 + 8 * k + W]))
        T_prev, T_next = torch.eye(4), torch.eye(4)
        T_prev[2, 3], T_next[2, 3] = 0.5, -0.5
        out.append(Triplet(int(1e9) * (i + 1), img(i + 1), (img(i), img(i + 2)), (T_prev, T_next), K))
    return out


def _cfg(model, **kw):
    return fit_to_model(model, train_height=H, train_width=W, crop_width=128, swap_every=2, good_every=2, **kw)


def test_same_triplets_give_the_same_verified_weights_as_in_process(model):
    torch.set_num_threads(1)
    cfg = _cfg(model)
    trips = _triplets(12)
    served_here, served_there = [], []
    torch.manual_seed(12345)   # the engine's random numbers come from its seed, not from the process's RNG
    here = AdaptationEngine(model, None, cfg, on_weights=served_here.append)
    there = ProcessEngine(model, None, cfg, on_weights=served_there.append, threads=1)
    try:
        for t in trips:
            a, b = here.train_next(t), there.train_next(t)
            assert (a.status, a.loss, a.batch) == (b.status, b.loss, b.batch)
        assert here.counters.steps == there.counters.steps == len(trips)
        assert len(served_here) == len(served_there) >= 3
        for sa, sb in zip(served_here, served_there):
            assert all(torch.equal(sa[k], sb[k]) for k in sa)
        ga, gb = here.good_state(), there.good_state()
        assert all(torch.equal(ga[k], gb[k]) for k in ga)
        moved = max(float((ga[k].float() - v.float()).abs().max()) for k, v in here.initial.items()
                    if v.is_floating_point())
        assert moved > 1e-5
        sh, st = here.training_stats(), there.stats()
        for k in ("adapt_steps", "adapt_swaps", "adapt_replay", "adapt_rollbacks", "adapt_loss"):
            assert sh[k] == st[k], k
    finally:
        there.close()
    assert there.pid is None


def test_errors_cross_the_pipe_and_reset_serves_the_initial_weights(model):
    cfg = _cfg(model)
    served = []
    eng = ProcessEngine(model, None, cfg, on_weights=served.append)
    try:
        with pytest.raises(ValueError, match="lr"):
            eng.set_lr(5.0)
        eng.set_lr(1e-4)
        assert eng.lr == pytest.approx(1e-4) and eng.stats()["adapt_lr"] == pytest.approx(1e-4)
        for t in _triplets(4):
            eng.train_next(t)
        eng.reset_to_initial()
        last = served[-1]
        assert all(torch.equal(last[k], v) for k, v in eng.initial.items())
    finally:
        eng.close()


def test_a_killed_training_process_is_reported_and_replaced(model):
    cfg = _cfg(model)
    eng = ProcessEngine(model, None, cfg)
    try:
        trips = _triplets(6)
        for t in trips[:4]:
            eng.train_next(t)
        good = eng.good_state()
        steps = eng.counters.steps
        os.kill(eng.pid, signal.SIGKILL)
        with pytest.raises(TrainingProcessError, match="signal 9"):
            eng.train_next(trips[4])
        assert eng.stats()["adapt_process_restarts"] == 1
        assert eng.good_state() is good            # nothing verified was lost
        assert eng.train_next(trips[5]).status == "ok"   # the new process trains, from the verified weights
        assert steps == 4
    finally:
        eng.close()


def test_poll_ready_says_when_the_process_is_up_and_a_dead_one_is_restarted(model):
    """The node logs "adaptation ready" from ``poll_ready``: False while the fresh interpreter imports
    torch (seconds), True once the engine is built; a process that died before it was up is restarted."""
    eng = ProcessEngine(model, None, _cfg(model))
    try:
        assert eng.poll_ready(0.0) is False          # a spawned interpreter needs > 0 s to import torch
        t0 = time.monotonic()
        while not eng.poll_ready(0.5):
            assert time.monotonic() - t0 < 120, "the training process did not come up in 120 s"
        assert eng.poll_ready(0.0) is True
        assert eng.train_next(_triplets(1)[0]).status == "ok"
    finally:
        eng.close()
    eng = ProcessEngine(model, None, _cfg(model))
    try:
        os.kill(eng.pid, signal.SIGKILL)
        with pytest.raises(TrainingProcessError, match="signal 9"):
            while not eng.poll_ready(0.5):
                pass
        assert eng.stats()["adapt_process_restarts"] == 1
        eng.wait_ready()
        assert eng.train_next(_triplets(1)[0]).status == "ok"
    finally:
        eng.close()


def test_the_training_process_does_not_outlive_its_parent(tmp_path):
    """The parent dies without closing (SIGKILL): the child sees the pipe close and exits."""
    script = textwrap.dedent(f"""
        import sys, time
        from mono_depth_ros.adapt.worker import ProcessEngine
        from mono_depth_ros.adapt.session import fit_to_model
        from mono_depth_ros.checkpoint import load_checkpoint, shipped_checkpoint_path
        if __name__ == "__main__":
            model = load_checkpoint(shipped_checkpoint_path())[0]
            eng = ProcessEngine(model, None, fit_to_model(model, train_height={H}, train_width={W}))
            eng.wait_ready()
            print(eng.pid, flush=True)
            time.sleep(600)
    """)
    path = tmp_path / "parent.py"
    path.write_text(script)
    parent = subprocess.Popen([sys.executable, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        child = int(parent.stdout.readline())
        os.kill(child, 0)                      # alive while the parent is
        parent.kill()
        parent.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the training process outlived its parent by 20 s")
    finally:
        if parent.poll() is None:
            parent.kill()


def _state(pid: int) -> str:
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]


def _settled_state(pid: int, want: str, timeout: float = 2.0) -> str:
    """The process's state once it reads ``want`` (a signal is delivered asynchronously: a process
    running on the other core shows "R" for a moment after SIGSTOP), or whatever it reads at the timeout."""
    end = time.monotonic() + timeout
    while (st := _state(pid)) != want and time.monotonic() < end:
        time.sleep(0.001)
    return st


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_hold_pauses_the_training_process_while_a_frame_is_served(model):
    import threading
    eng = ProcessEngine(model, None, _cfg(model))
    try:
        eng.wait_ready()
        trips = _triplets(3)
        eng.train_next(trips[0])
        done = threading.Event()
        with eng.hold():
            with eng.hold():                      # nested holds (two threads serving) count
                assert _settled_state(eng.pid, "T") == "T"     # stopped
            assert _state(eng.pid) == "T"
            t = threading.Thread(target=lambda: (eng.train_next(trips[1]), done.set()))
            t.start()
            assert not done.wait(1.5)             # the step waits for the frame
        assert done.wait(60) and _state(eng.pid) != "T"
        t.join()
        assert eng.counters.steps == 2
    finally:
        eng.close()
    assert eng.pid is None
