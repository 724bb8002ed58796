"""The adaptation engine with its training room in a child process (``adapt_process: true``).

Why a process: the training step makes ~1,600 small torch calls, each taking Python's GIL. On a
thread beside the node's inference (the default before), every frame waited behind them: 10 Hz
depth p95 +51% over inference-only even with a 1 ms switch interval, and a step took ~300 ms in
the node against ~180 ms alone (BENCHMARKS.md). A child process has its own interpreter and core.

The split is the engine's own seam (:meth:`~.engine.AdaptationEngine.step` =
``triplets.next()`` + :meth:`~.engine.AdaptationEngine.train_next`):

* this process (:class:`ProcessEngine`): the :class:`~.triplets.TripletBuilder` (frames in, the
  frame selector, the ego-motion it reads), the pacing (the session's), the served weights and
  the checkpoint state (copies sent back with every reply that changed them), all statistics;
* the training process (:func:`_serve`): a complete :class:`~.engine.AdaptationEngine` (replay,
  network, optimiser, guard, serving policy: the same code as in-process) that trains each
  triplet sent to it.

Same triplets in -> same weights out as in-process (``test/test_worker.py``). One call at a time
(a lock), synchronous: the caller (the adaptation thread) blocks on the pipe, without the GIL,
while the child steps. The child ignores SIGINT (Ctrl-C reaches the whole process group; the
node's shutdown still needs the child's last answer) and exits when the pipe closes, so it never
outlives the node. If it dies anyway, the next call says so and a new one starts from the last
verified weights (nothing verified is lost: the parent holds them).

Standard library ``multiprocessing`` (spawn: a fresh interpreter, safe beside DDS threads) is the
transport; the triplets and weights cross it as ``torch.save`` bytes, read back with torch's ``weights_only``
loader (no pickle loads in the package: test_faults_security), ~1.1 MB per 640x192 triplet.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import logging
import multiprocessing as mp
import os
import signal
import threading
from collections import OrderedDict
from dataclasses import replace

import numpy as np
import torch

from mono_depth_ros.memory import HeapTrimPolicy

from .engine import (AdaptConfig, AdaptationEngine, StepReport, _Counters, calibration_gap_ns, frame_stats,
                     learned_share)
from .intrinsics import IntrinsicsCorrection
from .triplets import Triplet, TripletBuilder

__all__ = ["ProcessEngine", "TrainingProcessError"]

log = logging.getLogger(__name__)

#: Seconds to wait for the training process to build its engine (imports torch, the anchors' depth).
START_TIMEOUT_S = 120.0


class TrainingProcessError(RuntimeError):
    """The training process died or did not answer; the message says how (exit code, signal)."""


#: The dataclasses that cross the pipe (by name; anything else is refused on arrival).
_WIRE_TYPES = {"Triplet": Triplet, "StepReport": StepReport}


def _to_wire(obj):
    """Dataclasses -> tagged dicts, numpy scalars -> Python numbers, views -> compact tensors: what torch's
    ``weights_only`` loader accepts (tensors, numbers, strings, lists, tuples, dicts)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if type(obj).__name__ not in _WIRE_TYPES:
            raise TypeError(f"{type(obj).__name__} cannot cross to the training process")
        return {"__wire__": type(obj).__name__, **{f.name: _to_wire(getattr(obj, f.name))
                                                   for f in dataclasses.fields(obj)}}
    if isinstance(obj, torch.Tensor):   # a view would carry its whole storage
        return obj.clone() if obj.untyped_storage().nbytes() > obj.numel() * obj.element_size() else obj
    if isinstance(obj, dict) and len(obj) > 8 and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return _pack_state(obj)
    if isinstance(obj, dict):
        return type(obj)((k, _to_wire(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_wire(v) for v in obj)
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": torch.from_numpy(np.ascontiguousarray(obj))}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _pack_state(state) -> dict:
    """A state dict as one byte tensor + one string of ``key dtype shape`` lines. The ``weights_only`` loader
    unpickles in Python, object by object: ~180 tensors (and their tuples) took it ~10 ms at every swap,
    which delayed frames (10 Hz p95 +18%, BENCHMARKS.md); one tensor and one string take a fraction of it."""
    rows, chunks = [], []
    for k, v in state.items():
        v = v.detach().contiguous().cpu()
        rows.append(f"{k} {str(v.dtype).removeprefix('torch.')} {','.join(map(str, v.shape))}")
        chunks.append(v.reshape(-1).view(torch.uint8))
    return {"__state__": "\n".join(rows), "ordered": isinstance(state, OrderedDict),
            "data": torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.uint8)}


def _unpack_state(packed: dict):
    """Views into the one byte tensor (the receiver copies them into its network, or keeps them as they are)."""
    out, data, at = OrderedDict(), packed["data"], 0
    for row in filter(None, packed["__state__"].split("\n")):
        k, dtype, dims = row.rsplit(" ", 2)
        dt = getattr(torch, dtype)
        shape = tuple(int(d) for d in dims.split(",") if d)
        n = int(np.prod(shape, dtype=np.int64)) * _ITEMSIZE.setdefault(dt, torch.empty(0, dtype=dt).element_size())
        out[k] = data[at:at + n].view(dt).reshape(shape)
        at += n
    return out if packed["ordered"] else dict(out)


_ITEMSIZE: dict = {}


def _from_wire(obj):
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return obj["__ndarray__"].numpy()
        if "__state__" in obj:
            return _unpack_state(obj)
        name = obj.get("__wire__")
        fields = type(obj)((k, _from_wire(v)) for k, v in obj.items() if k != "__wire__")
        return fields if name is None else _WIRE_TYPES[name](**fields)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_from_wire(v) for v in obj)
    return obj


def _send(conn, obj) -> None:
    """``torch.save`` of plain containers and tensors (no pickled code objects): the other side reads it with
    torch's ``weights_only`` loader. (``Connection.send`` would pickle, and torch's multiprocessing reducers
    would move each tensor through a shared-memory file handed over by a helper thread.)"""
    buf = io.BytesIO()
    torch.save(_to_wire(obj), buf)
    conn.send_bytes(buf.getvalue())


def _decode(raw: bytes):
    return _from_wire(torch.load(io.BytesIO(raw), weights_only=True))


# ---------------------------------------------------------------- child side
def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies, even while it is stopped (:meth:`ProcessEngine.hold`),
    where it could not read the pipe's end. Elsewhere the pipe's end alone ends it."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _serve(conn, model, cfg: AdaptConfig, anchors, initial, threads: int) -> None:
    """The training process: one engine, answering ``(method, args)`` calls until the pipe closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent decides when we stop (module docstring)
    _die_with_parent()
    torch.set_num_threads(max(1, int(threads)))
    delivered: list = []
    engine = AdaptationEngine(model, None, cfg, on_weights=delivered.append, anchors=anchors)
    if initial is not None:
        engine.set_initial(initial)
    sent_good = engine.serving.good_state()
    heap = HeapTrimPolicy()   # bounds this process's resident set (memory.py), as the node's thread did

    def snapshot() -> dict:
        c = engine.counters
        return {"stats": engine.training_stats(), "lr": engine.lr, "intrinsics": engine.intrinsics_state(),
                "intr_served": getattr(engine, "_intr_served", None),
                "counters": {"steps": c.steps, "skipped": c.skipped, "rollbacks": c.rollbacks,
                             "learned": c.learned, "rollback_reasons": dict(c.rollback_reasons)}}

    _send(conn, ("ready", None, [], None, snapshot()))
    while True:
        try:
            msg = _decode(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if msg is None:
            conn.close()
            return
        name, args = msg
        try:
            result, error = getattr(engine, name)(*args), None
        except Exception as exc:  # the parent re-raises it (ValueError stays a ValueError)
            result, error = None, (type(exc).__name__, str(exc))
        good = engine.serving.good_state()
        new_good = None if good is sent_good else good
        sent_good = good
        out, delivered[:] = list(delivered), []
        if new_good is not None and out and out[-1] is new_good:
            new_good = "served"    # the last served weights are the checkpoint state (fast step): sent once
        _send(conn, ("ok", result, out, (error, new_good), snapshot()))
        if name == "train_next":
            heap.after_step()


# --------------------------------------------------------------- parent side
class ProcessEngine:
    """An :class:`~.engine.AdaptationEngine` whose training runs in a child process.

    The session's view of the engine: the same methods and attributes
    (:meth:`add_frame`, :meth:`step`, :meth:`stats`, :meth:`good_state`, :meth:`set_lr`, ...).

    Args:
        model, selector, config, on_weights, anchors: as for :class:`~.engine.AdaptationEngine`.
        threads: torch threads of the training process.
    """

    def __init__(self, model, selector, config: AdaptConfig | None = None, on_weights=None,
                 anchors: np.ndarray | None = None, threads: int = 1):
        self.cfg = cfg = config or AdaptConfig()
        self.lr = cfg.lr
        self.model = model                 # the network's identity (checkpoints name its architecture)
        self.on_weights = on_weights or (lambda sd: None)
        self.triplets = TripletBuilder(selector, (cfg.train_height, cfg.train_width), cfg.max_pending,
                                       round(cfg.stereo_sync_tolerance * 1e9) if cfg.stereo else None,
                                       calibration_gap_ns(cfg))
        self.enabled = True
        self.counters = _Counters()
        self.initial: "OrderedDict[str, torch.Tensor]" = OrderedDict(
            (k, v.detach().clone()) for k, v in model.state_dict().items())
        self._good = self.initial            # what a checkpoint holds (engine.good_state)
        self._intr_served = None
        self._intr_state = None
        self._training: dict = {"adapt_steps": 0, "adapt_skipped": 0, "adapt_rollbacks": 0, "adapt_swaps": 0,
                                "adapt_replay": 0, "adapt_learned_frames": 0, "adapt_loss": None,
                                "adapt_loss_avg": None, "adapt_lr": cfg.lr, "rollback_reasons": {}}
        self._initial_sent = True
        self._anchors = anchors
        self._threads = threads
        self._lock = threading.Lock()
        self._hold_lock = threading.Lock()
        self._unheld = threading.Condition(self._hold_lock)
        self._holds = 0
        self._ctx = mp.get_context("spawn")
        self._proc = None
        self._conn = None
        self.restarts = 0
        self._start(None)

    # ------------------------------------------------------------ process
    def _start(self, state) -> None:
        """Start a training process whose network starts from ``state`` (None: the model as given)."""
        model = self.model
        if state is not None:
            model = copy.deepcopy(model)
            model.load_state_dict(state)
        cfg = replace(self.cfg, lr=self.lr)
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_serve, name="mono_depth_training",
                                 args=(child, model, cfg, self._anchors, self.initial, self._threads), daemon=True)
        proc.start()
        child.close()
        self._proc, self._conn, self._pending_ready = proc, parent, True
        with self._hold_lock:
            if self._holds:          # started while a frame is being served: it waits for the frame
                self._signal(signal.SIGSTOP)

    def _signal(self, sig) -> None:
        try:
            if self._proc is not None:
                os.kill(self._proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass   # gone: the next call reports it and starts a new one

    @contextlib.contextmanager
    def hold(self):
        """Pause the training process while the caller serves a frame (SIGSTOP ... SIGCONT; nested holds
        from several threads count). Serving then has the CPU to itself, as without adaptation; the step in
        progress continues where it was. Measured: docs/learning.md, "Training in a process of its own"."""
        with self._hold_lock:
            self._holds += 1
            if self._holds == 1:
                self._signal(signal.SIGSTOP)
        try:
            yield
        finally:
            with self._hold_lock:
                self._holds -= 1
                if self._holds == 0:
                    self._signal(signal.SIGCONT)
                    self._unheld.notify_all()

    def _quiet(self) -> None:
        """Wait while a frame is served: this side's work for a step (building and encoding the triplet,
        decoding weights, the swap) takes Python's GIL, which the frame's path needs."""
        with self._unheld:
            while self._holds:
                self._unheld.wait()

    def _receive(self, timeout: float | None):
        if timeout is not None and not self._conn.poll(timeout):
            raise TrainingProcessError(f"the training process (pid {self._proc.pid}) did not answer in {timeout:.0f} s")
        raw = self._conn.recv_bytes()   # without the GIL while it waits
        self._quiet()
        return _decode(raw)

    def _dead(self, exc: BaseException) -> TrainingProcessError:
        """The process is gone: note how, and start a new one from the last verified weights."""
        self._proc.join(timeout=2.0)
        code = self._proc.exitcode
        how = (f"killed by signal {-code}" if code is not None and code < 0 else
               f"exit code {code}" if code is not None else f"no answer ({type(exc).__name__})")
        try:
            self._conn.close()
        except OSError:
            pass
        if self._proc.is_alive():
            self._proc.kill()
        self.restarts += 1
        self._start(self._good)   # training resumes from the checkpoint state; the served weights stay
        return TrainingProcessError(f"the adaptation's training process died ({how}); restarted from the last "
                                    "verified weights")

    def _call(self, name: str, *args):
        """One call into the training process (serialised); applies what its reply carries."""
        with self._lock:
            try:
                self._ensure_ready(START_TIMEOUT_S)
                if not self._initial_sent:
                    _send(self._conn, ("set_initial", (self.initial,)))
                    self._absorb(self._receive(None))
                    self._initial_sent = True
                self._quiet()
                _send(self._conn, (name, args))
                reply = self._receive(None)
            except (EOFError, OSError, TrainingProcessError) as exc:
                raise self._dead(exc) from None
            return self._absorb(reply)

    def _absorb(self, reply):
        kind, result, weights, extra, snap = reply
        if kind == "ok":
            error, good = extra
            if isinstance(good, str):     # "served": the last of ``weights``
                good = weights[-1]
            if good is not None:
                self._good = good
            for state in weights:        # verified weights, in the order the child served them
                self.on_weights(state)
            if error is not None:
                raise (ValueError if error[0] == "ValueError" else RuntimeError)(error[1])
        self._training = snap["stats"]
        self.lr = snap["lr"]
        self._intr_state, self._intr_served = snap["intrinsics"], snap["intr_served"]
        c = snap["counters"]
        self.counters = _Counters(c["steps"], c["skipped"], c["rollbacks"], c["learned"], c["rollback_reasons"])
        return result

    def close(self) -> None:
        """Stop the training process (waits for the step in progress)."""
        with self._lock:
            if self._proc is None:
                return
            self._signal(signal.SIGCONT)   # a held process could not read its end of the pipe
            try:
                _send(self._conn, None)
            except OSError:
                pass
            self._proc.join(timeout=10.0)
            if self._proc.is_alive():
                self._proc.kill()
                self._proc.join(timeout=5.0)
            self._conn.close()
            self._proc = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    # ------------------------------------------------------------ frames
    def add_frame(self, stamp_ns: int, rgb: np.ndarray, K: np.ndarray) -> None:
        self.triplets.add_frame(stamp_ns, rgb, K)

    def add_right_frame(self, stamp_ns: int, rgb: np.ndarray, T_right_left: np.ndarray) -> bool:
        return self.triplets.add_right_frame(stamp_ns, rgb, T_right_left)

    def clear_frames(self) -> None:
        self.triplets.clear()

    # ------------------------------------------------------------ steps
    def step(self) -> StepReport | None:
        if not self.enabled:
            return None
        self.wait_ready()   # the triplet is chosen once the process can train it: its start takes seconds
        self._quiet()
        return self.train_next(self.triplets.next())

    def train_next(self, trip: Triplet | None) -> StepReport | None:
        return self._call("train_next", trip)

    # ------------------------------------------------------------ control
    def set_lr(self, lr: float) -> None:
        replace(self.cfg, lr=float(lr))    # AdaptConfig checks the range here, before the child is asked
        self._call("set_lr", float(lr))
        self.cfg = replace(self.cfg, lr=float(lr))

    def reset_to_initial(self) -> None:
        self._call("reset_to_initial")

    def set_initial(self, state) -> None:
        """Sent with the next call (the node sets it at start; no waiting for the process to be up)."""
        self.initial = state
        self._initial_sent = False

    def optimizer_lrs(self) -> list[float]:
        return self._call("optimizer_lrs")

    def good_state(self) -> "OrderedDict[str, torch.Tensor]":
        """The last verified weights: the parent's copy (a checkpoint never waits for, or needs, the child)."""
        return self._good

    @property
    def learns_intrinsics(self) -> bool:
        return self.cfg.intrinsics != "off"

    def served_K(self, K: np.ndarray, width: int, height: int) -> np.ndarray:
        if self._intr_served is None:
            return np.asarray(K, dtype=np.float64)
        return IntrinsicsCorrection.apply_snapshot(self._intr_served, K, width, height)

    def intrinsics_state(self) -> dict | None:
        return self._intr_state

    # ------------------------------------------------------------ statistics
    def learned_share(self) -> float:
        return learned_share(self.triplets.counters, self.counters.learned)

    def stats(self) -> dict:
        """The feeding side's counters + the training process's, as of its last answer (never waits)."""
        out = frame_stats(self.enabled, self.triplets.counters) | dict(self._training)
        out["adapt_learned_share"] = self.learned_share()
        out["adapt_process_restarts"] = self.restarts
        return out

    def config_dict(self) -> dict:
        from dataclasses import asdict
        return asdict(self.cfg)

    def _ensure_ready(self, timeout: float) -> None:
        """Under the call lock: the training process's first answer (its engine is built), once."""
        if self._pending_ready:
            self._absorb(self._receive(timeout))
            self._pending_ready = False

    def poll_ready(self, timeout: float) -> bool:
        """True once the training process has built its engine; waits up to ``timeout`` s for it (False
        when it is not up yet; never restarts it). A process that died is restarted by :meth:`wait_ready`
        (TrainingProcessError)."""
        with self._lock:
            if self._pending_ready and not self._conn.poll(timeout):
                return False
        self.wait_ready()   # its answer (or its end) is there: read it
        return True

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        """Block until the training process has built its engine (tests, tools)."""
        with self._lock:
            try:
                self._ensure_ready(timeout)
            except (EOFError, OSError, TrainingProcessError) as exc:
                raise self._dead(exc) from None
