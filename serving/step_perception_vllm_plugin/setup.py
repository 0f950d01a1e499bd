"""Ships ``step_perception_vllm_plugin.pth`` at the top of site-packages (see torchvision_ops.py).

setuptools has no declarative way to put a file beside the packages, so build_py copies it into the
build tree; the wheel then installs it into purelib, where the site module executes it at start-up.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

PTH = "step_perception_vllm_plugin.pth"


class BuildPyWithPth(build_py):
    """build_py that also puts the .pth file at the top of the build tree."""

    def run(self) -> None:
        """Build the packages, then copy the .pth beside them."""
        super().run()
        self.copy_file(str(Path(__file__).parent / PTH), str(Path(self.build_lib) / PTH))


setup(cmdclass={"build_py": BuildPyWithPth})
