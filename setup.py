"""The package list, found rather than written out: `runtime/` is imported as
`voice_runtime`, a renaming pyproject's `packages.find` cannot express (it finds
`runtime.*`). Every folder under runtime/ with an __init__.py ships;
tests/e2e/test_package.py checks the built wheel and sdist hold every file."""

from setuptools import find_packages, setup

setup(
    packages=["voice_runtime" + name.removeprefix("runtime")
              for name in find_packages(include=["runtime", "runtime.*"])],
    package_dir={"voice_runtime": "runtime"},
)
