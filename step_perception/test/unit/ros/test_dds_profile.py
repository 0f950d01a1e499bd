"""The Fast DDS profile chosen per distro, and the file it names is the one shipped."""

from __future__ import annotations

from pathlib import Path

import pytest
from step_perception.ros.dds_profile import fastdds_profile, profile_env

CONFIG = Path(__file__).resolve().parents[3] / "config"


@pytest.mark.parametrize(
    ("distro", "variable", "file_name"),
    [
        ("kilted", "FASTDDS_DEFAULT_PROFILES_FILE", "fastdds3.xml"),
        ("jazzy", "FASTRTPS_DEFAULT_PROFILES_FILE", "fastdds.xml"),
        ("humble", "FASTRTPS_DEFAULT_PROFILES_FILE", "fastdds.xml"),
        ("", "FASTRTPS_DEFAULT_PROFILES_FILE", "fastdds.xml"),
    ],
)
def test_each_distro_gets_its_fast_dds_file(distro: str, variable: str, file_name: str) -> None:
    profile = fastdds_profile(distro)
    assert (profile.variable, profile.file_name) == (variable, file_name)
    assert (CONFIG / profile.file_name).is_file()


def test_a_profile_already_set_wins() -> None:
    mine = "/etc/my_fastdds.xml"
    assert profile_env("kilted", CONFIG, {"FASTDDS_DEFAULT_PROFILES_FILE": mine}) == {
        "FASTDDS_DEFAULT_PROFILES_FILE": mine
    }
    # The other generation's variable does not count: Fast DDS 3 would not read it as its own.
    assert profile_env("kilted", CONFIG, {"FASTRTPS_DEFAULT_PROFILES_FILE": mine}) == {
        "FASTDDS_DEFAULT_PROFILES_FILE": str(CONFIG / "fastdds3.xml")
    }


def test_env_sh_makes_the_same_choice() -> None:
    """env.sh cannot import this module: it names the same files for the same distros."""
    env_sh = (CONFIG.parents[1] / "env.sh").read_text()
    for distro in ("kilted", "jazzy"):
        profile = fastdds_profile(distro)
        assert f"{profile.variable}=" in env_sh
        assert f"config/{profile.file_name}" in env_sh
