"""The emulated compressed-memory device: where a page's life is decided.

A page slot of a file is in one of these states, and moves between them so:

    hole ──write──▶ same | compressed | huge     (on the device)
                    fallback                     (refused by write control, kept in host memory)
                    poisoned | hole              (no room, write control off, overflow=poison|drop)
    compressed ──zswap read (fault)──▶ promoted  (compressed copy released from the pool)
    compressed ──direct write (fault)─▶ promoted
    promoted ──LRU over budget, or .cram/demote──▶ through write control again
    compressed ──writeback (idle, huge, one page)──▶ written back  (in the backing file)
    refused ──fallback=writeback──▶ written back, acknowledged once it is in the file
    compressed ──reclaim, before write control refuses──▶ written back
    written back ──read (a counted fault)──▶ served from the file; promoted in zswap mode
    any ──discard / truncate──▶ hole

A promoted page keeps, outside the pool, the compressed form the device had:
demoting it unchanged puts those bytes back without running the compressor.

Where each arrow is decided:

- paths.py: the page paths, reads and writes page by page: faults, promotion,
  demotion, and the store of a page, which asks admission.py;
- admission.py: write control, fallback and overflow, a pure decision;
- writeback.py: the backing file (writeback, fallback=writeback, reclaim);
- maintenance.py: idle marking, recompression, compaction;
- emulation.py: injected faults and the media's latency;
- slots.py: the slot store, the only code that changes a slot's word, with
  every count that follows from it (its compiled twin is _slotstore.pyx);
- reporting.py: mm_stat, stats and the other numbers;
- facade.py: `Device`, which holds the parts and takes the requests.

The device knows nothing of FUSE. It takes a `PageTable` (one per file) and
byte ranges, and raises `DeviceError` with an errno for the adapter to pass on.
"""

from .common import (
    DIRTY,
    WRITEBACK_BATCH,
    WRITEBACK_KINDS,
    ZERO_PAGE,
    Counters,
    DeviceError,
    Encoded,
    encoder,
    same_word,
)
from .facade import Device

__all__ = ["DIRTY", "WRITEBACK_BATCH", "WRITEBACK_KINDS", "ZERO_PAGE", "Counters", "Device",
           "DeviceError", "Encoded", "encoder", "same_word"]
