"""ament_python build of step_perception (colcon, or pip for the pure-Python parts)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "step_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="step_perception maintainers",
    maintainer_email="maintainers@step-perception.dev",
    description="Vision-language perception node for ROS 2 (Step-3.7-Flash or a local model).",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "perception_node = step_perception.ros.main:main",
        ],
    },
)
