"""The reference model folder's own code as a package: training shares it, never copies it.

``models/tabletop-ref`` stays a standalone ``trust_remote_code`` folder (no ``__init__.py``, a name
that is no Python identifier), so it is registered here as the package ``tabletop_ref`` by path;
its modules' relative imports then resolve as they do under transformers' dynamic modules.
The folder defaults to this script's sibling ``../tabletop-ref`` (training is that model's source);
``$STEP_PERCEPTION_MODEL`` overrides it.
"""

from __future__ import annotations

import importlib
import os
import sys
import types
from pathlib import Path

PACKAGE = "tabletop_ref"
MODEL_DIR = Path(
    os.environ.get("STEP_PERCEPTION_MODEL")
    or Path(__file__).resolve().parent.parent / "tabletop-ref"
)


def module(name: str) -> types.ModuleType:
    """Import ``MODEL_DIR/<name>.py`` as ``tabletop_ref.<name>``."""
    if PACKAGE not in sys.modules:
        package = types.ModuleType(PACKAGE)
        package.__path__ = [str(MODEL_DIR)]
        sys.modules[PACKAGE] = package
    return importlib.import_module(f"{PACKAGE}.{name}")
