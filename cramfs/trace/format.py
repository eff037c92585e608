"""Recording what a mount saw, for replay and what-if without the workload.

A trace is every call the kernel made into the namespace (creates, opens and
releases, unlinks and renames, resizes, reads, writes with their data,
discards, resets) and every control write, in order, with a monotonic time and
the result each had. The namespace and the device are deterministic, so
feeding the same calls to a fresh device with the same settings ends in the
same state, mm_stat field for field; with other settings, it is the what-if.

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

Recording costs the request path one slot of a ring (tracering.py; the written
bytes are kept by reference, not copied). A thread compresses and writes, with
the GIL released where the ring is compiled. A full disk, or a writer that falls
too far behind, stops the recording with an events line; it never fails I/O.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

import lz4.block

from .compressors import COMPRESSORS
from .engine import encode_lz4_pages
from .tracering import PyTraceRing, TraceRing, make_ring
from .units import PAGE_SIZE, shown

MAGIC = b"CRAMTRC\0"
VERSION = 2                        # 3 where other compressors' blocks are kept too
# The header's "lz4": how the pages kept as lz4 blocks were compressed. "kernel": as
# zram's lz4 does (cramfs/_lz4k); a trace without it kept python-lz4's blocks.
LZ4_KIND = "kernel"
VERSION_ALSO = 3
READABLE = (1, 2, 3)
_HEAD = struct.Struct("<8sHI")
_REC = struct.Struct("<dBIqqiI")
_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
WHOLE, PAGES, PAGES_ALSO = 0, 1, 2  # a write payload's format byte
NO_SHRINK = 0xFFFF                 # a kept block's length: the compressor did not shrink it
# what `compressors=` may list: lz4 is always kept, and `none` needs nothing kept
ALSO_KEEPABLE = ("zstd", "lzo", "lzo-rle")


def keepable(names: str) -> tuple[str, ...]:
    """A `compressors=` list (`zstd,lzo`) as the compressors a recording keeps besides
    lz4, each once; ValueError if one cannot be kept or there is none."""
    also = tuple(dict.fromkeys(n for n in names.split(",") if n))
    bad = [n for n in also if n not in ALSO_KEEPABLE]
    if bad or not also:
        raise ValueError(f"a trace keeps besides lz4 one or more of "
                         f"{', '.join(ALSO_KEEPABLE)}, got {shown(names)}")
    return also
SAME_TAG, LZ4_TAG, RAW_TAG = 0, 1, 2
MAX_BACKLOG = 256 << 20          # bytes waiting for the writer before recording stops
RING_RECORDS = 1 << 16           # and records (a ring of 48-byte slots: 3 MiB)

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


class Recorder:
    """Takes records on the request path and writes them from a thread of its own."""

    def __init__(self, path: str, fd: int, header: dict[str, Any],
                 clock: Callable[[], float] = time.monotonic, also: tuple[str, ...] = (),
                 native: bool | None = None) -> None:
        if also:
            keepable(",".join(also))          # ValueError for what cannot be kept
        self.path = path
        self.fd = fd                        # opened by the caller (safepath.create_exclusive)
        self.also = also                    # other compressors whose blocks are kept
        self.reported = False               # the error was told to the events log
        # The recording's clock, the device's own: each record is stamped as its call
        # returns, and a replay runs the call at that time on the device's clock.
        self._start = clock()
        self._ring = make_ring(RING_RECORDS, MAX_BACKLOG, clock, native)
        # The request path calls the ring itself: record(op, ino, a, b, result,
        # payload, at=None) and record_write(ino, off, data, result), which never
        # raise and do nothing once recording stopped.
        self.record: Callable[..., None] = self._ring.record
        self.record_write: Callable[[int, int, bytes, int], None] = self._ring.record_write
        self._stopping = False
        if also:
            header = {**header, "compressors": list(also)}
        self._thread = threading.Thread(target=self._run, args=(header,),
                                        name="cramfs-trace", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        return bool(self._ring.active)

    @property
    def events(self) -> int:
        return int(self._ring.events)

    @property
    def error(self) -> str | None:
        """Why recording stopped early, if it did."""
        return self._ring.error

    def stop(self, final: dict[str, Any]) -> None:
        """End the recording with the final state; the thread finishes on its own."""
        if self._stopping:
            return
        self.record(STOP, payload=json.dumps(final).encode())
        self._ring.stop()
        self._stopping = True

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # ------------------------------------------------------------ the writer thread

    def _run(self, header: dict[str, Any]) -> None:
        ring = self._ring
        try:
            self._write_all(header)
        except OSError as e:
            ring.fail(f"writing {self.path}: {e.strerror}")
        except Exception as e:       # a bug: stop recording, never take the daemon down
            ring.fail(f"the trace writer failed: {e!r}")
        finally:
            ring.release()

    def _write_all(self, header: dict[str, Any]) -> None:
        ring = self._ring
        with os.fdopen(self.fd, "wb") as f:
            body = json.dumps(header).encode()
            version = VERSION_ALSO if self.also else VERSION
            f.write(_HEAD.pack(MAGIC, version, len(body)) + body)
            f.flush()
            if isinstance(ring, PyTraceRing) or self.also:
                self._pack_in_python(f, ring)
            else:
                # compiled packing, the GIL released throughout (other compressors'
                # blocks are Python calls, so a recording that keeps them packs here)
                err = ring.drain(self.fd, self._start)
                if err:
                    raise OSError(err, os.strerror(err))

    def _pack_in_python(self, f: BinaryIO, ring: TraceRing | PyTraceRing) -> None:
        while True:
            done = ring.finished            # before taking: records come before the flag
            batch = ring.take()
            if batch:
                f.write(pack_records(batch, self._start, self.also))
                f.flush()
            elif done:
                return
            else:
                time.sleep(0.005)           # a few ms: the request path never signals


def pack_records(batch: list[tuple[Any, ...]], start: float,
                 also: tuple[str, ...] = ()) -> bytes:
    """Records as the trace holds them, times made relative to `start` (what
    _tracering.TraceRing.drain writes, in Python)."""
    out = []
    for t, op, ino, a, b, result, payload in batch:
        t -= start
        if op == WRITE and payload:
            payload = _pack_write(a, payload, also)
        out.append(_REC.pack(t, op, ino, a, b, result, len(payload)))
        out.append(payload)
    return b"".join(out)


def _pack_write(off: int, data: bytes, also: tuple[str, ...] = ()) -> bytes:
    if off % PAGE_SIZE or len(data) % PAGE_SIZE:
        return bytes([WHOLE]) + lz4.block.compress(data)
    return _pack_pages(data, also)


def _pack_pages(data: bytes, also: tuple[str, ...]) -> bytes:
    """_pack_write of whole pages: format 1, or format 2, which also keeps other
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


def _unpack_write(payload: bytes, version: int, also: tuple[str, ...] = (),
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


@dataclass(frozen=True)
class Extent:
    """How far a trace's records go: what scan() found walking their headers."""

    size: int                  # the file's length
    start: int                 # where the records begin (after the header)
    end: int                   # where the last whole record ends
    records: int               # whole records, the stop record included
    stopped: bool              # the last one is the stop record
    duration: float            # the last record's time (the stop record's, if any)
    problem: str | None        # why the trace is cut off or damaged, with the offset

    @property
    def whole(self) -> bool:
        return self.problem is None


def _open(path: str | Path) -> tuple[BinaryIO, int, dict[str, Any]]:
    """The file positioned at its first record, its version and its header."""
    f = open(path, "rb")    # noqa: SIM115 (the caller closes it)
    try:
        head = f.read(_HEAD.size)
        if len(head) < _HEAD.size:
            if head and MAGIC.startswith(head[:len(MAGIC)]):
                raise TraceError(f"{path}: cut off at byte {len(head)}, inside its header")
            raise TraceError(f"{path}: not a cramfs trace (too short)")
        magic, version, size = _HEAD.unpack(head)
        if magic != MAGIC:
            raise TraceError(f"{path}: not a cramfs trace")
        if version not in READABLE:
            raise TraceError(f"{path}: trace version {version}; this cramfs reads "
                             f"{', '.join(map(str, READABLE))}")
        body = f.read(size)
        if len(body) < size:
            raise TraceError(f"{path}: cut off at byte {_HEAD.size + len(body)}, inside its "
                             f"header (which ends at byte {_HEAD.size + size})")
        try:
            header = json.loads(body)
        except ValueError:
            raise TraceError(f"{path}: damaged header (bytes {_HEAD.size} to "
                             f"{_HEAD.size + size})") from None
    except BaseException:
        f.close()
        raise
    return f, version, header


def scan(path: str | Path) -> Extent:
    """Walk the records' headers (not their payloads: fast on any size) to find where
    the trace ends and whether it ends as a recording does, with its stop record. A
    trace without one was cut short: copied or cut while recording (`head -c`), or its
    recording stopped early (a full disk, a writer too far behind, a daemon killed)."""
    f, _, _ = _open(path)
    with f:
        start = f.tell()
        size = os.fstat(f.fileno()).st_size
        if size <= start:
            return Extent(size, start, start, 0, False, 0.0,
                          f"ends at byte {size}, after its header, with no record")
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos, count, t, stopped = start, 0, 0.0, False
            unpack, head = _REC.unpack_from, _REC.size
            while pos + head <= size and not stopped:
                rt, op, _, _, _, _, n = unpack(mm, pos)
                if op not in OP_NAMES:
                    return Extent(size, start, pos, count, False, t,
                                  f"damaged at byte {pos}: a record of no known kind "
                                  f"({op}); the records before it end there")
                if pos + head + n > size:
                    break
                pos += head + n
                count, t, stopped = count + 1, rt, op == STOP
    problem = None
    if pos < size:
        problem = (f"{size - pos} bytes follow its stop record, which ends at byte {pos}"
                   if stopped else
                   f"cut off at byte {size}, inside a record: the last whole record ends "
                   f"at byte {pos}, and no stop record came")
    elif not stopped:
        problem = (f"ends at byte {size} with no stop record: its recording was cut short "
                   f"(the file cut or copied while recording, or the recording stopped "
                   f"early)")
    return Extent(size, start, pos, count, stopped, t, problem)


def read_trace(path: str | Path, partial: bool = False,
               warn: Callable[[str], None] | None = None,
               ) -> tuple[dict[str, Any], Iterator[Record]]:
    """The header, and the records in order. A trace cut off or damaged is a
    TraceError naming the byte offset where it ends, before any record is read; with
    `partial`, the records up to there (`warn` is told where the trace ends), and a
    record found damaged while reading ends them too, also told to `warn`."""
    extent = scan(path)
    if extent.problem is not None:
        if not partial:
            raise TraceError(f"{path}: {extent.problem}")
        if warn is not None:
            warn(f"{path}: {extent.problem}; reading the {extent.records} whole records "
                 f"before byte {extent.end}")
    f, version, header = _open(path)
    also = tuple(header.get("compressors", ()))

    def records() -> Iterator[Record]:
        # the records mapped, not read: two reads a record were a tenth of a replay
        with f:
            start, end = f.tell(), extent.end
            if end <= start:
                return
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mm:
                pos, head = start, _REC.size
                unpack = _REC.unpack_from
                while pos + head <= end:
                    at = pos
                    t, op, ino, a, b, result, n = unpack(mm, pos)
                    pos += head
                    payload = mm[pos:pos + n]
                    pos += n
                    if op == WRITE and payload:
                        try:
                            data, pages, alt = _unpack_write(payload, version, also)
                        except Exception as e:  # lz4's errors, an index past the payload
                            why = (f"{path}: damaged at byte {at}: a write record's payload "
                                   f"does not decode ({e})")
                            if not partial:
                                raise TraceError(why) from None
                            if warn is not None:
                                warn(f"{why}; the records before it are all there is")
                            return
                        yield Record(t, op, ino, a, b, result, data, pages, alt)
                        continue
                    yield Record(t, op, ino, a, b, result, payload)

    return header, records()
