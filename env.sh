# Source me from the repository root:  . ./env.sh
# Puts the venv (ROS 2 Jazzy from PyPI) and the built colcon workspace on the environment.
_sp_root=$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" 2>/dev/null && pwd)
[ -f "$_sp_root/env.sh" ] || _sp_root=$PWD
if [ ! -f "$_sp_root/install/setup.sh" ]; then
  echo "env.sh: workspace not built yet; run 'make build' first" >&2
else
  export VIRTUAL_ENV="$_sp_root/.venv"
  export PATH="$VIRTUAL_ENV/bin:$PATH"
  # The wheels' ROS prefix is the venv root; colcon's setup.sh prepends our packages to it.
  export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}"
  export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  # colcon's setup scripts read unset variables: allow that even under `set -u`.
  case $- in *u*) _sp_nounset=1; set +u ;; *) _sp_nounset= ;; esac
  COLCON_CURRENT_PREFIX="$_sp_root/install" . "$_sp_root/install/setup.sh"
  [ -n "$_sp_nounset" ] && set -u
  unset _sp_nounset
  # Console scripts of an ament_python package live in lib/<pkg> (for `ros2 run`); put them on PATH too.
  for _sp_pkg in step_perception step_perception_tools; do
    export PATH="$_sp_root/install/$_sp_pkg/lib/$_sp_pkg:$PATH"
  done
  unset _sp_pkg
  export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
  # FastDDS's default UDP transport loses best-effort 1080p images between local processes (measured:
  # none arrived); LARGE_DATA (shared memory + TCP) delivers them. Set it for every process, drivers too.
  export FASTDDS_BUILTIN_TRANSPORTS="${FASTDDS_BUILTIN_TRANSPORTS:-LARGE_DATA}"
  # A 100 ms writer heartbeat: a large reliable sample that lost a fragment is repaired within 0.1 s
  # instead of Fast DDS's default 3 s (measured: late depth frames and 2-3 s stalls without it).
  export FASTRTPS_DEFAULT_PROFILES_FILE="${FASTRTPS_DEFAULT_PROFILES_FILE:-$_sp_root/step_perception/config/fastdds.xml}"
  # The embedded reference model is a folder of the checkout, not an installed file: the tools
  # (`step-perception demo`, the end-to-end test) find it through this variable.
  export STEP_PERCEPTION_MODEL="${STEP_PERCEPTION_MODEL:-$_sp_root/models/tabletop-ref}"
  # Never reach for a model hub at run time; models are local folders.
  export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
fi
unset _sp_root
