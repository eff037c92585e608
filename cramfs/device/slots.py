"""The slot store: the only code that writes a page-table word.

A slot's word says where its page is (pagetable.py has the layout). Every change
of a word goes through a `SlotStore`, which changes, in the same step, what the
word names and what the device counts of it:

- the object it names: in the device pool, the fallback pool, the DRAM tier
  (a promoted page's kept copy), the `WordStore` (a wide same-filled word), or a
  backing-file block (given back through `free_block`);
- the counts: slots by kind, huge pages, the bytes charged to each file and in
  all, the injected extra, injected poison, the peak of physical usage;
- a freed object's delayed release (`release_delay`): the file lets go at once,
  the device gets the memory back when the delay is over;
- compaction: the pool moves objects, the store rewrites the words naming them;
- the writeback marks (zram's ZRAM_UNDER_WB): any release of a marked slot drops
  its mark, so a write that lands after it is dropped too.

A store replaces a slot's content in one call (`store_*`), or empties it
(`release`). It frees the old object before it makes the new one, as the device
always has, so handles come out as they did. A free of an object that is not live
raises before anything is changed: the pools check, and the store asks them first.

Two implementations keep this interface: `SlotStore` here, the reference, and
`_slotstore.NativeSlotStore`, compiled. tests/test_slotstore.py drives both with
the same operations and demands the same words, handles and counts.

Every transition can be watched: `hook(table, idx, old, new, cause)` is called
after a word changes (`cause` is `self.cause`, the operation the device is in),
and `note()` reports a decision that left the slot as it was (refused, dropped,
...) with old == new and the decision as the cause. With no hook the cost is one
test of an attribute.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable
from typing import Any

from ..compressors import BY_ID
from ..pagetable import (
    BACKED,
    DEVICE,
    FALLBACK,
    HANDLE_SHIFT,
    HUGE_BIT,
    KIND_MASK,
    KINDS,
    POISONED,
    PROMOTED,
    SAME,
    PageTable,
    WordStore,
    algo_of,
    pack,
    same_handle,
    same_word_of,
)
from ..pool import Pool, rebase
from .common import DIRTY, INJECTED_POISON, LOW_BITS, WIDE_WORD, WORDS, ZERO_PAGE, Counters

Hook = Callable[[Any, int, int, int, str], None]
Slot = tuple[Any, int]


class SlotStore:
    """The slot store in Python: the reference the compiled one is held to."""

    def __init__(self, pool: Pool, fallback: Pool, tier: Any, counters: Counters,
                 monotonic: Callable[[], float], now: Callable[[], int]) -> None:
        self.pool = pool
        self.fallback = fallback
        self.tier = tier
        self.words = WordStore()         # same-filled words too wide for a table word
        self.counters = counters         # huge_pages_since is bumped here
        self._monotonic = monotonic      # delayed releases' deadlines
        self._now = now                  # an access age, for a page's first one
        self._pages = [0] * KINDS        # live slots by kind (index 0 unused)
        self.huge_pages = 0
        self.charged = 0                 # sum of the files' compressed charges
        self.extra = 0                   # sum of injected extra charges
        self.injected_poison = 0         # poisoned pages that inject made, not overflow
        self.mem_used_max = 0            # the peak of `used`, as the device samples it
        self.release_delay = 0           # ms a freed device object stays charged
        # freed device objects still charged, oldest first (release_delay)
        self._pending: collections.deque[tuple[float, int]] = collections.deque()
        self.pending_bytes = 0
        self.tracking = False            # stamp a new page's access age
        self._marks: dict[Slot, int] = {}
        self.free_block: Callable[[int], None] | None = None
        self.hook: Hook | None = None
        self.cause = "write"

    # ------------------------------------------------------------ reading

    @property
    def pages(self) -> list[int]:
        return self._pages

    @property
    def used(self) -> int:
        """physical_used: the pool's memory and the injected extra."""
        return self.pool.used_bytes + self.extra

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def marks(self) -> dict[Slot, int]:
        return self._marks

    @property
    def busy(self) -> bool:
        return bool(self._marks)

    def blob(self, word: int) -> bytes:
        """The object a device or fallback word names, as stored."""
        pool = self.pool if word & KIND_MASK == DEVICE else self.fallback
        return pool.get(word >> HANDLE_SHIFT)

    def decode(self, word: int) -> bytes:
        """The page a device or fallback word names."""
        return BY_ID[algo_of(word)].decompress(self.blob(word))

    def peek(self, table: PageTable, idx: int, touch: bool = False) -> bytes | None:
        """A page's bytes, with no transition; None for a poisoned or written-back
        slot (the device decides what reading one means). `touch` marks a promoted
        page recently used."""
        word = table.get(idx)
        if not word:
            return ZERO_PAGE
        kind = word & KIND_MASK
        if kind == SAME:
            handle = word >> HANDLE_SHIFT
            return same_word_of(handle, self.words) * WORDS if handle else ZERO_PAGE
        if kind == PROMOTED:
            _, blob, algo, _ = self.kept(table, idx, touch)
            return blob if algo == DIRTY else BY_ID[algo].decompress(blob)
        if kind in (DEVICE, FALLBACK):
            return self.decode(word)
        return None

    def kept(self, table: PageTable, idx: int, touch: bool = False) -> Any:
        """What the DRAM tier keeps for a promoted page (`touch`: mark it used)."""
        return self.tier.get((table, idx)) if touch else self.tier.peek((table, idx))

    def oldest(self) -> Slot | None:
        return self.tier.oldest()

    def promoted(self) -> int:
        return len(self.tier)

    # ------------------------------------------------------------ transitions

    def release(self, table: PageTable, idx: int) -> int:
        """Make a slot a hole and free what it held; return the old word."""
        old = self._clear(table, idx)
        if old and self.hook is not None:
            self.hook(table, idx, old, 0, self.cause)
        return old

    def store_same(self, table: PageTable, idx: int, word: bytes) -> int:
        old = self._clear(table, idx)
        return self._install(table, idx, old, pack(SAME, same_handle(word, self.words)))

    def store_device(self, table: PageTable, idx: int, blob: bytes, algo: int, huge: bool,
                     extra: int = 0) -> int:
        old = self._clear(table, idx)
        pool = self.pool
        new = pack(DEVICE, pool.put(blob), algo, huge)
        return self._install(table, idx, old, new, pool.charge(len(blob)), extra)

    def store_fallback(self, table: PageTable, idx: int, blob: bytes, algo: int,
                       huge: bool) -> int:
        old = self._clear(table, idx)
        return self._install(table, idx, old, pack(FALLBACK, self.fallback.put(blob), algo,
                                                   huge))

    def store_promoted(self, table: PageTable, idx: int, kept: Any) -> int:
        old = self._clear(table, idx)
        self.tier.put((table, idx), kept)
        return self._install(table, idx, old, PROMOTED)

    def store_backed(self, table: PageTable, idx: int, block: int) -> int:
        old = self._clear(table, idx)
        return self._install(table, idx, old, pack(BACKED, block))

    def store_poison(self, table: PageTable, idx: int, injected: bool) -> int:
        old = self._clear(table, idx)
        return self._install(table, idx, old, INJECTED_POISON if injected else POISONED)

    def keep(self, table: PageTable, idx: int, kept: Any) -> None:
        """Give a promoted page a new DRAM copy (a write to it): no word changes."""
        self.tier.put((table, idx), kept)

    def note(self, table: PageTable, idx: int, what: str) -> None:
        """Tell the hook of a decision that left the slot as it was."""
        if self.hook is not None:
            word = table.get(idx)
            self.hook(table, idx, word, word, what)

    def _install(self, table: PageTable, idx: int, old: int, word: int, charge: int = 0,
                 extra: int = 0) -> int:
        table.set(idx, word)
        kind = word & KIND_MASK
        self._pages[kind] += 1
        if kind == DEVICE:
            table.stored_pages += 1
            table.physical_bytes += charge + extra
            self.charged += charge + extra
            if self.tracking:
                table.renew(idx, self._now())
            if extra:
                table.extra[idx] = extra
                self.extra += extra
            if word & HUGE_BIT:
                self.huge_pages += 1
                self.counters.huge_pages_since += 1
        elif kind in (SAME, BACKED):
            table.stored_pages += 1
        elif kind == PROMOTED:
            table.promoted_pages += 1
        elif word == INJECTED_POISON:
            self.injected_poison += 1
        if self.hook is not None:
            self.hook(table, idx, old, word, self.cause)
        return old

    def _clear(self, table: PageTable, idx: int) -> int:
        """release() without the hook: the object is freed first (a stale handle
        raises with nothing changed), then the word and the counts."""
        word = table.get(idx)
        if not word:
            if self._marks:
                self._marks.pop((table, idx), None)
            return 0
        kind = word & KIND_MASK
        if kind >= KINDS:
            raise ValueError(f"slot {idx}: a word of no known kind ({word:#x})")
        charge = 0
        if kind == DEVICE:
            handle = word >> HANDLE_SHIFT
            if self.release_delay:
                # the file lets go now; the device gets the memory back later
                charge = self.pool.charge_of(handle)
                deadline = max(self._monotonic() + self.release_delay / 1000,
                               self._pending[-1][0] if self._pending else 0.0)
                self._pending.append((deadline, handle))
                self.pending_bytes += charge
            else:
                charge = self.pool.free(handle)
        elif kind == FALLBACK:
            self.fallback.free(word >> HANDLE_SHIFT)
        elif kind == PROMOTED:
            self.tier.pop((table, idx))
        elif kind == BACKED:
            assert self.free_block is not None, "a written-back page with no backing file"
            self.free_block(word >> HANDLE_SHIFT)
        elif kind == SAME and word & WIDE_WORD:
            self.words.free(word >> (HANDLE_SHIFT + 1))
        if self._marks:
            self._marks.pop((table, idx), None)
        table.clear(idx)
        self._pages[kind] -= 1
        if kind == DEVICE:
            extra = table.extra.pop(idx, 0) if table.extra else 0
            table.stored_pages -= 1
            table.physical_bytes -= charge + extra
            self.charged -= charge + extra
            self.extra -= extra
            if word & HUGE_BIT:
                self.huge_pages -= 1
        elif kind in (SAME, BACKED):
            table.stored_pages -= 1
        elif kind == PROMOTED:
            table.promoted_pages -= 1
        elif word == INJECTED_POISON:
            self.injected_poison -= 1
        return word

    # ------------------------------------------------------------ writeback marks

    def mark(self, table: PageTable, idx: int, block: int) -> None:
        """The slot's page is on its way to `block`; a release drops the mark."""
        self._marks[(table, idx)] = block

    def marked(self, table: PageTable, idx: int) -> int | None:
        return self._marks.get((table, idx)) if self._marks else None

    def unmark(self, table: PageTable, idx: int, block: int) -> bool:
        """Drop the slot's mark if it is still `block`'s; whether it was."""
        if self._marks.get((table, idx)) != block:
            return False
        del self._marks[(table, idx)]
        return True

    def unmark_range(self, table: PageTable, first: int, stop: int) -> None:
        """Drop the marks in [first, stop) that no release reached (a page staged
        into a hole marks a slot that holds no word)."""
        if self._marks:
            for key in [k for k in self._marks if k[0] is table and first <= k[1] < stop]:
                del self._marks[key]

    # ------------------------------------------------------------ the pool's memory

    def release_due(self, now: float) -> None:
        """Give back the freed objects whose release_delay has passed (all: inf)."""
        pending = self._pending
        while pending and pending[0][0] <= now:
            _, handle = pending.popleft()
            self.pending_bytes -= self.pool.free(handle)

    def shorten_delay(self, early: float) -> None:
        """A shorter release_delay applies to the frees already waiting too."""
        self._pending = collections.deque((t - early, h) for t, h in self._pending)

    def compact(self, tables: Iterable[PageTable]) -> int:
        """Have the pool move objects out of sparse zspages and rewrite the words
        (and delayed frees) naming them; return how many moved. No hook: the page
        stays where it was, only its address changes."""
        moves = self.pool.compact()
        if not moves:
            return 0
        if self._pending:
            self._pending = collections.deque((t, rebase(h, moves)) for t, h in self._pending)
        for table in tables:
            for idx, word in table.items():
                if word & KIND_MASK == DEVICE:
                    handle = word >> HANDLE_SHIFT
                    new = rebase(handle, moves)
                    if new != handle:
                        table.set(idx, new << HANDLE_SHIFT | word & LOW_BITS)
        return len(moves)

    def reset_peak(self) -> None:
        self.mem_used_max = self.pool.used_bytes + self.extra
