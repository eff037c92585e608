"""The trace file: its header, its records and how a write's data is kept in them.

Format, little-endian: a header (magic, version, then JSON: the settings, the
device's state and whether it started empty), then records of

    time f64 (seconds since start) | op u8 | inode u32 | a i64 | b i64 |
    result i32 | payload length u32 | payload

(a create's a is uid << 16 | mode and b its gid)

and a STOP record whose payload is the final state as JSON. Names and control
values are UTF-8. A write's payload starts with a format byte: 0, then its data
as one lz4 block (a write not made of whole pages at a page offset); or 1,
then each page as the device's lz4 encoder sees it (tag 0 and the repeated
8-byte word of a same-filled page, tag 1 and a u16 length and the page's lz4
block, tag 2 and the page itself where lz4 does not shrink it). A replay with
lz4 hands those encodings to the device as they are, and compresses nothing
again; with another compressor it decodes the pages first. Version 1 traces
(one lz4 block per write) still read.

A recording started with `compressors=zstd,...` (version 3; the header lists
them) also keeps each page as those compressors encode it: format byte 2, a
u32 length, the pages as in format 1, then for each listed compressor in
order, for each page that is not same-filled, a u16 length and its block
(0xFFFF and nothing: it does not shrink the page).
A replay under one of them then compresses nothing again either. That costs
the writer thread one compression per page and compressor (zstd: about 11 µs a
page here), and the file those blocks.

recorder.py writes this format (pack_records, here, is the Python packing;
_tracering.pyx packs the same bytes compiled); reader.py reads it back.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, NamedTuple

import lz4.block

from ..compressors import COMPRESSORS
from ..engine import encode_lz4_pages
from ..units import PAGE_SIZE, shown

MAGIC = b"CRAMTRC\0"
VERSION = 2                        # 3 where other compressors' blocks are kept too
# The header's "lz4": how the pages kept as lz4 blocks were compressed. "kernel": as
# zram's lz4 does (cramfs/_lz4k); a trace without it kept python-lz4's blocks.
LZ4_KIND = "kernel"
VERSION_ALSO = 3
READABLE = (1, 2, 3)
HEAD = struct.Struct("<8sHI")          # magic, version, the JSON header's length
REC = struct.Struct("<dBIqqiI")        # a record before its payload
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
WHOLE, PAGES, PAGES_ALSO = 0, 1, 2  # a write payload's format byte
NO_SHRINK = 0xFFFF                 # a kept block's length: the compressor did not shrink it
# what `compressors=` may list: lz4 is always kept, and `none` needs nothing kept
ALSO_KEEPABLE = ("zstd", "lzo", "lzo-rle")
SAME_TAG, LZ4_TAG, RAW_TAG = 0, 1, 2  # a kept page's tag

# operations, by the namespace call they record
CREATE, UNLINK, RENAME, OPENED, RELEASED, RESIZE, READ, WRITE, DISCARD, RESET, CONTROL, \
    STOP, TICK = range(1, 14)
OP_NAMES = {CREATE: "create", UNLINK: "unlink", RENAME: "rename", OPENED: "open",
            RELEASED: "release", RESIZE: "resize", READ: "read", WRITE: "write",
            DISCARD: "discard", RESET: "reset", CONTROL: "control", STOP: "stop",
            TICK: "tick"}


# A written page as the trace keeps it: (SAME_TAG, word), (LZ4_TAG, lz4 block) or
# (RAW_TAG, page).
PageCode = tuple[int, bytes]
# A write's pages as another compressor encodes them, page by page: its block, or None
# where the page is same-filled or the compressor does not shrink it.
AltBlocks = tuple[bytes | None, ...]


def keepable(names: str) -> tuple[str, ...]:
    """A `compressors=` list (`zstd,lzo`) as the compressors a recording keeps besides
    lz4, each once; ValueError if one cannot be kept or there is none."""
    also = tuple(dict.fromkeys(n for n in names.split(",") if n))
    bad = [n for n in also if n not in ALSO_KEEPABLE]
    if bad or not also:
        raise ValueError(f"a trace keeps besides lz4 one or more of "
                         f"{', '.join(ALSO_KEEPABLE)}, got {shown(names)}")
    return also


def encode_pages(data: bytes) -> list[PageCode]:
    """Whole pages as lz4 encodes them in the device: same-filled pages as their word,
    the others as their lz4 block (raw where lz4 does not shrink them)."""
    if encode_lz4_pages is not None:      # one call, the GIL released once
        coded = encode_lz4_pages(data, 0, len(data) // PAGE_SIZE, 1, 0, PAGE_SIZE + 1)
    else:
        coded = [_encode_page(data[i:i + PAGE_SIZE]) for i in range(0, len(data), PAGE_SIZE)]
    return [(SAME_TAG, word) if word is not None else
            (RAW_TAG, data[k * PAGE_SIZE:(k + 1) * PAGE_SIZE]) if len(blob) >= PAGE_SIZE else
            (LZ4_TAG, blob) for k, (word, blob, _, _) in enumerate(coded)]


def _encode_page(page: bytes) -> tuple[bytes | None, bytes, int, bool]:
    word = page[:8]
    if page == word * (PAGE_SIZE // 8):
        return word, b"", 0, False
    return None, COMPRESSORS["lz4"].compress(page), 1, False


def decode_page(code: PageCode) -> bytes:
    tag, body = code
    if tag == SAME_TAG:
        return body * (PAGE_SIZE // 8)
    if tag == LZ4_TAG:
        return lz4.block.decompress(body, uncompressed_size=PAGE_SIZE)
    return body


class Record(NamedTuple):
    """One recorded call (a NamedTuple: a replay makes one per call, and a frozen
    dataclass costs several times as much to build)."""

    time: float
    op: int
    ino: int
    a: int
    b: int
    result: int           # bytes done, or -errno
    payload: bytes        # written data, a name, or "name\0value" (b"" if `pages`)
    pages: tuple[PageCode, ...] | None = None     # a write kept page by page
    also: KeptBlocks | None = None      # its pages under the header's other compressors

    @property
    def name(self) -> str:
        return OP_NAMES.get(self.op, f"op{self.op}")

    @property
    def data(self) -> bytes:
        """A write's data, decoded from its pages if it was kept so."""
        if self.pages is None:
            return self.payload
        return b"".join(map(decode_page, self.pages))

    @property
    def size(self) -> int:
        """A write's length, without decoding it."""
        return len(self.pages) * PAGE_SIZE if self.pages is not None else len(self.payload)

    def text(self) -> str:
        return self.payload.decode("utf-8", "surrogateescape")


def pack_records(batch: list[tuple[Any, ...]], start: float,
                 also: tuple[str, ...] = ()) -> bytes:
    """Records as the trace holds them, times made relative to `start` (what
    _tracering.TraceRing.drain writes, in Python)."""
    out = []
    for t, op, ino, a, b, result, payload in batch:
        t -= start
        if op == WRITE and payload:
            payload = pack_write(a, payload, also)
        out.append(REC.pack(t, op, ino, a, b, result, len(payload)))
        out.append(payload)
    return b"".join(out)


def pack_write(off: int, data: bytes, also: tuple[str, ...] = ()) -> bytes:
    if off % PAGE_SIZE or len(data) % PAGE_SIZE:
        return bytes([WHOLE]) + lz4.block.compress(data)
    return _pack_pages(data, also)


def _pack_pages(data: bytes, also: tuple[str, ...]) -> bytes:
    """pack_write of whole pages: format 1, or format 2, which also keeps other
    compressors' blocks (after the pages, so a replay that does not ask for them
    never parses them)."""
    out = [b""]
    u16 = _U16.pack
    coded = encode_pages(data)
    for tag, body in coded:
        out.append(bytes([tag]))
        if tag == LZ4_TAG:
            out.append(u16(len(body)))
        out.append(body)
    if not also:
        out[0] = bytes([PAGES])
        return b"".join(out)
    pages = b"".join(out)
    out = [bytes([PAGES_ALSO]), _U32.pack(len(pages)), pages]
    for name in also:
        # the device's own compress function: a replay must get exactly its blocks
        compress = COMPRESSORS[name].compress
        for k, (tag, _) in enumerate(coded):
            if tag == SAME_TAG:
                continue
            block = compress(data[k * PAGE_SIZE:(k + 1) * PAGE_SIZE])
            if len(block) >= PAGE_SIZE:          # huge under every threshold: not kept
                out.append(u16(NO_SHRINK))
            else:
                out.append(u16(len(block)))
                out.append(block)
    return b"".join(out)


class KeptBlocks:
    """A write's pages as the header's other compressors encode them, parsed when a
    replay first asks for one (a replay under lz4 never does)."""

    __slots__ = ("_columns", "_names", "_section", "_tags")

    def __init__(self, section: bytes, names: tuple[str, ...], tags: bytes) -> None:
        self._section = section
        self._names = names
        self._tags = tags                # each page's tag, in order
        self._columns: dict[str, AltBlocks] | None = None

    def get(self, name: str) -> AltBlocks | None:
        """Page by page: its block under `name`, or None where the page is same-filled
        or `name` does not shrink it; None if `name` was not kept."""
        if self._columns is None:
            self._columns = self._parse()
        return self._columns.get(name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names)

    def _parse(self) -> dict[str, AltBlocks]:
        s, u16, n = self._section, _U16.unpack_from, len(self._section)
        i = 0
        columns = {}
        for name in self._names:
            column: list[bytes | None] = []
            for tag in self._tags:
                if tag == SAME_TAG:
                    column.append(None)
                    continue
                if i + 2 > n:
                    raise TraceError("a write record's kept blocks are cut short")
                (size,) = u16(s, i)
                i += 2
                if size == NO_SHRINK:
                    column.append(None)
                    continue
                if i + size > n:
                    raise TraceError("a write record's kept blocks are cut short")
                column.append(s[i:i + size])
                i += size
            columns[name] = tuple(column)
        if i != n:
            raise TraceError("a write record's kept blocks overrun it")
        return columns


def unpack_write(payload: bytes, version: int, also: tuple[str, ...] = (),
                  ) -> tuple[bytes, tuple[PageCode, ...] | None, KeptBlocks | None]:
    if version == 1:
        return lz4.block.decompress(payload), None, None
    fmt = payload[0]
    if fmt == WHOLE:
        return lz4.block.decompress(payload[1:]), None, None
    i, n = 1, len(payload)
    if fmt == PAGES_ALSO:
        (size,) = _U32.unpack_from(payload, 1)
        i, n = 5, 5 + size
    pages: list[PageCode] = []
    append, u16 = pages.append, _U16.unpack_from
    while i < n:
        tag = payload[i]
        if tag == LZ4_TAG:
            (size,) = u16(payload, i + 1)
            i += 3
        else:
            size = 8 if tag == SAME_TAG else PAGE_SIZE
            i += 1
        append((tag, payload[i:i + size]))
        i += size
    if fmt != PAGES_ALSO:
        return b"", tuple(pages), None
    if i != n:
        raise TraceError("a write record's pages overrun it")
    kept = KeptBlocks(payload[n:], also, bytes(tag for tag, _ in pages))
    return b"", tuple(pages), kept


class TraceError(Exception):
    """A file that is not a trace, or one cut short or damaged."""
