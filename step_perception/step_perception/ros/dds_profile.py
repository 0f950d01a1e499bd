"""The shipped Fast DDS profile for a ROS distro: the variable that names it and its file.

Fast DDS 3 (Kilted) reads ``FASTDDS_DEFAULT_PROFILES_FILE`` and rejects one element name of the
2.x file, so it has its own copy of the same settings (``config/fastdds3.xml``); Fast DDS 2.x
(Jazzy, Humble) reads ``FASTRTPS_DEFAULT_PROFILES_FILE`` and ``config/fastdds.xml``. The launch
file and the integration tests choose through this module; ``env.sh`` makes the same choice in
bash (it cannot import Python before the workspace is on the path).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["FASTDDS3_DISTROS", "DdsProfile", "fastdds_profile", "profile_env"]

#: Distros whose rmw_fastrtps_cpp links Fast DDS 3.
FASTDDS3_DISTROS = frozenset({"kilted"})


@dataclass(frozen=True)
class DdsProfile:
    """Which environment variable loads the profile, and the profile's file name in ``config/``."""

    variable: str
    file_name: str


def fastdds_profile(distro: str) -> DdsProfile:
    """Return the profile for ``distro`` (a ``ROS_DISTRO`` value; unknown ones get Fast DDS 2.x)."""
    if distro in FASTDDS3_DISTROS:
        return DdsProfile("FASTDDS_DEFAULT_PROFILES_FILE", "fastdds3.xml")
    return DdsProfile("FASTRTPS_DEFAULT_PROFILES_FILE", "fastdds.xml")


def profile_env(distro: str, config_dir: Path, environ: Mapping[str, str]) -> dict[str, str]:
    """Return ``{variable: path}`` for ``distro``: a profile already set in ``environ`` wins."""
    profile = fastdds_profile(distro)
    return {profile.variable: environ.get(profile.variable, str(config_dir / profile.file_name))}
