"""What every part of the device shares: its error, its counters, a page's encoding.

Nothing here decides anything: these are the words the other modules of the
package (and the compiled paths, `_devpaths.pyx`) speak in.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields

from .. import engine
from .. import pagetable as pt
from ..compressors import COMPRESSORS
from ..pagetable import HANDLE_SHIFT, POISONED, PageTable, pack
from ..pool import MAX_ZSPAGE_PAGES
from ..units import PAGE_SIZE, shown

ZERO_PAGE = bytes(PAGE_SIZE)
ZERO_WORD = bytes(8)
NONE_ID = COMPRESSORS["none"].ident
WORDS = PAGE_SIZE // 8
LOW_BITS = (1 << HANDLE_SHIFT) - 1
WIDE_WORD = 1 << HANDLE_SHIFT        # a same-filled word kept in the WordStore
INJECTED_POISON = pack(POISONED, algo=1)    # told apart from overflow's poison
MAX_GROWTH = MAX_ZSPAGE_PAGES * PAGE_SIZE    # the most one store can add to a pool
WRITEBACK_BATCH = 256        # pages one writeback step holds in memory on their way to the file
WRITEBACK_KINDS = ("idle", "huge", "huge_idle", "incompressible")


class DeviceError(Exception):
    """A request the device refuses; `errno` is what the caller should see."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(message)
        self.errno = err


# A page made ready for the device: (same-filled word or None, blob to store,
# compressor id, huge). A plain tuple: it is built for every page written.
# The DRAM tier keeps one per promoted page: the compressed form the device had,
# or, with compressor id DIRTY, the page itself once a write changed it.
Encoded = tuple[bytes | None, bytes, int, bool]
DIRTY = -1


# The compiled store and paths hold the word's layout and these ids as DEFs
# (_slotword.pxi): checked here, at import, so the two can never silently disagree.
_WORD = {"PAGE": PAGE_SIZE, "KIND_MASK": pt.KIND_MASK, "SAME": pt.SAME, "DEVICE": pt.DEVICE,
         "FALLBACK": pt.FALLBACK, "PROMOTED": pt.PROMOTED, "POISONED": pt.POISONED,
         "BACKED": pt.BACKED, "KINDS": pt.KINDS, "ALGO_SHIFT": pt.ALGO_SHIFT,
         "HUGE_BIT": pt.HUGE_BIT, "HANDLE_SHIFT": HANDLE_SHIFT, "WIDE_WORD": WIDE_WORD,
         "INJECTED_POISON": INJECTED_POISON, "DIRTY": DIRTY, "NONE_ID": NONE_ID,
         "LZ4_ID": COMPRESSORS["lz4"].ident, "INLINE_LIMIT": pt.INLINE_LIMIT}
if engine.native_available():
    from .. import _devpaths, _slotstore
    engine.check_constants("_slotstore", dict(_slotstore._constants()), _WORD)
    engine.check_constants("_devpaths", dict(_devpaths._constants()), _WORD)


@dataclass(slots=True)
class Counters:
    """Monotonic counters, named as zram and zswap name them where they can be. (Slots:
    a fault bumps two or three of them, and a slot is cheaper to reach than a dict.)"""

    reads: int = 0
    writes: int = 0
    faults: int = 0
    promotions: int = 0
    demotions: int = 0
    reject_write_control: int = 0
    failed_reads: int = 0
    failed_writes: int = 0
    poisoned_pages: int = 0
    dropped_writes: int = 0
    discarded_pages: int = 0
    zero_released_pages: int = 0
    notify_free: int = 0
    discards: int = 0                # discard requests: .cram/discard lines, fallocate
    invalid_io: int = 0
    huge_pages_since: int = 0
    pages_compacted: int = 0
    fallback_limit_hit: int = 0      # refused pages that host memory had no room for
    recompressed_pages: int = 0      # kept in the secondary algorithm
    recompress_saved_bytes: int = 0  # compressed bytes those pages shed
    recompress_skipped_pages: int = 0  # tried without gain, marked until rewritten
    promotions_skipped: int = 0      # faults served in place: the DRAM tier could not demote
    bd_reads: int = 0                # pages read from the backing file (zram bd_stat)
    bd_writes: int = 0               # pages written to it (zram bd_stat)
    bd_failed: int = 0               # backing-file reads and writes that failed
    bd_full: int = 0                 # pages that found the backing file full (or the limit)
    writeback_dropped: int = 0       # written back while rewritten: the write won
    writeback_fallback: int = 0      # refused pages placed in the backing file
    reclaim_compactions: int = 0     # compactions reclaim ran before a refusal
    reclaim_written: int = 0         # pages reclaim wrote back
    reclaim_rescued: int = 0         # pages stored because reclaim made room
    reclaim_failed: int = 0          # pages refused although reclaim ran

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def reset(self) -> None:
        """Every counter back to 0, in place: the slot store and the compiled paths
        hold this object."""
        for f in fields(self):
            setattr(self, f.name, 0)


def page_name(table: PageTable, idx: int) -> str:
    """A page as event lines name it: the file name quoted, so it cannot forge a line."""
    return f"{shown(table.name, 64)} page {idx}"


def same_word(page: bytes) -> bytes | None:
    """The 8-byte word a page repeats, as zram's page_same_filled checks, or None.

    The last word is compared first, as zram does: most pages fail there, without
    building a 4 KiB page to compare against."""
    word = page[:8]
    return word if page[-8:] == word and page == word * WORDS else None


def encoder(compressor: str, huge_threshold: int) -> Callable[[bytes], Encoded]:
    """A pure function from page to Encoded, safe to run in worker threads."""
    comp = COMPRESSORS[compressor]
    compress, ident = comp.compress, comp.ident

    def encode(page: bytes) -> Encoded:
        word = same_word(page)
        if word is not None:
            return word, b"", 0, False
        blob = compress(page)
        if len(blob) >= huge_threshold:
            return None, page, NONE_ID, True
        return None, blob, ident, False

    return encode
