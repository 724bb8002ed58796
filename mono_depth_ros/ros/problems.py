"""Throttled problem reports, shared by the node's rooms (inference worker, TF, adaptation).

One object with one lock: every thread may report, clear and read, and nothing iterates a set
another thread changes ("Set changed size during iteration").
"""
from __future__ import annotations

import threading
import time

__all__ = ["ProblemReporter"]


class ProblemReporter:
    """Log a problem at most once per ``throttle_s`` for the same key; remember which are active.

    Thread-safe: called from the executor, the inference worker and the adaptation thread.

    Args:
        logger: an rclpy logger (``warning``/``error``/``info``) or anything with those methods.
        throttle_s: callable returning the current throttle in seconds (a runtime parameter).
    """

    def __init__(self, logger, throttle_s):
        self._log = logger
        self._throttle = throttle_s
        self._lock = threading.Lock()
        self._last: dict[str, float] = {}
        self._active: set[str] = set()

    def report(self, key: str, text: str, warn: bool = False) -> None:
        now = time.monotonic()
        with self._lock:
            self._active.add(key)
            due = now - self._last.get(key, -1e18) >= self._throttle()
            if due:
                self._last[key] = now
        if due:
            # rclpy requires one severity per call site, hence two calls.
            if warn:
                self._log.warning(text)
            else:
                self._log.error(text)

    def warn(self, key: str, text: str) -> None:
        self.report(key, text, warn=True)

    def clear(self, key: str) -> None:
        """Forget ``key`` (its next occurrence is logged at once): the caller says it is solved."""
        with self._lock:
            self._active.discard(key)
            self._last.pop(key, None)

    def recovered(self, keys=None, prefixes: tuple[str, ...] = ()) -> list[str]:
        """Clear the active problems among ``keys`` or starting with ``prefixes``; log them once."""
        with self._lock:
            done = sorted(k for k in self._active
                          if (keys is not None and k in keys) or (prefixes and k.startswith(prefixes)))
            for k in done:
                self._active.discard(k)
                self._last.pop(k, None)
        if done:
            self._log.info(f"input OK again (resolved: {', '.join(done)})")
        return done

    def active(self) -> list[str]:
        """A snapshot of the active problem keys, sorted."""
        with self._lock:
            return sorted(self._active)
