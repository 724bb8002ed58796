"""The core (model, geometry, losses, ego-motion, adaptation engine, synthetic world) imports no rclpy."""
import subprocess
import sys

from .rosutil import ROOT

CORE = ["conventions", "options", "settings", "geometry", "models", "losses", "metrics", "checkpoint", "inference",
        "pointcloud", "tf_buffer", "egomotion", "adapt", "adapt.session", "adapt.offline", "tools.synth",
        "tools.synth.bag", "bagio", "learning.trainer", "learning.evaluate", "learning.report", "tools.bench.core",
        "tools.bench.peers", "tools.bench.variants", "tools.bench.cli", "tools.anchors"]


def test_core_modules_import_without_rclpy():
    code = ("import sys\nclass Block:\n    def find_module(self, name, path=None): return None\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] in ('rclpy', 'sensor_msgs', 'tf2_ros', 'tf2_msgs', 'nav_msgs'):\n"
            "            raise ImportError('core imported ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            + "".join(f"import mono_depth_ros.{m}\n" for m in CORE))
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
