# Source this file: sets up the project's Python environment and a loopback-only
# ROS 2 configuration. Safe to source many times.
#   MONO_DEPTH_VENV   venv to use (default: <repo>/.venv); ignored when ROS 2 is sourced
#   ROS_DOMAIN_ID     kept if already set, else 42
_md_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ -z "${ROS_DISTRO:-}" ]; then
  _md_venv="${MONO_DEPTH_VENV:-$_md_root/.venv}"
  if [ -f "$_md_venv/bin/activate" ]; then
    # shellcheck disable=SC1091
    . "$_md_venv/bin/activate"
    export AMENT_PREFIX_PATH="$_md_venv${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  fi
fi
export PYTHONPATH="$_md_root${PYTHONPATH:+:$PYTHONPATH}"
# Never send anything beyond loopback from scripts, tests and demos.
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-42}"
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
export FASTDDS_DEFAULT_PROFILES_FILE="$_md_root/config/fastdds_shm.xml"
export RMW_FASTRTPS_USE_QOS_FROM_XML=0
export MONO_DEPTH_ROOT="$_md_root"
unset _md_root _md_venv
