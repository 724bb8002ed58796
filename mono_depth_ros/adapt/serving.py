"""What the serving network holds: verified weights only.

The :class:`ServingPolicy` keeps the weights being served, the last good training weights
(where a rollback returns to), and, for the fast step, an exponential moving average (EMA) of
the trained weights, which is what it serves. Every ``swap_every`` healthy steps a candidate
(the weights that produced the step's loss, or the EMA) is served if its loss on that very
batch is no worse than the served weights' loss (a paired test); every ``good_every`` healthy
steps the verified pre-step weights become the rollback point.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch

__all__ = ["ServingPolicy", "state_copy"]

State = "OrderedDict[str, torch.Tensor]"


def state_copy(state) -> "OrderedDict[str, torch.Tensor]":
    """A detached deep copy of a state dict (or of a module's state)."""
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    return OrderedDict((k, v.detach().clone()) for k, v in state.items())


class ServingPolicy:
    """Served / last-good / EMA weights and the swap decision.

    Thread: the training thread (under the engine's training lock); ``on_weights`` is called
    there and must hand the state over atomically (``DepthPredictor.swap_state`` does).

    Args:
        state: the starting weights.
        swap_every, good_every: healthy-step periods of the swap and of the rollback point.
        swap_tolerance: serve a candidate whose loss <= served loss * (1 + this), same batch.
        ema_decay: 0 = serve the trained weights themselves (the reference step).
        on_weights: receives each newly served state.
    """

    def __init__(self, state, swap_every: int, good_every: int, swap_tolerance: float, ema_decay: float,
                 on_weights: Callable[[dict], None] | None = None):
        self.swap_every, self.good_every = swap_every, good_every
        self.swap_tolerance = swap_tolerance
        self.ema_decay = ema_decay
        self.on_weights = on_weights or (lambda sd: None)
        self.served = state_copy(state)
        self.last_good = state_copy(state)
        self.ema = state_copy(state) if ema_decay > 0 else None
        self.swaps = 0

    def due(self, healthy: int) -> tuple[bool, bool]:
        """(swap due, rollback point due) for the step after ``healthy`` healthy steps."""
        return (healthy + 1) % self.swap_every == 0, (healthy + 1) % self.good_every == 0

    def swap_ok(self, candidate_loss: float, served_loss: float) -> bool:
        return candidate_loss <= (1.0 + self.swap_tolerance) * served_loss

    def commit(self, pre_state, due_good: bool, candidate) -> None:
        """After a healthy step: ``pre_state`` (verified) becomes the rollback point when due;
        ``candidate`` (a state that passed the paired test, or None) is served."""
        if pre_state is not None and due_good:
            self.last_good = pre_state
        if candidate is not None:
            self.serve(candidate)

    def serve(self, state) -> None:
        self.served = state
        self.on_weights(state)
        self.swaps += 1

    @torch.no_grad()
    def update_average(self, model: torch.nn.Module) -> None:
        """ema <- decay * ema + (1 - decay) * trained weights (floating tensors; the rest copied)."""
        if self.ema is None:
            return
        cur = model.state_dict()
        fl = [k for k, v in self.ema.items() if v.is_floating_point()]
        torch._foreach_lerp_([self.ema[k] for k in fl], [cur[k].detach() for k in fl], 1.0 - self.ema_decay)
        for k, v in self.ema.items():
            if not v.is_floating_point():
                v.copy_(cur[k])

    def rollback_state(self):
        """The state to train from after a rollback (the EMA restarts from it)."""
        if self.ema is not None:
            self.ema = state_copy(self.last_good)
        return self.last_good

    def reset(self, state) -> None:
        """Start over from ``state``: rollback point, EMA and served weights."""
        self.last_good = state_copy(state)
        if self.ema is not None:
            self.ema = state_copy(state)
        self.serve(state_copy(state))

    def good_state(self):
        """The last verified weights (what a checkpoint should hold): the served average in the fast
        step, the last good trained weights in the reference step."""
        return self.served if self.ema is not None else self.last_good
