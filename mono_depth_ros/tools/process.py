"""Child processes of the tools (demo, bench, load test): stop them the way a user would."""
from __future__ import annotations

import signal
import subprocess

__all__ = ["stop_process"]


def stop_process(proc: subprocess.Popen, timeout: float = 30.0, sig: int = signal.SIGINT) -> int | None:
    """Send ``sig`` (SIGINT: the node saves its adapted checkpoint and exits), wait up to ``timeout`` s,
    then SIGKILL. Returns the exit code (None only if the process could not be reaped)."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode
