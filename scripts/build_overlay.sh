#!/usr/bin/env bash
# Builds the ROS 2 packages that are not on PyPI (launch, launch_ros, launch_testing, the ros2 CLI
# verbs, vision_msgs, tf2_ros_py, ...) from the pinned sources in ros-deps.repos into .ros-overlay/,
# with colcon, against the venv's ROS 2 wheels. Called by scripts/setup.sh; env.sh sources the result
# before the workspace.
#   - Sources: ../shared/ros-src/<name>.tar.gz where that folder has it (machines without access to
#     the git hosts), else a clone of the pinned commit (git; vcstool is not needed).
#   - Cached: a stamp holds a hash of ros-deps.repos, this script, requirements/ros.txt and the
#     tarballs; with nothing changed a second run only re-hashes (well under a second).
#   - Skipped in a normal ROS install: when a prefix on AMENT_PREFIX_PATH (other than the venv and this
#     overlay) already has launch_ros, nothing is built. ROS_OVERLAY=force builds anyway, ROS_OVERLAY=skip
#     never builds.
# .ros-overlay/ is separate from the workspace's install/, so `make clean` does not force a rebuild;
# `rm -rf .ros-overlay` does.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
# setup.sh passes the distro's venv and overlay (ROS_DISTRO=kilted: .venv-kilted, .ros-overlay-kilted).
VENV=${OVERLAY_VENV:-$ROOT/.venv}
OVERLAY=${OVERLAY_DIR:-$ROOT/.ros-overlay}
REPOS=${ROS_OVERLAY_REPOS:-$ROOT/ros-deps.repos}
TARBALLS=${ROS_OVERLAY_TARBALLS:-$ROOT/../shared/ros-src}
MODE=${ROS_OVERLAY:-auto}

# What the project needs; colcon adds their dependencies (launch_xml, launch_yaml, ros2pkg, tf2, ...).
TARGETS=(ros2launch launch_testing_ros launch_pytest ros2topic ros2service ros2param ros2lifecycle
  ros2node ros2run composition_interfaces rosidl_runtime_py vision_msgs tf2_ros_py)
# Never built from source: the rest of rcl_interfaces comes as wheels (building it here would shadow
# them), and these test fixtures need rclcpp, which has no wheel.
IGNORED=(rcl_interfaces/action_msgs rcl_interfaces/builtin_interfaces rcl_interfaces/lifecycle_msgs
  rcl_interfaces/rcl_interfaces rcl_interfaces/rosgraph_msgs rcl_interfaces/service_msgs
  rcl_interfaces/statistics_msgs rcl_interfaces/test_msgs rcl_interfaces/type_description_interfaces
  ros2cli/ros2lifecycle_test_fixtures ros2cli/ros2cli_test_interfaces)

if [ "$MODE" = skip ]; then
  echo "overlay: ROS_OVERLAY=skip, not building"
  exit 0
fi
if [ "$MODE" != force ]; then
  IFS=: read -r -a _prefixes <<< "${AMENT_PREFIX_PATH:-}"
  for p in "${_prefixes[@]}"; do
    case $p in "" | "$VENV" | "$OVERLAY"/* | "$ROOT"/*) continue ;; esac
    if [ -f "$p/share/launch_ros/package.xml" ]; then
      echo "overlay: launch_ros found in $p (a ROS install); not building .ros-overlay"
      exit 0
    fi
  done
fi

# name url commit, one repository a line.
read_repos() {
  "$VENV/bin/python" - "$REPOS" <<'PY'
import sys
import yaml
with open(sys.argv[1]) as f:
    repos = yaml.safe_load(f)["repositories"]
for name, spec in repos.items():
    if spec.get("type", "git") != "git":
        raise SystemExit(f"overlay: {name}: only git repositories are supported")
    print(name, spec["url"], spec["version"])
PY
}
REPO_LINES=$(read_repos)

# The stamp: everything that decides what gets built.
STAMP=$( {
  cat "$REPOS" "$ROOT/scripts/build_overlay.sh" requirements/ros.txt
  while read -r name _url _commit; do
    if [ -f "$TARBALLS/$name.tar.gz" ]; then sha256sum "$TARBALLS/$name.tar.gz" | cut -d' ' -f1
    else echo "git $name"; fi
  done <<< "$REPO_LINES"
} | sha256sum | cut -d' ' -f1)
if [ -f "$OVERLAY/install/local_setup.sh" ] && [ "$(cat "$OVERLAY/.stamp" 2>/dev/null)" = "$STAMP" ]; then
  echo "overlay: .ros-overlay up to date"
  exit 0
fi

echo "overlay: building pinned ROS packages into .ros-overlay (about 80 s once)"
rm -rf "$OVERLAY"
mkdir -p "$OVERLAY/src"
while read -r name url commit; do
  dest=$OVERLAY/src/$name
  if [ -f "$TARBALLS/$name.tar.gz" ]; then
    # Each tarball is `git archive` of the pinned commit and unpacks into a folder of its name.
    tar -xzf "$TARBALLS/$name.tar.gz" -C "$OVERLAY/src"
  else
    echo "overlay: cloning $url at $commit"
    git init -q "$dest"
    git -C "$dest" remote add origin "$url"
    # Fetch just the pinned commit; a server that refuses fetching by hash gets a full fetch.
    git -C "$dest" fetch -q --depth 1 origin "$commit" 2>/dev/null || git -C "$dest" fetch -q origin
    git -C "$dest" -c advice.detachedHead=false checkout -q "$commit"
  fi
  [ -d "$dest" ] || { echo "overlay: $name did not unpack into $dest" >&2; exit 1; }
done <<< "$REPO_LINES"
for pkg in "${IGNORED[@]}"; do
  if [ -d "$OVERLAY/src/$pkg" ]; then touch "$OVERLAY/src/$pkg/COLCON_IGNORE"; fi
done

# Against the venv's wheels only (the venv root is their ROS prefix), never a workspace or another
# overlay that happens to be sourced in this shell.
(
  unset COLCON_PREFIX_PATH PYTHONPATH
  export PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV" CMAKE_PREFIX_PATH="$VENV"
  colcon --log-base "$OVERLAY/log" build \
    --base-paths "$OVERLAY/src" --build-base "$OVERLAY/build" --install-base "$OVERLAY/install" \
    --packages-up-to "${TARGETS[@]}" \
    --event-handlers console_direct- summary+ \
    --cmake-args -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF
)
echo "$STAMP" > "$OVERLAY/.stamp"
echo "overlay: built .ros-overlay"
