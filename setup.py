"""Builds the compiled modules (cramfs/_*.pyx); everything else is in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

setup(ext_modules=cythonize(
    # _GLIBCXX_ASSERTIONS: std::vector's [] checks its bounds too (an abort, not a
    # stray write, if the pool's own arithmetic were ever wrong)
    [Extension("cramfs._zspool", ["cramfs/_zspool.pyx"],
               extra_compile_args=["-O2", "-D_GLIBCXX_ASSERTIONS"]),
     # the compiled pool's size classes and memory, which _zspool cimports
     Extension("cramfs._zsclass", ["cramfs/_zsclass.pyx"],
               extra_compile_args=["-O2", "-D_GLIBCXX_ASSERTIONS"]),
     Extension("cramfs._zsmemory", ["cramfs/_zsmemory.pyx"],
               extra_compile_args=["-O2", "-D_GLIBCXX_ASSERTIONS"]),
     Extension("cramfs._pagetable", ["cramfs/_pagetable.pyx"], extra_compile_args=["-O2"]),
     # the slot store, the DRAM tier and the page paths: C++ for the tier's index
     Extension("cramfs._dramtier", ["cramfs/_dramtier.pyx"],
               extra_compile_args=["-O2", "-D_GLIBCXX_ASSERTIONS"]),
     Extension("cramfs._slotstore", ["cramfs/_slotstore.pyx"],
               extra_compile_args=["-O2", "-D_GLIBCXX_ASSERTIONS"]),
     Extension("cramfs._devpaths", ["cramfs/_devpaths.pyx"], libraries=["lz4"],
               extra_compile_args=["-O2", "-D_GLIBCXX_ASSERTIONS"]),
     # Debian's liblz4 (liblz4-dev, installed by scripts/setup)
     Extension("cramfs._pagecodec", ["cramfs/_pagecodec.pyx"], libraries=["lz4"],
               extra_compile_args=["-O2"]),
     Extension("cramfs._tracering", ["cramfs/_tracering.pyx"], libraries=["lz4"],
               extra_compile_args=["-O2"]),
     Extension("cramfs._lz4k", ["cramfs/_lz4k.pyx"], extra_compile_args=["-O2"]),
     # the kernel-exact lzo codec: its compressor, its decompressor, their Python interface
     Extension("cramfs._lzokc", ["cramfs/_lzokc.pyx"], extra_compile_args=["-O2"]),
     Extension("cramfs._lzokd", ["cramfs/_lzokd.pyx"], extra_compile_args=["-O2"]),
     Extension("cramfs._lzok", ["cramfs/_lzok.pyx"], extra_compile_args=["-O2"])],
    compiler_directives={"language_level": 3},
))
