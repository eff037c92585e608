"""Builds the native engine (cramfs/_zspool.pyx); everything else is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize(
    [Extension("cramfs._zspool", ["cramfs/_zspool.pyx"], extra_compile_args=["-O2"])],
    compiler_directives={"language_level": 3},
))
