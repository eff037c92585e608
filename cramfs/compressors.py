"""The page compressors, by the names zram uses for them.

A stored page remembers which compressor wrote it (a small integer id), so
switching `.cram/compressor` affects new pages only, as the issue asks and as
zram's recompress does per page.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections.abc import Callable
from dataclasses import dataclass

import lz4.block
import zstandard

from . import _lzok
from .units import PAGE_SIZE


def _liblz4_compress_fast() -> Callable[[bytes], bytes]:
    """liblz4's one-shot LZ4_compress_fast(src, dst, n, bound, 1) through ctypes."""
    lib = ctypes.CDLL(ctypes.util.find_library("lz4") or "liblz4.so.1")
    fast = lib.LZ4_compress_fast
    fast.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int,
                     ctypes.c_int)
    fast.restype = ctypes.c_int

    def compress(data: bytes) -> bytes:
        data = bytes(data)
        bound = len(data) + len(data) // 255 + 16
        out = ctypes.create_string_buffer(bound)
        n = fast(data, out, len(data), bound, 1)
        if n <= 0:
            raise RuntimeError("LZ4_compress_fast failed")
        return out.raw[:n]

    return compress


@dataclass(frozen=True)
class Compressor:
    name: str
    ident: int
    compress: Callable[[bytes], bytes]
    decompress: Callable[[bytes], bytes]


# lz4 compresses as zram's lz4 backend does (lib/lz4's LZ4_compress_fast, acceleration 1),
# so a page's size is the kernel's: _lz4k, compiled, is the one implementation of those
# rules, and both engines call it. Without the build, liblz4's own LZ4_compress_fast
# stands in (a newer LZ4: a few bytes smaller on about one page in twenty). Any LZ4
# decoder reads the blocks: liblz4 decompresses.
_lz4_compress: Callable[[bytes], bytes]
try:
    from ._lz4k import compress as _lz4_compress
except ImportError:
    _lz4_compress = _liblz4_compress_fast()
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


# lzo and lzo-rle as zram's backends compress them (lib/lzo's lzo1x_1_compress and
# lzorle1x_1_compress), from one kernel-exact core, cramfs/_lzok. One decoder reads both:
# an lzo-rle block says so in its first two bytes (0x11, then the bitstream version),
# which no lzo1x block starts with. Every read and write of it is bounds-checked.
def _lzo_compress(data: bytes) -> bytes:
    return _lzok.compress(data, False)


def _lzo_rle_compress(data: bytes) -> bytes:
    return _lzok.compress(data, True)


def _lzo_decompress(blob: bytes) -> bytes:
    page = _lzok.decompress(blob, PAGE_SIZE)
    if len(page) != PAGE_SIZE:
        raise ValueError(f"an lzo block gave {len(page)} bytes, not a page")
    return page


# A page-table word keeps a 2-bit compressor id: lzo and lzo-rle share id 3, the one
# decoder telling their blocks apart. (So a page kept in the DRAM tier under one of the
# two is demoted as it is under the other; a new write uses the current one.)
_ALL = (
    Compressor("lz4", 0, _lz4_compress, _lz4_decompress),
    Compressor("zstd", 1, _zstd_compress, _zstd_decompress),
    Compressor("none", 2, _identity, _identity),
    Compressor("lzo", 3, _lzo_compress, _lzo_decompress),
    Compressor("lzo-rle", 3, _lzo_rle_compress, _lzo_decompress),
)

# in comp_algorithm's order where zram has them (this kernel: "lzo-rle lzo lz4")
COMPRESSORS: dict[str, Compressor] = {c.name: c for c in (_ALL[4], _ALL[3], *_ALL[:3])}
BY_ID: tuple[Compressor, ...] = _ALL[:4]
assert all(BY_ID[c.ident].decompress is c.decompress for c in _ALL)


def describe(current: str) -> str:
    """zram's comp_algorithm format: every choice, the current one in brackets."""
    return " ".join(f"[{n}]" if n == current else n for n in COMPRESSORS)
