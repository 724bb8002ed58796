"""Distributed data-parallel training under ``torchrun``: process group, device, and the few collectives
the trainer needs.

``torchrun --nproc_per_node N -m mono_depth_ros train ...`` sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and ``MASTER_ADDR``/``MASTER_PORT``; without
them (a plain ``mono-depth train``) :func:`init_distributed` returns a
single-process context and nothing collective ever runs. The backend follows
the device: ``nccl`` on CUDA, ``gloo`` on CPU.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["DistContext", "init_distributed", "launched_by_torchrun", "resolve_device", "shutdown"]

DEVICES = ("auto", "cpu", "cuda")


def launched_by_torchrun(env=None) -> bool:
    """True when the torchrun / torch.distributed environment variables are set."""
    env = os.environ if env is None else env
    return all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"))


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available (one GPU per local rank), else CPU."""
    if name not in DEVICES:
        raise ValueError(f"--device must be one of {DEVICES}, got {name!r}")
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
        n = torch.cuda.device_count()
        if local_rank >= n:
            raise ValueError(f"local rank {local_rank} has no GPU (only {n} visible): use --nproc_per_node <= {n}")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: rank, world size, device, backend (None when not distributed)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.backend is not None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce(self, values: list[float], op: str = "sum") -> list[float]:
        """Element-wise sum / max / min of ``values`` over ranks (identity when not distributed)."""
        if not self.enabled:
            return list(values)
        import torch.distributed as dist
        ops = {"sum": dist.ReduceOp.SUM, "max": dist.ReduceOp.MAX, "min": dist.ReduceOp.MIN}
        t = torch.tensor(values, dtype=torch.float64, device=self.device if self.backend == "nccl" else "cpu")
        dist.all_reduce(t, op=ops[op])
        return [float(v) for v in t.cpu()]

    def gather_objects(self, obj) -> list:
        """Every rank's ``obj`` (picklable), in rank order, on every rank."""
        if not self.enabled:
            return [obj]
        import torch.distributed as dist
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist
            if self.backend == "nccl":
                dist.barrier(device_ids=[self.local_rank])
            else:
                dist.barrier()


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group when launched by torchrun; else a single-process context."""
    if not launched_by_torchrun():
        return DistContext(device=resolve_device(device))
    import torch.distributed as dist
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    dev = resolve_device(device, local)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistContext(rank, world, local, dev, backend)


def shutdown(ctx: DistContext) -> None:
    if ctx.enabled:
        import torch.distributed as dist
        if dist.is_initialized():
            # Every rank leaves together: a rank tearing gloo down while another still talks to it aborted
            # once ("terminate called without an active exception", fresh-clone CI under load).
            dist.barrier()
            dist.destroy_process_group()
