"""The one packaging rule pyproject.toml cannot state: the repository's data folders ship inside `engine`.

`presets/` and `data/demo/` stay top-level folders of the repository. In a wheel they become
`engine/_resources/presets/` and `engine/_resources/data/demo/` (the same layout under another
root), where `engine.paths` finds them through importlib.resources. Everything else about the
package is in pyproject.toml.
"""

from setuptools import find_namespace_packages, setup
from setuptools.command.build_py import build_py

# Installed package name -> repository folder. Their files are listed in pyproject's package-data.
RESOURCES = {"engine._resources.presets": "presets", "engine._resources.data.demo": "data/demo"}


class BuildPy(build_py):
    """Data only from the resource folders: `data/demo/make_extract_contacts.py` stays in the repository."""

    def find_package_modules(self, package, package_dir):
        return [] if package in RESOURCES else super().find_package_modules(package, package_dir)


setup(
    packages=find_namespace_packages(include=["engine*", "tui*"], exclude=["*.__pycache__"]) + list(RESOURCES),
    package_dir=RESOURCES,
    cmdclass={"build_py": BuildPy},
)
