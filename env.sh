# Source me from the repository root:  . ./env.sh
# Puts the venv (ROS 2 Jazzy from PyPI) and the built colcon workspace on the environment.
# . ./env.sh kilted  picks the Kilted build instead (.venv-kilted, install-kilted/) and exports
# ROS_DISTRO=kilted. (`ROS_DISTRO=kilted . ./env.sh` picks it too, but bash restores a variable
# assigned in front of `.` when the file is done, so ROS_DISTRO would not stay set in your shell;
# scripts run as `ROS_DISTRO=kilted scripts/x.sh` are fine, the variable is in their environment.)
_sp_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" 2>/dev/null && pwd)
[ -f "$_sp_root/env.sh" ] || _sp_root=$PWD
# Only `kilted`/`jazzy` count as the argument: a script that sources this file without arguments
# passes its own positional parameters through.
case ${1:-} in kilted|jazzy) _sp_want=$1 ;; *) _sp_want=${ROS_DISTRO:-jazzy} ;; esac
case $_sp_want in
  kilted) _sp_distro=kilted _sp_sfx=-kilted ;;
  *) _sp_distro=jazzy _sp_sfx= ;;
esac
if [ ! -f "$_sp_root/install$_sp_sfx/setup.sh" ]; then
  echo "env.sh: workspace not built yet; run '${_sp_sfx:+ROS_DISTRO=kilted }make build' first" >&2
else
  export ROS_DISTRO=$_sp_distro
  export VIRTUAL_ENV="$_sp_root/.venv$_sp_sfx"
  export PATH="$VIRTUAL_ENV/bin:$PATH"
  # The wheels' ROS prefix is the venv root; colcon's setup.sh prepends our packages to it.
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # colcon's setup scripts read unset variables: allow that even under `set -u`.
  case $- in *u*) _sp_nounset=1; set +u ;; *) _sp_nounset= ;; esac
  # The pinned upstream ROS overlay (scripts/build_overlay.sh, one per distro) goes under the workspace.
  if [ -f "$_sp_root/.ros-overlay$_sp_sfx/install/local_setup.sh" ]; then
    COLCON_CURRENT_PREFIX="$_sp_root/.ros-overlay$_sp_sfx/install" . "$_sp_root/.ros-overlay$_sp_sfx/install/local_setup.sh"
  fi
  COLCON_CURRENT_PREFIX="$_sp_root/install$_sp_sfx" . "$_sp_root/install$_sp_sfx/setup.sh"
  [ -n "$_sp_nounset" ] && set -u
  unset _sp_nounset
  # Console scripts of an ament_python package live in lib/<pkg> (for `ros2 run`); put them on PATH too.
  for _sp_pkg in step_perception step_perception_tools; do
    export PATH="$_sp_root/install$_sp_sfx/$_sp_pkg/lib/$_sp_pkg:$PATH"
  done
  unset _sp_pkg
  export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
  # Fast DDS profile for every process, camera drivers too (config/fastdds.xml says why, measured):
  # a 64 MiB shared-memory segment so large best-effort frames are not lost between local processes,
  # SHM + UDPv4 (no TCP), and a 100 ms writer heartbeat. It replaces FASTDDS_BUILTIN_TRANSPORTS.
  # Fast DDS 3 (Kilted) renamed both the variable and an XML element: its own file with the same
  # settings (config/fastdds3.xml). No FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA: it put endpoint
  # discovery on TCP, and Kilted then lost endpoint matches (docs/reliability.md).
  if [ "$_sp_distro" = kilted ]; then
    export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_sp_root/step_perception/config/fastdds3.xml}"
    # Fast DDS 3 still reads the 2.x variable (deprecated) and would load fastdds.xml, which it
    # cannot parse: drop ours if a Jazzy env.sh ran in this shell before.
    case ${FASTRTPS_DEFAULT_PROFILES_FILE:-} in */step_perception/config/fastdds.xml) unset FASTRTPS_DEFAULT_PROFILES_FILE ;; esac
  else
    export FASTRTPS_DEFAULT_PROFILES_FILE="${FASTRTPS_DEFAULT_PROFILES_FILE:-$_sp_root/step_perception/config/fastdds.xml}"
  fi
  # The embedded reference model is a folder of the checkout, not an installed file: the tools
  # (`step-perception demo`, the end-to-end test) find it through this variable.
  export STEP_PERCEPTION_MODEL="${STEP_PERCEPTION_MODEL:-$_sp_root/models/tabletop-ref}"
  # Never reach for a model hub at run time; models are local folders.
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
fi
unset _sp_root _sp_distro _sp_sfx _sp_want
