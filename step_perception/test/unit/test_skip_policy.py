"""`make test`'s skip policy (scripts/skip_policy.py): only allow-listed skips pass the run."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

MODULE = """
import pytest

def test_runs():
    assert 1 + 1 == 2

def test_stale_skip():
    pytest.skip("not there yet")

@pytest.mark.gpu
def test_gpu_only():
    pytest.skip("needs CUDA")
"""


def _pytest(folder: Path) -> subprocess.CompletedProcess[str]:
    # `python -m pytest` from the repository root, as scripts/test.sh runs it
    # (the folder is outside the repository's pyproject.toml, so its `-p no:launch_*` is repeated:
    # the overlay's launch_testing plugins do not load under this pytest). `--rootdir` pins the
    # node ids to the folder: without it pytest takes the common ancestor of the folder and the
    # checkout, which is /tmp for a checkout under /tmp (the ids then carry the whole path).
    argv = [sys.executable, "-m", "pytest", "-p", "scripts.skip_policy", "-p", "no:cacheprovider",
            "--rootdir", str(folder),
            "-p", "no:launch_testing", "-p", "no:launch_ros", "-p", "no:launch_pytest",
            "-q", "-ra", "-W", "ignore::pytest.PytestUnknownMarkWarning", str(folder)]  # fmt: skip
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_an_unlisted_skip_fails_the_run_and_a_listed_one_does_not(tmp_path: Path) -> None:
    (tmp_path / "test_mixed.py").write_text(MODULE)
    run = _pytest(tmp_path)
    assert run.returncode == 1, run.stdout
    assert "FAILED" in run.stdout and "test_mixed.py::test_stale_skip" in run.stdout
    assert "REFUSED  test_mixed.py::test_stale_skip: Skipped: not there yet" in run.stdout
    assert "allowed  test_mixed.py::test_gpu_only: Skipped: needs CUDA" in run.stdout
    assert "1 failed, 1 passed, 1 skipped" in run.stdout


def test_a_module_that_skips_itself_is_a_collection_error(tmp_path: Path) -> None:
    (tmp_path / "test_gone.py").write_text(
        'import pytest\npytest.importorskip("no_such_module_here")\n\ndef test_a():\n    pass\n'
    )
    run = _pytest(tmp_path)
    assert run.returncode != 0, run.stdout
    assert "ERROR collecting test_gone.py" in run.stdout
    assert "module-level skip refused" in run.stdout
