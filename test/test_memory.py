"""release_free_heap (mono_depth_ros.memory): freed heap goes back to the OS (the load test's memory bound)."""
import subprocess
import sys

import pytest

from .rosutil import ROOT

pytestmark = pytest.mark.faults

_CHILD = r"""
import numpy as np, sys
from mono_depth_ros.memory import release_free_heap

def rss_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

big = np.ones(16 << 20, np.uint8); del big        # glibc raises its mmap threshold to 16 MB ...
blocks = [np.ones(1 << 20, np.uint8) for _ in range(300)]   # ... so these 1 MB blocks come from the heap
keep = blocks[-1]
del blocks                                         # freed, but the top block pins the heap: no automatic trim
before = rss_mb()
ok = release_free_heap() if sys.argv[1] == "trim" else True
after = rss_mb()
print(f"{before:.1f} {after:.1f} {ok}")
"""


def _run(mode):
    r = subprocess.run([sys.executable, "-c", _CHILD, mode], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    before, after, ok = r.stdout.split()
    return float(before), float(after), ok == "True"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_freed_heap_returns_to_the_os():
    before, after, ok = _run("none")
    assert after > before - 20, "without a trim the freed 300 MB stays resident (the ratchet the fix is for)"
    before, after, ok = _run("trim")
    assert ok
    assert before - after > 200, (before, after)
