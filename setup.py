# setuptools reads everything from pyproject.toml; this file exists only because
# cffi's out-of-line API-mode builder hooks in through the `cffi_modules` keyword,
# which has no pyproject.toml spelling.
from setuptools import setup

setup(cffi_modules=["native/build_native.py:ffibuilder"])
