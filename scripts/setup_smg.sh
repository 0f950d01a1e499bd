#!/usr/bin/env bash
# Installs smg (the Shepherd Model Gateway, SGLang's router) into its own venv, .venv-smg,
# idempotently: a second run with the pin unchanged only checks the version (< 1 s).
#
# Why its own venv and not .venv: smg pulls grpcio, grpcio-health-checking and with it protobuf,
# whose versions would then be decided next to torch/transformers and the ROS 2 wheels. Nothing in
# the node imports smg: it is a separate process (a Rust binary behind a thin Python CLI) that
# the node reaches over HTTP, so it gains nothing from sharing the node's environment.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=$PWD/.venv-smg
PIN=$(grep -E '^smg==' requirements/smg.txt | cut -d= -f3)
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

if [ "$("$VENV/bin/smg" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1)" = "$PIN" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  echo "smg: creating $VENV"
  "$PY" -m venv "$VENV"
fi
echo "smg: installing smg==$PIN into $VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements/smg.txt
"$VENV/bin/smg" --version
