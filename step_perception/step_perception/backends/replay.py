"""Deprecated name of ``backends/cassette.py``, kept only until tools/offline.py imports that.

Remove this module when ``step_perception_tools`` imports ``step_perception.backends.cassette``.
"""

from __future__ import annotations

from step_perception.backends.cassette import CassetteEntry

__all__ = ["CassetteEntry"]
