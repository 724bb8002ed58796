#!/usr/bin/env bash
# Build the real ROS 2 tools the integration tests run against, from ../shared/ros2-src, into a cache
# outside the repository; idempotent: a finished build is reused, by later test runs and by fresh clones.
#
#   scripts/build_ros2_tools.sh            build if needed; prints the build's folder on stdout (last line)
#   scripts/build_ros2_tools.sh --print    only print the folder it would use (built or not)
#
# What it builds (see ../shared/ros2-src/README.md and docs/integration.md):
#   prefix/      an overlay over the project's venv: launch, launch_ros, ros2launch, ros2cli (ros2 pkg/run/node/
#                topic/param/service), rosidl_runtime_py, composition_interfaces (generated with the rosidl
#                wheels), tf2_msgs + tf2 + tf2_py (cmake against the Kilted wheels) and tf2_ros_py
#   tools-venv/  a venv of its own for colcon (colcon downgrades setuptools) and rosdep
#   env.sh       source it (after scripts/env.sh) to put the overlay in front of the project's venv
# The folder is ${MONO_DEPTH_TOOLS_CACHE:-~/.cache/mono_depth_ros/ros2-tools}/<key>, where the key hashes this
# script, the source archives it uses, the Python version and the ros-* wheels of the venv: a change of any of
# them builds anew; nothing else does. It is built in place under a lock (flock); env.sh, written last, marks
# a complete build, and an incomplete one is built again.
set -euo pipefail
# It only builds; anything it starts stays on loopback like every script of the project.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="${MONO_DEPTH_ROS2_SRC:-$root/../shared/ros2-src}"
log() { printf '[ros2-tools] %s\n' "$*" >&2; }
[ -d "$src" ] || { log "no ROS 2 sources at $src (../shared/ros2-src): nothing to build"; exit 3; }
src="$(cd "$src" && pwd)"
venv="${MONO_DEPTH_VENV:-$root/.venv}"
py="$venv/bin/python"
[ -x "$py" ] || { log "no project venv at $venv: run scripts/bootstrap.sh first"; exit 1; }

archives=(launch-rolling launch_ros-rolling ros2cli-rolling rosidl_runtime_py-rolling
          composition_interfaces-rolling geometry2-rolling)
key="$(
  {
    sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1
    for a in "${archives[@]}"; do sha256sum "$src/$a.tar.gz" | cut -d' ' -f1; done
    "$py" -c 'import sys; print(sys.version)'
    ls "$venv"/lib/python3*/site-packages | { grep -E '^ros_.*\.dist-info$' || true; } | sort
  } | sha256sum | cut -c1-16
)"
cache="${MONO_DEPTH_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mono_depth_ros/ros2-tools}"
out="$cache/$key"
if [ "${1:-}" = "--print" ]; then echo "$out"; exit 0; fi
if [ -f "$out/env.sh" ]; then echo "$out"; exit 0; fi

mkdir -p "$cache"
exec 9>"$cache/$key.lock"
flock 9
if [ -f "$out/env.sh" ]; then echo "$out"; exit 0; fi   # built by another process while we waited

t_start=$(date +%s)
# Built in place (venv and RPATHs carry their paths); env.sh, written last, marks a complete build.
rm -rf "$out"
work="$out"
mkdir -p "$work/src" "$work/build" "$work/prefix"
prefix="$work/prefix"
buildlog="$work/build.log"
log "building into $out (log: $buildlog); about 1 min on 2 cores, 2 min when pip downloads every wheel (docs/integration.md)"
step() { log "$1"; printf '\n===== %s (%s s)\n' "$1" "$(( $(date +%s) - t_start ))" >> "$buildlog"; }
fail() { log "FAILED: $1; last lines of $buildlog:"; tail -40 "$buildlog" >&2; exit 1; }

for a in "${archives[@]}"; do tar xzf "$src/$a.tar.gz" -C "$work/src"; done
pyver="$("$py" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
site="$prefix/lib/python$pyver/site-packages"
jobs="${MONO_DEPTH_BUILD_JOBS:-$(nproc)}"

# The build runs the project's venv Python with the overlay in front of it.
export PATH="$prefix/bin:$venv/bin:$PATH"
export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
export AMENT_PREFIX_PATH="$prefix:$venv"
export CMAKE_PREFIX_PATH="$prefix:$venv"
export VIRTUAL_ENV="$venv"
pipi() { "$py" -m pip install -q --disable-pip-version-check --no-warn-script-location --prefix "$prefix" "$@"; }

step "1/6 PyPI dependencies of launch/ros2cli and the ament cmake wheels tf2 needs"
pipi --ignore-installed --no-deps "osrf-pycommon==2.0.2" "lark==1.3.1" "argcomplete==3.7.2" "psutil==7.2.2" \
  >> "$buildlog" 2>&1 || fail "pip (launch dependencies)"
pipi "ros-ament-cmake-ros==0.14.5" "ros-ament-cmake-gmock==2.7.3" "ros-ament-cmake-gtest==2.7.3" \
  "ros-ament-cmake-pytest==2.7.3" \
  >> "$buildlog" 2>&1 || fail "pip (ament cmake wheels)"

step "2/6 launch, launch_ros, ros2launch, ros2cli, rosidl_runtime_py (pure Python, from source)"
s="$work/src"
pipi --no-deps --no-build-isolation \
  "$s/launch-rolling/launch" "$s/launch-rolling/launch_xml" "$s/launch-rolling/launch_yaml" \
  "$s/rosidl_runtime_py-rolling" \
  "$s/ros2cli-rolling/ros2cli" "$s/ros2cli-rolling/ros2pkg" "$s/ros2cli-rolling/ros2run" \
  "$s/ros2cli-rolling/ros2node" "$s/ros2cli-rolling/ros2topic" "$s/ros2cli-rolling/ros2param" \
  "$s/ros2cli-rolling/ros2service" \
  "$s/launch_ros-rolling/launch_ros" "$s/launch_ros-rolling/ros2launch" \
  >> "$buildlog" 2>&1 || fail "pip (launch/ros2cli sources)"

# The wheels' *__rosidl_generator_pyExport.cmake files name the include directories of the machine that built
# them (/opt/python/...). Re-point them at this interpreter's, as tools/tf2_msgs does; include directories of
# imported targets are only checked when CMake generates, so appending this to a CMakeLists is enough.
pyfix="$work/build/pyexport_fix.cmake"
cat > "$pyfix" <<'EOF'
find_package(Python3 REQUIRED COMPONENTS Interpreter Development NumPy)
string(REPLACE ":" ";" _md_prefixes "$ENV{AMENT_PREFIX_PATH}")
foreach(_md_prefix ${_md_prefixes})
  file(GLOB _py_exports "${_md_prefix}/share/*/cmake/*__rosidl_generator_pyExport.cmake")
  foreach(_f ${_py_exports})
    get_filename_component(_name "${_f}" NAME)
    string(REGEX REPLACE "^export_(.*)Export\\.cmake$" "\\1" _tgt "${_name}")
    get_filename_component(_pkgdir "${_f}" DIRECTORY)
    get_filename_component(_pkgdir "${_pkgdir}" DIRECTORY)
    get_filename_component(_pkg "${_pkgdir}" NAME)
    if(TARGET ${_pkg}::${_tgt})
      set_target_properties(${_pkg}::${_tgt} PROPERTIES
        INTERFACE_INCLUDE_DIRECTORIES "${Python3_INCLUDE_DIRS};${Python3_NumPy_INCLUDE_DIRS}")
    endif()
  endforeach()
endforeach()
EOF
cmake_pkg() {  # cmake_pkg NAME SOURCE_DIR: configure, build and install one ament_cmake package into the overlay
  local name="$1" dir="$2"
  printf '\ninclude("%s")\n' "$pyfix" >> "$dir/CMakeLists.txt"
  cmake -S "$dir" -B "$work/build/$name" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
    -DCMAKE_INSTALL_PREFIX="$prefix" -DCMAKE_PREFIX_PATH="$prefix;$venv" \
    -DPython3_EXECUTABLE="$py" -DPYTHON_EXECUTABLE="$py" -DCMAKE_INSTALL_RPATH="$prefix/lib" \
    >> "$buildlog" 2>&1 || fail "cmake configure $name"
  cmake --build "$work/build/$name" -j "$jobs" >> "$buildlog" 2>&1 || fail "cmake build $name"
  cmake --install "$work/build/$name" >> "$buildlog" 2>&1 || fail "cmake install $name"
}

step "3/6 composition_interfaces (launch_ros imports it; generated with the rosidl wheels)"
cmake_pkg composition_interfaces "$s/composition_interfaces-rolling/composition_interfaces"

step "4/6 tf2_msgs (all of it: tf2_ros needs FrameGraph and LookupTransform), tf2 (C++), tf2_py (C extension)"
# The overlay's full tf2_msgs shadows the venv's one-message stand-in (tools/tf2_msgs) on the overlay's paths.
cmake_pkg tf2_msgs "$s/geometry2-rolling/tf2_msgs"
cmake_pkg tf2 "$s/geometry2-rolling/tf2"
cmake_pkg tf2_py "$s/geometry2-rolling/tf2_py"

step "5/6 tf2_ros_py (pure Python)"
pipi --no-deps --no-build-isolation "$s/geometry2-rolling/tf2_ros_py" >> "$buildlog" 2>&1 || fail "pip tf2_ros_py"

step "6/6 colcon and rosdep in a venv of their own"
python3 -m venv "$work/tools-venv" >> "$buildlog" 2>&1 || fail "venv for colcon/rosdep"
"$work/tools-venv/bin/python" -m pip install -q --disable-pip-version-check \
  "colcon-core==0.21.3" "colcon-ros==0.5.0" "colcon-python-setup-py==0.2.9" "colcon-package-selection==0.2.10" \
  "colcon-recursive-crawl==0.2.3" "rosdep==0.27.0" >> "$buildlog" 2>&1 || fail "pip colcon/rosdep"

# The environment for a shell (test/ros2tools.py builds the same from its own interpreter). The wheels'
# bootstrap (ros_wheels_bootstrapper.pth) re-executes Python with an LD_LIBRARY_PATH built from a set (random
# order); mark it done and give the order ourselves: the overlay's libraries (tf2, the full tf2_msgs, whose
# library names are those of the venv's stand-in, composition_interfaces)
# first, then the venv's, then the wheels' bundled ones.
cat > "$work/env.sh" <<EOF
# Generated by scripts/build_ros2_tools.sh: source after scripts/env.sh (which activates the project's venv).
export MONO_DEPTH_TOOLS="$out"
export PATH="$prefix/bin:\$PATH"   # colcon and rosdep: $out/tools-venv/bin (not on PATH: its python would shadow the venv's)
export PYTHONPATH="$prefix/lib/python$pyver/site-packages\${PYTHONPATH:+:\$PYTHONPATH}"
export AMENT_PREFIX_PATH="$prefix\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
_md_libs="$prefix/lib:\$VIRTUAL_ENV/lib"
for _d in "\$VIRTUAL_ENV"/lib/python$pyver/site-packages/ros_*.libs; do [ -d "\$_d" ] && _md_libs="\$_md_libs:\$_d"; done
export LD_LIBRARY_PATH="\$_md_libs\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
unset _md_libs _d
EOF
echo "$(( $(date +%s) - t_start ))" > "$work/build_seconds"
rm -rf "$work/src" "$work/build"
log "built in $(cat "$work/build_seconds") s: $out"
echo "$out"
