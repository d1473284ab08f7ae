"""perception: a camera + LiDAR + radar BEV fusion perception stack that installs anywhere."""
from pathlib import Path

from setuptools import find_packages, setup

here = Path(__file__).parent
requirements = [
    line.split("#")[0].strip()
    for line in (here / "requirements.txt").read_text().splitlines()
    if line.split("#")[0].strip() and not line.startswith(("pytest", "hypothesis"))
]

setup(
    name="perception",
    version="0.1.0",
    description="Camera + LiDAR + radar BEV fusion perception: nuScenes reader, synthetic world, "
                "fusion detector, official metrics, visualization and replay.",
    long_description=(here / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["perception", "perception.*"]),
    install_requires=requirements,
    extras_require={"test": ["pytest", "pytest-xdist", "hypothesis"]},
    entry_points={"console_scripts": ["perception=perception.cli:main"]},
)
