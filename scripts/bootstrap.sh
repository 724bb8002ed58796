#!/usr/bin/env bash
# Idempotent set-up of a bare Debian 12 / Python 3.11 machine (no ROS needed):
#   * Debian packages open3d needs (libusb-1.0-0), cmake + ninja for tf2_msgs;
#   * a venv (.venv, or $MONO_DEPTH_VENV) with requirements.txt: requirements-ros-free.txt
#     plus the ROS 2 Kilted wheels;
#   * tf2_msgs generated from its one-line definition where it is not importable.
# With a sourced ROS 2 distribution ($ROS_DISTRO set) it installs nothing (nothing
# ROS-related may come from PyPI there) and only checks that the active Python
# provides what the package imports; README, "With a ROS 2 installation", shows the
# --system-site-packages venv with requirements-ros-free.txt for that case.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
log() { printf '[bootstrap] %s\n' "$*" >&2; }

if [ -n "${ROS_DISTRO:-}" ]; then
  log "ROS 2 $ROS_DISTRO is sourced: using the system's rclpy, tf2_ros and messages."
  python3 -c "import rclpy, tf2_ros, torch, cv2, rosbags, kornia, scipy, pymap3d" || {
    log "missing Python packages: in a venv made with 'python3 -m venv --system-site-packages' over the"
    log "sourced distro, run: pip install -r requirements-ros-free.txt (never requirements.txt: it carries ROS wheels)"
    exit 1; }
  exit 0
fi

need_apt=()
[ -e /usr/lib/x86_64-linux-gnu/libusb-1.0.so.0 ] || [ -e /usr/lib/aarch64-linux-gnu/libusb-1.0.so.0 ] || need_apt+=(libusb-1.0-0)
command -v cmake >/dev/null || need_apt+=(cmake)
command -v ninja >/dev/null || need_apt+=(ninja-build)
command -v g++ >/dev/null || need_apt+=(g++)
if [ ${#need_apt[@]} -gt 0 ]; then
  log "installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  $SUDO apt-get install -y -q "${need_apt[@]}" >/dev/null 2>&1 || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${need_apt[@]}" >/dev/null; }
fi

venv="${MONO_DEPTH_VENV:-$root/.venv}"
if [ ! -x "$venv/bin/python" ]; then
  log "creating venv $venv"
  python3 -m venv "$venv"
fi
py="$venv/bin/python"
stamp="$venv/.mono_depth_requirements.sha256"
want="$(cat requirements.txt requirements-ros-free.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  log "installing Python requirements (torch CPU build first, exact pin)"
  "$py" -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" >&2 || true
  "$py" -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | grep -v "is ignored" >&2 || true
  "$py" -c "import torch, rclpy, cv2, open3d, rosbags, kornia, scipy, pymap3d, hypothesis, mcap_ros2" || { log "requirements did not install"; exit 1; }
  [ "$("$py" -c 'import torch; print(torch.__version__.split("+")[0])')" = 2.13.0 ] || { log "wrong torch version"; exit 1; }
  echo "$want" > "$stamp"
fi

if ! "$py" -c "import tf2_msgs.msg" 2>/dev/null; then
  log "generating tf2_msgs (no wheel exists) with the rosidl wheels"
  build="$(mktemp -d)"
  (
    . "$venv/bin/activate"
    export AMENT_PREFIX_PATH="$venv"
    cmake -S tools/tf2_msgs -B "$build" -G Ninja -DCMAKE_INSTALL_PREFIX="$venv" \
      -DCMAKE_PREFIX_PATH="$venv" -DBUILD_TESTING=OFF -DPython3_EXECUTABLE="$venv/bin/python"
    cmake --build "$build"
    cmake --install "$build"
  ) > "$build.log" 2>&1 || { log "tf2_msgs build failed, see $build.log"; tail -30 "$build.log" >&2; exit 1; }
  rm -rf "$build" "$build.log"
  "$py" -c "import tf2_msgs.msg" || { log "tf2_msgs still not importable"; exit 1; }
fi
log "environment ready: $venv"
