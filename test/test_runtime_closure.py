"""Runtime vs tools (issue 13): the node's import closure holds only what it runs.

Importing the node module, and starting the node with its default parameters (adaptation on, the
``auto`` anchor -> the shipped ``synthetic_A`` images), loads no module of ``mono_depth_ros.tools``
(simulator, bench, demo, load test, DDS bench, scorer), no open3d and no matplotlib: nothing is rendered.
"""
import json
import subprocess
import sys

import pytest

from .rosutil import ROOT

FORBIDDEN = ("mono_depth_ros.tools", "open3d", "matplotlib", "mono_depth_ros.ros.replay", "mono_depth_ros.ros.record",
             "mono_depth_ros.learning.trainer")

_REPORT = """
import json, sys
bad = sorted(m for m in sys.modules if m.split('.')[0] in ('open3d', 'matplotlib')
             or m == 'mono_depth_ros.tools' or m.startswith('mono_depth_ros.tools.')
             or m in ('mono_depth_ros.ros.replay', 'mono_depth_ros.ros.record', 'mono_depth_ros.learning.trainer'))
print('REPORT ' + json.dumps({'bad': bad, 'ours': sum(m.startswith('mono_depth_ros.') for m in sys.modules)}))
"""


def _run(code: str, tmp_path) -> dict:
    r = subprocess.run([sys.executable, "-c", code + _REPORT], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("REPORT ")][-1]
    return {**json.loads(line[len("REPORT "):]), "log": r.stdout + r.stderr}


def test_importing_the_node_module_loads_no_tools_open3d_or_matplotlib(tmp_path):
    pytest.importorskip("rclpy")
    rep = _run("import mono_depth_ros.ros.depth_node\n", tmp_path)
    assert rep["bad"] == [], rep["bad"]
    assert rep["ours"] >= 20     # the node's own closure did load (models, adapt, egomotion, ros ...)


@pytest.mark.ros
def test_node_startup_with_default_parameters_renders_nothing(tmp_path):
    """The node constructed in-process with its defaults (only checkpoint_dir points into tmp_path):
    the anchor is the shipped synthetic_A, and no tools/open3d/matplotlib module was loaded."""
    pytest.importorskip("rclpy")
    code = f"""
import rclpy
rclpy.init(args=['t', '--ros-args', '-p', 'checkpoint_dir:={tmp_path / "ckpt"}'])
from mono_depth_ros.ros.depth_node import DepthNode
node = DepthNode()
assert node.cfg.adapt and node.cfg.adapt_anchor == 'auto', (node.cfg.adapt, node.cfg.adapt_anchor)
node.shutdown()
node.destroy_node()
rclpy.shutdown()
"""
    rep = _run(code, tmp_path)
    assert "adaptation anchor: synthetic_A" in rep["log"], rep["log"][-3000:]
    assert rep["bad"] == [], rep["bad"]


def test_no_runtime_module_imports_the_tools():
    """No import statement outside tools/ names the tools package, not even a lazy one inside a function
    (cli.py's subcommand table names modules as strings and imports only the one asked for)."""
    import ast
    pkg = ROOT / "mono_depth_ros"
    offenders = []
    for path in pkg.rglob("*.py"):
        rel = path.relative_to(pkg)
        if rel.parts[0] == "tools":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = (node.module or "")
                if node.level:    # relative: resolve against the module's package
                    parts = ("mono_depth_ros",) + rel.parent.parts
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ((base,) if base else ()))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            if any(n == "mono_depth_ros.tools" or n.startswith("mono_depth_ros.tools.") for n in names):
                offenders.append(f"{rel}:{node.lineno}")
    assert offenders == [], offenders
