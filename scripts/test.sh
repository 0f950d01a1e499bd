#!/usr/bin/env bash
# Runs the test suite in the built workspace. Fails loudly when no test ran (pytest exit code 5).
set -uo pipefail
cd "$(dirname "$0")/.."
. ./env.sh
# Each run gets its own DDS domain so parallel runs on one machine never cross-talk. 10-99: domains
# above 101 put the Fast DDS discovery ports (7400 + 250 x domain) inside Linux's ephemeral port range.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 90) + 10 ))}"
python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests; failing on purpose" >&2
  exit 1
fi
exit "$rc"
