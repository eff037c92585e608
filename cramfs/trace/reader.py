"""Reading a trace back: where its records end, and the records themselves.

scan() walks the records' fixed parts only, to find where a trace ends and whether
it ends as a recording does (with its stop record); read_trace() hands over the
header and the records in order, a write's data decoded as format.py keeps it. A
trace cut off or damaged is a TraceError naming the byte where it ends.
"""

from __future__ import annotations

import json
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from .format import (
    HEAD,
    MAGIC,
    OP_NAMES,
    READABLE,
    REC,
    STOP,
    WRITE,
    Record,
    TraceError,
    unpack_write,
)


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
        head = f.read(HEAD.size)
        if len(head) < HEAD.size:
            if head and MAGIC.startswith(head[:len(MAGIC)]):
                raise TraceError(f"{path}: cut off at byte {len(head)}, inside its header")
            raise TraceError(f"{path}: not a cramfs trace (too short)")
        magic, version, size = HEAD.unpack(head)
        if magic != MAGIC:
            raise TraceError(f"{path}: not a cramfs trace")
        if version not in READABLE:
            raise TraceError(f"{path}: trace version {version}; this cramfs reads "
                             f"{', '.join(map(str, READABLE))}")
        body = f.read(size)
        if len(body) < size:
            raise TraceError(f"{path}: cut off at byte {HEAD.size + len(body)}, inside its "
                             f"header (which ends at byte {HEAD.size + size})")
        try:
            header = json.loads(body)
        except ValueError:
            raise TraceError(f"{path}: damaged header (bytes {HEAD.size} to "
                             f"{HEAD.size + size})") from None
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
            unpack, head = REC.unpack_from, REC.size
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
                pos, head = start, REC.size
                unpack = REC.unpack_from
                while pos + head <= end:
                    at = pos
                    t, op, ino, a, b, result, n = unpack(mm, pos)
                    pos += head
                    payload = mm[pos:pos + n]
                    pos += n
                    if op == WRITE and payload:
                        try:
                            data, pages, alt = unpack_write(payload, version, also)
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
