"""The ``synthetic_A`` anchor ships as files beside the weights: identical to the rendering, small, installed."""
import shutil
import subprocess
import sys

import numpy as np
import pytest

from mono_depth_ros.adapt.anchors import SHIPPED_ANCHOR_DIR, load_anchor_images

from .rosutil import ROOT


def test_shipped_anchor_files_equal_the_simulator_rendering():
    pytest.importorskip("open3d")
    from mono_depth_ros.tools.anchors import render_anchor_images
    shipped = load_anchor_images("synthetic_A")
    rendered = render_anchor_images()
    assert shipped.shape == rendered.shape == (16, 192, 640, 3)
    assert shipped.dtype == np.uint8
    assert np.array_equal(shipped, rendered)


def test_shipped_anchor_files_are_small_and_max_images_limits_them():
    files = sorted(SHIPPED_ANCHOR_DIR.glob("*.webp"))
    assert len(files) == 16
    total = sum(p.stat().st_size for p in files)
    assert total < 3_000_000, total     # lossless; the sensor noise of the render limits compression
    assert load_anchor_images("synthetic_A", max_images=5).shape == (5, 192, 640, 3)
    assert load_anchor_images("none") is None


def test_loading_the_shipped_anchor_imports_no_simulator():
    code = ("import sys\nfrom mono_depth_ros.adapt.anchors import load_anchor_images\n"
            "a = load_anchor_images('synthetic_A')\n"
            "bad = sorted(m for m in sys.modules if m.startswith(('mono_depth_ros.tools', 'open3d', 'matplotlib')))\n"
            "print(a.shape, bad)\nassert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr[-2000:]
    assert "(16, 192, 640, 3) []" in r.stdout


def test_setup_py_installs_the_anchor_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name in ("setup.py", "setup.cfg", "package.xml"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(ROOT / "resource", src / "resource")
    shutil.copytree(ROOT / "mono_depth_ros", src / "mono_depth_ros",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path / "build"
    r = subprocess.run([sys.executable, "setup.py", "-q", "build_py", "-d", str(out)], cwd=src,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    installed = sorted(p.name for p in (out / "mono_depth_ros" / "weights" / "anchors_A").glob("*.webp"))
    assert installed == sorted(p.name for p in SHIPPED_ANCHOR_DIR.glob("*.webp"))
    assert (out / "mono_depth_ros" / "tools" / "synth" / "render.py").is_file()
