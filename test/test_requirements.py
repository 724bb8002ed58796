"""The install paths (issue 14 item 3, deliver 2): nothing ROS-related from PyPI into a distro's Python.

Reads the real files (requirements, README, scripts/bootstrap.sh) and runs the real bootstrap with
``ROS_DISTRO`` set, with pip/apt/sudo replaced by recorders on PATH.
"""
import os
import re
import subprocess
from pathlib import Path

from .rosutil import ROOT

ROS_WHEEL = re.compile(r"^(ros-|rosidl|ament|catkin|rclpy|rmw|colcon|rosdep)", re.I)


def _reqs(name: str) -> list[str]:
    lines = [ln.split("#", 1)[0].strip() for ln in (ROOT / name).read_text().splitlines()]
    return [ln for ln in lines if ln]


def _name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].lower()


def test_ros_free_requirements_have_no_ros_wheels_no_numpy_pin_and_torch_exact():
    reqs = _reqs("requirements-ros-free.txt")
    assert not [r for r in reqs if r.startswith("-")], "the ROS-free file must not include other files"
    assert not [r for r in reqs if ROS_WHEEL.match(_name(r))], reqs
    assert [r for r in reqs if _name(r) == "numpy"] == ["numpy"], "numpy unpinned: the distro's wins"
    assert [r for r in reqs if _name(r) == "torch"] == ["torch==2.13.0"]
    for needed in ("rosbags", "opencv-python-headless", "kornia", "scipy", "pymap3d", "hypothesis", "mcap",
                   "mcap-ros2-support"):
        assert needed in {_name(r) for r in reqs}, needed


def test_bare_machine_requirements_are_ros_free_plus_kilted_wheels():
    reqs = _reqs("requirements.txt")
    assert "-r requirements-ros-free.txt" in reqs
    rest = [r for r in reqs if not r.startswith("-r")]
    assert "ros-rclpy" in rest and "ros-rmw-fastrtps-cpp" in rest
    assert not [r for r in rest if _name(r) == "torch"], "torch is pinned once, in the ROS-free file"
    assert [r for r in rest if _name(r) != "numpy" and not ROS_WHEEL.match(_name(r))] == [], rest


def _ros_section() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("## With a ROS 2 installation")
    return text[start:text.index("\n## ", start + 5)]


def test_readme_ros_install_uses_a_system_site_venv_and_only_the_ros_free_file():
    sec = _ros_section()
    code = "\n".join(re.findall(r"```bash\n(.*?)```", sec, re.S))
    cmds = [ln.split("#", 1)[0].strip() for ln in code.splitlines() if ln.split("#", 1)[0].strip()]
    pip = [c for c in cmds if re.search(r"\bpip3? install\b", c)]
    assert pip and all("requirements-ros-free.txt" in c for c in pip), pip
    assert not re.search(r"requirements\.txt", code), "the ROS section must not install requirements.txt"
    assert not [c for c in pip if re.search(r"(?<![\w-])ros-|rclpy|sudo|--break-system-packages|--user", c)]
    venv = next(i for i, c in enumerate(cmds) if "venv --system-site-packages" in c)
    activate = next(i for i, c in enumerate(cmds) if re.search(r"source \S*venv/bin/activate", c))
    assert venv < activate < cmds.index(pip[0]), "pip must run inside the venv"
    assert "-c " in pip[0] and "numpy" in code, "the distro's numpy is kept by a constraint"
    assert any(c.startswith("rosdep install") for c in cmds) and any("colcon build" in c for c in cmds)


def _fake_bin(tmp_path: Path, python_ok: bool) -> Path:
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    log = tmp_path / "calls.log"
    for tool in ("pip", "pip3", "apt-get", "sudo", "cmake"):
        (bin_ / tool).write_text(f"#!/bin/sh\necho {tool} \"$@\" >> {log}\nexit 0\n")
    (bin_ / "python3").write_text(f"#!/bin/sh\necho python3 \"$@\" >> {log}\nexit {0 if python_ok else 1}\n")
    for f in bin_.iterdir():
        f.chmod(0o755)
    return bin_


def test_bootstrap_with_a_sourced_distro_installs_nothing(tmp_path):
    for ok in (True, False):
        case = tmp_path / str(ok)
        case.mkdir()
        bin_ = _fake_bin(case, ok)
        venv = case / "venv_must_not_appear"
        env = dict(os.environ, ROS_DISTRO="jazzy", MONO_DEPTH_VENV=str(venv),
                   PATH=f"{bin_}{os.pathsep}/usr/bin:/bin")
        r = subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh")], env=env, capture_output=True,
                           text=True, timeout=60)
        calls = (case / "calls.log").read_text().splitlines()
        assert r.returncode == (0 if ok else 1), r.stderr
        assert len(calls) == 1 and calls[0].startswith("python3 -c import rclpy"), calls
        assert not venv.exists()
        assert "jazzy is sourced" in r.stderr
        if not ok:
            assert "requirements-ros-free.txt" in r.stderr and "--system-site-packages" in r.stderr
