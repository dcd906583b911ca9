"""Which folders the wheel holds; everything else (dependencies, extras, console scripts) is in pyproject.toml.

conf/ stays at the repository root and ships as the package `captioning.conf`, so the console scripts find the
Hydra configs in an installed wheel as they find conf/ in a checkout (captioning/commands/__init__.py); pyproject
alone cannot map a folder to a package name while also discovering the package's subpackages. benchmarks/ and
tools/ ship too, as their own top-level packages, because scripts/ imports them: the scripts then work from any
folder after `pip install`, with no edit of `sys.path`.
"""
from setuptools import find_namespace_packages, find_packages, setup

setup(
    packages=[*find_packages(include=["captioning", "captioning.*"]), "captioning.conf",
              *find_namespace_packages(include=["benchmarks", "tools"])],
    package_dir={"captioning.conf": "conf"},
    package_data={"captioning.conf": ["**/*.yaml"]},
)
