"""ament_python build of step_perception_tools: the `step-perception` CLI."""

from setuptools import find_packages, setup

PACKAGE = "step_perception_tools"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="step_perception maintainers",
    maintainer_email="maintainers@step-perception.dev",
    description="Harness of step_perception: scenes, bag replay/record, eval, offline runs, demo.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "step-perception = step_perception_tools.cli:main",
        ],
    },
)
