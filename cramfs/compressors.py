"""The page compressors, by the names zram uses for them.

A stored page remembers which compressor wrote it (a small integer id), so
switching `.cram/compressor` affects new pages only, as the issue asks and as
zram's recompress does per page.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass

import lz4.block
import lzo
import zstandard

from .units import PAGE_SIZE


@dataclass(frozen=True)
class Compressor:
    name: str
    ident: int
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]


# store_size=False: the page size is known, so the 4-byte header is waste.
# partial, not a wrapper function: one Python frame less on every page.
_lz4_compress = functools.partial(lz4.block.compress, store_size=False)
_lz4_decompress = functools.partial(lz4.block.decompress, uncompressed_size=PAGE_SIZE)


# zstandard's (de)compressor objects must not be shared between threads, and
# large requests are compressed in worker threads (parallel.py): one per thread.
_zstd = threading.local()


def _zstd_compress(data: bytes) -> bytes:
    c = getattr(_zstd, "c", None)
    if c is None:
        # level 1: zram's zstd default, and what ANCHORS measured
        c = _zstd.c = zstandard.ZstdCompressor(level=1, write_content_size=False,
                                               write_checksum=False)
    return c.compress(data)


def _zstd_decompress(blob: bytes) -> bytes:
    d = getattr(_zstd, "d", None)
    if d is None:
        d = _zstd.d = zstandard.ZstdDecompressor()
    return d.decompress(blob, max_output_size=PAGE_SIZE)


def _identity(data: bytes) -> bytes:
    return bytes(data)


# LZO1X-1 through liblzo2 (python-lzo): the algorithm of the kernel's `lzo`, which zram
# and zswap here offer and lz4 and zstd they do not. Level 1 is lzo1x_1_compress; the
# kernel's own implementation of it emits different bytes for most pages, so sizes
# match the kernel's closely, not exactly.
def _lzo_compress(data: bytes) -> bytes:
    return lzo.compress(data, 1, False)


def _lzo_decompress(blob: bytes) -> bytes:
    return lzo.decompress(blob, False, PAGE_SIZE)


_ALL = (
    Compressor("lz4", 0, _lz4_compress, _lz4_decompress),
    Compressor("zstd", 1, _zstd_compress, _zstd_decompress),
    Compressor("none", 2, _identity, _identity),
    Compressor("lzo", 3, _lzo_compress, _lzo_decompress),   # ids are 2 bits: 3 is the last
)

COMPRESSORS: dict[str, Compressor] = {c.name: c for c in _ALL}
BY_ID: tuple[Compressor, ...] = _ALL


def describe(current: str) -> str:
    """zram's comp_algorithm format: every choice, the current one in brackets."""
    return " ".join(f"[{n}]" if n == current else n for n in COMPRESSORS)
