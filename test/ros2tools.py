"""The real ROS 2 tools for the integration tests, built from ``../shared/ros2-src`` (see docs/integration.md).

``scripts/build_ros2_tools.sh`` builds them once into a cache outside the repository (launch, launch_ros,
ros2cli, tf2_msgs/tf2/tf2_py/tf2_ros_py, composition_interfaces as an overlay over this venv; colcon and rosdep
in a venv of their own) and later runs reuse that build. Where ``../shared/ros2-src`` is absent (a fresh clone
on a user's machine) the tests that need the tools skip and say so.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = Path(os.environ.get("MONO_DEPTH_ROS2_SRC", ROOT.parent / "shared" / "ros2-src"))
BUILD_SCRIPT = ROOT / "scripts" / "build_ros2_tools.sh"
PYVER = f"python{sys.version_info[0]}.{sys.version_info[1]}"

SKIP_REASON = (f"integration tests need the ROS 2 sources in {SRC} (../shared/ros2-src beside the project; "
               "absent on a fresh clone, see docs/integration.md)")


@dataclass(frozen=True)
class Tools:
    """Where the built tools are, and the environment that puts them in front of this venv."""

    path: Path
    build_seconds: float        # of the build this run found or made
    built_now: bool             # True when this pytest run did the (cold) build

    @property
    def prefix(self) -> Path:
        return self.path / "prefix"

    @property
    def colcon(self) -> Path:
        return self.path / "tools-venv" / "bin" / "colcon"

    @property
    def rosdep(self) -> Path:
        return self.path / "tools-venv" / "bin" / "rosdep"

    @property
    def ros2(self) -> list[str]:
        """The ``ros2`` command, run by this interpreter (its shebang names the venv that built it)."""
        return [sys.executable, str(self.prefix / "bin" / "ros2")]

    def env(self, extra_prefixes: tuple[Path, ...] = ()) -> dict[str, str]:
        """os.environ plus the overlay (and ``extra_prefixes``, e.g. a colcon install, in front of it).

        The wheels' bootstrap (ros_wheels_bootstrapper.pth) re-executes Python with LD_LIBRARY_PATH in a
        random order; it is marked done here and the order given explicitly: the overlay's libraries (tf2 and
        the full tf2_msgs, which share names with the venv's tf2_msgs stand-in) before the venv's."""
        env = dict(os.environ)
        prefixes = [*map(Path, extra_prefixes), self.prefix]
        site = [str(p / "lib" / PYVER / "site-packages") for p in prefixes]
        env["PYTHONPATH"] = os.pathsep.join(site + [str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(
            os.pathsep) if p])
        env["AMENT_PREFIX_PATH"] = os.pathsep.join([str(p) for p in prefixes] + [sys.prefix] + [
            p for p in env.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p])
        libs = [str(p / "lib") for p in prefixes] + [str(Path(sys.prefix) / "lib")]
        libs += sorted(str(d) for d in (Path(sys.prefix) / "lib" / PYVER / "site-packages").glob("ros_*.libs"))
        env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in env.get("LD_LIBRARY_PATH", "").split(
            os.pathsep) if p and p not in libs])
        env["_ROS_WHEELS_BOOTSTRAP_COMPLETE"] = "1"
        env["PATH"] = os.pathsep.join([str(self.prefix / "bin"), str(Path(sys.executable).parent),
                                       env.get("PATH", "")])
        env["RCUTILS_LOGGING_BUFFERED_STREAM"] = "0"
        env["RCUTILS_COLORIZED_OUTPUT"] = "0"
        return env


def build_tools() -> Tools:
    """Build (cold, ~1-2 min here; see docs/integration.md) or find the tools. Raises with the build's log tail."""
    if not SRC.is_dir():
        raise FileNotFoundError(SKIP_REASON)
    if shutil.which("cmake") is None or shutil.which("ninja") is None:
        raise RuntimeError("cmake and ninja are needed to build tf2 (scripts/bootstrap.sh installs them)")
    env = dict(os.environ, MONO_DEPTH_VENV=sys.prefix, MONO_DEPTH_ROS2_SRC=str(SRC))
    path = Path(subprocess.run(["bash", str(BUILD_SCRIPT), "--print"], env=env, check=True, text=True,
                               capture_output=True).stdout.strip().splitlines()[-1])
    built_now = not (path / "env.sh").is_file()
    t0 = time.monotonic()
    res = subprocess.run(["bash", str(BUILD_SCRIPT)], env=env, text=True, capture_output=True)
    if res.returncode != 0:
        raise RuntimeError(f"scripts/build_ros2_tools.sh failed ({res.returncode}):\n{res.stderr[-6000:]}")
    path = Path(res.stdout.strip().splitlines()[-1])
    seconds = float((path / "build_seconds").read_text()) if built_now else time.monotonic() - t0
    return Tools(path=path, build_seconds=seconds, built_now=built_now)


def copy_package(dest: Path) -> Path:
    """The package's tracked files (what a clone holds) copied to ``dest``/mono_depth_ros."""
    files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    pkg = dest / "mono_depth_ros"
    for rel in filter(None, files.decode().split("\0")):
        src = ROOT / rel
        if src.is_file():
            (pkg / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, pkg / rel)
    return pkg
