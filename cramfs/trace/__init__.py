"""Recording what a mount saw, for replay and what-if without the workload.

A trace is every call the kernel made into the namespace (creates, opens and
releases, unlinks and renames, resizes, reads, writes with their data,
discards, resets) and every control write, in order, with a monotonic time and
the result each had. The namespace and the device are deterministic, so
feeding the same calls to a fresh device with the same settings ends in the
same state, mm_stat field for field; with other settings, it is the what-if.

A trace passes through, in order:

    format.py     the file: its header, its records, how a write's pages are kept
    ring.py       the request path's queue to the writer thread (PyTraceRing, the
                  reference of the compiled ring in cramfs/_tracering.pyx)
    recorder.py   Recorder: the writer thread, and how a recording stops
    reader.py     scan() and read_trace(): the records back, or where a trace is cut off
    replay.py     the calls made again on a fresh in-process device: replay and what-if
    outcomes.py   each page's outcome (stored, huge, refused, ...) in an exact replay
    cli.py        cramfs-trace: show, stats, replay, pages, whatif

`cramfs.trace` itself holds what records a trace and reads one back (the names of
format.py, recorder.py and reader.py), which the namespace and the control files
use; replay, outcomes and cli build devices and are imported by name.
"""

from .format import (
    ALSO_KEEPABLE,
    CONTROL,
    CREATE,
    DISCARD,
    HEAD,
    LZ4_KIND,
    LZ4_TAG,
    MAGIC,
    NO_SHRINK,
    OP_NAMES,
    OPENED,
    PAGES,
    PAGES_ALSO,
    RAW_TAG,
    READ,
    READABLE,
    REC,
    RELEASED,
    RENAME,
    RESET,
    RESIZE,
    SAME_TAG,
    STOP,
    TICK,
    UNLINK,
    VERSION,
    VERSION_ALSO,
    WHOLE,
    WRITE,
    AltBlocks,
    KeptBlocks,
    PageCode,
    Record,
    TraceError,
    decode_page,
    encode_pages,
    keepable,
    pack_records,
    pack_write,
    unpack_write,
)
from .reader import Extent, read_trace, scan
from .recorder import MAX_BACKLOG, RING_RECORDS, Recorder

__all__ = [
    "ALSO_KEEPABLE", "CONTROL", "CREATE", "DISCARD", "HEAD", "LZ4_KIND", "LZ4_TAG", "MAGIC",
    "MAX_BACKLOG", "NO_SHRINK", "OPENED", "OP_NAMES", "PAGES", "PAGES_ALSO", "RAW_TAG", "READ",
    "READABLE", "REC", "RELEASED", "RENAME", "RESET", "RESIZE", "RING_RECORDS", "SAME_TAG", "STOP",
    "TICK", "UNLINK", "VERSION", "VERSION_ALSO", "WHOLE", "WRITE", "AltBlocks", "Extent",
    "KeptBlocks", "PageCode", "Record", "Recorder", "TraceError", "decode_page", "encode_pages",
    "keepable", "pack_records", "pack_write", "read_trace", "scan", "unpack_write",
]
