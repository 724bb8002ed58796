"""Experience replay for online adaptation (CoMoDA: 1 current + 3 replayed samples per step)."""
from __future__ import annotations

import random

from .triplets import Triplet

__all__ = ["ReplayBuffer"]


class ReplayBuffer:
    """Reservoir sampling over every triplet ever offered (uniform over the drive so far).

    Thread: used only under the engine's training lock (the adaptation thread).
    """

    def __init__(self, capacity: int, seed: int = 0):
        self.capacity = capacity
        self.items: list[Triplet] = []
        self.seen = 0
        self._rng = random.Random(seed)

    def add(self, item: Triplet) -> None:
        self.seen += 1
        if len(self.items) < self.capacity:
            self.items.append(item)
        else:
            j = self._rng.randrange(self.seen)
            if j < self.capacity:
                self.items[j] = item

    def sample(self, n: int, exclude_stamp: int | None = None) -> list[Triplet]:
        pool = [t for t in self.items if t.stamp_ns != exclude_stamp]
        return self._rng.sample(pool, min(n, len(pool)))

    def __len__(self) -> int:
        return len(self.items)
