"""vLLM general plugin for the CPU build of vLLM 0.32 (installed into ``.venv-vllm`` only).

vLLM calls :func:`register` in every one of its processes before a model is built. It works around
one CPU-path bug: ``Step3p7ForConditionalGeneration._process_image_features`` hands its
``vit_large_projector`` the vision encoder's output as a transposed, non-contiguous view, and the
CPU GEMM kernels vLLM dispatches that layer to reject such an input: oneDNN's ``onednn_mm``
("Expected a.stride(-1) == 1") and, on CPUs with AMX and a bf16 model, the sgl-kernel
``weight_packed_linear`` ("mat1 must be contiguous at last dimension"). The engine then dies in its
start-up profiling run. The fix makes that one input contiguous (a copy of the image features, a
few hundred rows), so every layer keeps vLLM's fast GEMM path; turning oneDNN off everywhere, the
first workaround found, did not cover the AMX path and slowed every other layer.

Set ``STEP_PERCEPTION_VLLM_PLUGIN=0`` to leave vLLM untouched (for example to check whether a later
vLLM fixed the projector).

The package also ships ``torchvision_ops`` (loaded from a ``.pth`` file, see there), which must run
before anything imports torchvision and therefore cannot wait for vLLM to load plugins.
"""

from __future__ import annotations

import logging
import os
from typing import Any

__all__ = ["register"]

_log = logging.getLogger(__name__)
_PATCHED = "_step_perception_contiguous_input"


def register() -> None:
    """Apply the workaround (idempotent: vLLM may call it several times per process)."""
    if os.environ.get("STEP_PERCEPTION_VLLM_PLUGIN") == "0":
        return
    # Imported here, not at module level: the .pth file imports this package in every Python
    # process of the venv (pip included), and vLLM's model code is heavy.
    from vllm.model_executor.models.step3p7 import Step3p7ForConditionalGeneration as Model

    original = Model._process_image_features
    if getattr(original, _PATCHED, False):
        return

    def _process_image_features(self: Any, image_features: Any) -> Any:
        return original(self, image_features.contiguous())

    setattr(_process_image_features, _PATCHED, True)
    Model._process_image_features = _process_image_features
    _log.info("step_perception_vllm_plugin: vit_large_projector input made contiguous")
