"""Process memory (no rclpy): hand freed heap back to the operating system.

Each adaptation step allocates and frees a few hundred MB of activations. glibc keeps freed
chunks in the arena of the thread that freed them and, after the first large free, raises its
mmap threshold so later large blocks come from those arenas too; the resident set then ratchets
up for minutes although live memory does not grow (docs/hardening.md, load test). Calling
``malloc_trim(0)`` after a step returns the free pages of every arena. There is no library call
for this in Python or torch, hence ctypes.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["release_free_heap"]


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
