#!/usr/bin/env bash
# `make demo`: real perception end to end on the embedded reference model (see step_perception_tools/step_perception_tools/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
. ./env.sh
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 100 ))}"
exec python -m step_perception_tools.demo "$@"
