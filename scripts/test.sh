#!/usr/bin/env bash
# Runs the test suite in the built workspace. Fails loudly when no test ran (pytest exit code 5),
# and when a test skipped that scripts/skip_policy.py does not allow (its summary lists every skip).
set -uo pipefail
cd "$(dirname "$0")/.."
. ./env.sh
# Each run gets its own DDS domain so parallel runs on one machine never cross-talk.
export ROS_DOMAIN_ID="${ROS_DOMAIN_ID:-$(( ($$ % 100) + 100 ))}"
# `python -m` puts the repository root on sys.path, so the plugin loads as scripts.skip_policy.
python -m pytest -p scripts.skip_policy "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "test: pytest collected no tests; failing on purpose" >&2
  exit 1
fi
exit "$rc"
