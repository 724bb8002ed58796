"""One guarded optimisation step: non-finite data never reaches the weights.

Both step functions check their inputs (images, poses, K) for NaN/inf, then
the loss, then every gradient; on any non-finite value the step is skipped
(no optimizer update, gradients cleared) and counted in :class:`StepStats`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from ..losses import SelfSupervisedLoss, SupervisedSILogLoss, all_finite
from ..models import DepthNet

__all__ = ["StepStatus", "StepResult", "StepStats", "self_supervised_step", "supervised_step", "guarded_step",
           "train_step"]


class StepStatus:
    """Outcomes of a step (plain strings, so they log and serialise cleanly)."""

    OK = "ok"
    SKIPPED_NONFINITE_INPUT = "skipped_nonfinite_input"
    SKIPPED_NONFINITE_LOSS = "skipped_nonfinite_loss"
    SKIPPED_NONFINITE_GRAD = "skipped_nonfinite_grad"
    ALL = (OK, SKIPPED_NONFINITE_INPUT, SKIPPED_NONFINITE_LOSS, SKIPPED_NONFINITE_GRAD)


@dataclass
class StepResult:
    status: str
    loss: float | None = None
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == StepStatus.OK


@dataclass
class StepStats:
    """Counts of step outcomes."""

    counts: dict[str, int] = field(default_factory=lambda: {s: 0 for s in StepStatus.ALL})

    def add(self, result: StepResult) -> None:
        self.counts[result.status] = self.counts.get(result.status, 0) + 1

    @property
    def skipped(self) -> int:
        return sum(v for k, v in self.counts.items() if k != StepStatus.OK)


def guarded_step(model: DepthNet, optimizer: torch.optim.Optimizer, inputs: Sequence,
                 compute_loss: Callable[[], tuple[torch.Tensor, dict[str, torch.Tensor]]],
                 stats: StepStats | None = None, grad_clip: float | None = None,
                 pre_step_check: Callable[[torch.Tensor], str | None] | None = None) -> StepResult:
    """Run ``compute_loss`` and step ``optimizer`` only if inputs, loss and gradients are finite.

    ``pre_step_check(loss)``, if given, runs on a finite loss before the backward
    pass; a returned reason rejects the step (status ``rejected_<reason>``).
    """
    if not all_finite(*inputs):
        result = StepResult(StepStatus.SKIPPED_NONFINITE_INPUT)
    else:
        optimizer.zero_grad(set_to_none=True)
        loss, parts = compute_loss()
        reason = None
        if not bool(torch.isfinite(loss)):
            result = StepResult(StepStatus.SKIPPED_NONFINITE_LOSS)
        elif pre_step_check is not None and (reason := pre_step_check(loss.detach())) is not None:
            result = StepResult(f"rejected_{reason}", float(loss.detach()))
        else:
            loss.backward()
            grads = [p.grad for p in model.parameters() if p.grad is not None]
            # One fused pass over all gradients: their total norm is finite iff every gradient is (or
            # so large that the norm overflows float32: garbage either way).
            norm = torch.nn.utils.get_total_norm(grads)
            if not bool(torch.isfinite(norm)):
                result = StepResult(StepStatus.SKIPPED_NONFINITE_GRAD)
            else:
                if grad_clip is not None:
                    torch.nn.utils.clip_grads_with_norm_(grads, grad_clip, norm)
                optimizer.step()
                result = StepResult(StepStatus.OK, float(loss.detach()),
                                    {k: float(v) for k, v in parts.items()})
        if not result.ok:
            optimizer.zero_grad(set_to_none=True)
    if stats is not None:
        stats.add(result)
    return result


def self_supervised_step(model: DepthNet, optimizer: torch.optim.Optimizer, loss_fn: SelfSupervisedLoss,
                         target: torch.Tensor, sources: Sequence[torch.Tensor],
                         T_source_target: Sequence[torch.Tensor], K: torch.Tensor,
                         stats: StepStats | None = None, grad_clip: float | None = None) -> StepResult:
    """One monodepth2 step with known poses.

    Args:
        target: (B,3,H,W); sources: list of (B,3,H,W); T_source_target: list of
        (B,4,4); K: (B,3,3). The model must be in train mode. ``model`` is a DepthNet or its
        DistributedDataParallel wrapper: ``model(x)`` is :meth:`DepthNet.predict_disps` for both.
    """
    def compute():
        return loss_fn(target, sources, T_source_target, K, model(target))

    return guarded_step(model, optimizer, [target, list(sources), list(T_source_target), K], compute,
                        stats, grad_clip)


def supervised_step(model: DepthNet, optimizer: torch.optim.Optimizer, loss_fn: SupervisedSILogLoss,
                    image: torch.Tensor, gt_depth: torch.Tensor, stats: StepStats | None = None,
                    grad_clip: float | None = None) -> StepResult:
    """One SILog step. image (B,3,H,W); gt_depth (B,1,H,W), +inf/NaN = no ground truth."""
    def compute():
        return loss_fn(gt_depth, model(image))

    return guarded_step(model, optimizer, [image], compute, stats, grad_clip)


#: The online adaptation step (monodepth2 loss with known poses); alias of :func:`self_supervised_step`.
train_step = self_supervised_step
