"""Process memory (no rclpy): hand freed heap back to the operating system.

Each adaptation step allocates and frees a few hundred MB of activations. glibc keeps freed
chunks in the arena of the thread that freed them and, after the first large free, raises its
mmap threshold so later large blocks come from those arenas too; the resident set then ratchets
up for minutes although live memory does not grow (docs/hardening.md, load test). Calling
``malloc_trim(0)`` after a step returns the free pages of every arena. There is no library call
for this in Python or torch, hence ctypes.

A trim is not free: the pages it returns are faulted back in by the next step (at 640x192 whole
frames that was ~1.9 GB, +1.0-1.6 s on that step). :class:`HeapTrimPolicy` therefore trims only
when the resident set has grown well above its level after warm-up, not on a timer.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import time
from typing import Callable

__all__ = ["release_free_heap", "resident_mb", "HeapTrimPolicy"]


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    """glibc's ``malloc_trim``, or None (musl, macOS: no such call)."""
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """``malloc_trim(0)``: give every arena's free pages back to the OS. False where unsupported."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def resident_mb() -> float:
    """Resident set size of this process in MiB (``/proc/self/statm``); 0 where unavailable."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
    except (OSError, ValueError, IndexError):
        return 0.0
    return pages * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


class HeapTrimPolicy:
    """Trim the heap when the resident set grows, not on a timer (call :meth:`after_step` each step).

    After ``warmup_steps`` steps the resident set is taken as the working set's level. Every
    ``check_period_s`` it is read again (one small file read); a trim runs only when it exceeds
    that level by ``growth_mb``, and the level then becomes what is left after the trim, so a
    working set that really grew is not trimmed again and again. With fixed-size training
    crops the working set is stable and no trim runs at all.

    Runs on the adaptation thread only.
    """

    def __init__(self, growth_mb: float = 64.0, warmup_steps: int = 20, check_period_s: float = 2.0,
                 rss: Callable[[], float] = resident_mb, trim: Callable[[], bool] = release_free_heap,
                 clock: Callable[[], float] = time.monotonic):
        self.growth_mb = float(growth_mb)
        self.warmup_steps = int(warmup_steps)
        self.check_period_s = float(check_period_s)
        self._rss, self._trim, self._clock = rss, trim, clock
        self.steps = 0
        self.level_mb: float | None = None
        self.trims = 0
        self._last_check = clock()

    def after_step(self) -> bool:
        """Returns True when this call trimmed."""
        self.steps += 1
        if self.steps < self.warmup_steps:
            return False
        if self.level_mb is None:
            self.level_mb = self._rss()
            self._last_check = self._clock()
            return False
        now = self._clock()
        if now - self._last_check < self.check_period_s:
            return False
        self._last_check = now
        if self._rss() <= self.level_mb + self.growth_mb:
            return False
        self._trim()
        self.trims += 1
        self.level_mb = max(self.level_mb, self._rss())
        return True

