# cython: language_level=3, boundscheck=True, wraparound=False, initializedcheck=True
# distutils: language = c++
"""device/slots.py's SlotStore compiled: the only native code that writes a table word.

The same interface, the same order of every allocation and free, the same counts
(tests/test_slotstore.py holds the two to identical words, handles and counts,
step by step). Its tables are NativeTables, its pools NativePool and
NativeClassPool, its tier a NativeTier: all called from C. The compiled page
paths (_devpaths.pyx) use the c_ methods, on a page's fields; everyone else the
Python methods, which are the reference's.
"""

cimport cython
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

from ._dramtier cimport NativeTier, _Node
from ._pagetable cimport NativeTable
from ._zspool cimport NativeClassPool, NativePool

import collections

from .compressors import BY_ID
from .pagetable import WordStore, same_handle, same_word_of
from .pool import rebase as _rebase

include "_slotword.pxi"

cdef uint64_t INLINE_MASK = (<uint64_t>1 << 57) - 1
cdef bytes ZERO_PAGE = bytes(PAGE)


@cython.final
cdef class NativeSlotStore:
    """The slot store, compiled (see device/slots.py for what it is responsible for)."""

    def __init__(self, NativePool pool not None, NativeClassPool fallback not None,
                 NativeTier tier not None, counters, monotonic, now):
        self.pool = pool
        self.fallback = fallback
        self.ntier = tier
        self.words = WordStore()
        self.counters = counters
        self._monotonic = monotonic
        self._now = now
        self.deferred = collections.deque()
        self._marks = {}
        self.cause = "write"

    # ------------------------------------------------------------ reading

    @property
    def tier(self):
        return self.ntier

    @tier.setter
    def tier(self, NativeTier value not None):
        self.ntier = value

    @property
    def pages(self):
        return [self._pages[k] for k in range(KINDS)]

    @property
    def used(self):
        return self.c_used()

    cdef long long c_used(self):
        return self.pool.used_bytes + self.extra

    @property
    def pending(self):
        return len(self.deferred)

    @property
    def marks(self):
        return self._marks

    @property
    def busy(self):
        return bool(self._marks)

    def blob(self, uint64_t word):
        if (word & KIND_MASK) == DEVICE:
            return self.pool.get(word >> HANDLE_SHIFT)
        return self.fallback.get(word >> HANDLE_SHIFT)

    def decode(self, uint64_t word):
        return BY_ID[word >> ALGO_SHIFT & 3].decompress(self.blob(word))

    def peek(self, NativeTable table not None, long long idx, bint touch=False):
        cdef uint64_t word = table.get(idx)
        cdef int kind = word & KIND_MASK
        if not word:
            return ZERO_PAGE
        if kind == SAME:
            handle = word >> HANDLE_SHIFT
            return same_word_of(handle, self.words) * (PAGE // 8) if handle else ZERO_PAGE
        if kind == PROMOTED:
            _, blob, algo, _ = self.kept(table, idx, touch)
            return blob if algo == DIRTY else BY_ID[algo].decompress(blob)
        if kind == DEVICE or kind == FALLBACK:
            return self.decode(word)
        return None

    def kept(self, NativeTable table not None, long long idx, bint touch=False):
        cdef _Node n = self.ntier.c_get(table, idx) if touch else self.ntier.c_peek(table, idx)
        return n.encoded()

    def oldest(self):
        return self.ntier.oldest()

    def promoted(self):
        return len(self.ntier)

    # ------------------------------------------------------------ transitions

    def release(self, NativeTable table not None, long long idx):
        """Make a slot a hole and free what it held; return the old word."""
        cdef uint64_t old = self.c_clear(table, idx)
        if old and self.hook is not None:
            self.hook(table, idx, old, 0, self.cause)
        return old

    def store_same(self, NativeTable table not None, long long idx, bytes word):
        cdef uint64_t old = self.c_clear(table, idx)
        self.c_install(table, idx, old, <uint64_t>same_handle(word, self.words) << HANDLE_SHIFT
                       | SAME, 0, 0)
        return old

    def store_device(self, NativeTable table not None, long long idx, bytes blob, int algo,
                     bint huge, long long extra=0):
        cdef uint64_t old = self.c_clear(table, idx)
        cdef uint64_t handle = self.pool.put(blob)
        self.c_install(table, idx, old, handle << HANDLE_SHIFT | (HUGE_BIT if huge else 0)
                       | <uint64_t>algo << ALGO_SHIFT | DEVICE,
                       self.pool.charge(len(blob)), extra)
        return old

    def store_fallback(self, NativeTable table not None, long long idx, bytes blob, int algo,
                       bint huge):
        return self.c_store_fallback(table, idx, blob, algo, huge)

    def store_promoted(self, NativeTable table not None, long long idx, tuple kept):
        cdef uint64_t old = self.c_clear(table, idx)
        self.ntier.put((table, idx), kept)
        self.c_install(table, idx, old, PROMOTED, 0, 0)
        return old

    def store_backed(self, NativeTable table not None, long long idx, uint64_t block):
        cdef uint64_t old = self.c_clear(table, idx)
        self.c_install(table, idx, old, block << HANDLE_SHIFT | BACKED, 0, 0)
        return old

    def store_poison(self, NativeTable table not None, long long idx, bint injected):
        cdef uint64_t old = self.c_clear(table, idx)
        self.c_install(table, idx, old, INJECTED_POISON if injected else POISONED, 0, 0)
        return old

    def keep(self, NativeTable table not None, long long idx, tuple kept):
        self.ntier.put((table, idx), kept)

    def note(self, NativeTable table not None, long long idx, what):
        cdef uint64_t word
        if self.hook is not None:
            word = table.get(idx)
            self.hook(table, idx, word, word, what)

    # the compiled paths' transitions, on a page's fields

    cdef uint64_t c_store_device(self, NativeTable table, long long idx, bytes blob, int algo,
                                 bint huge) except? 0:
        """store_device with no injected extra."""
        cdef uint64_t old = self.c_clear(table, idx)
        cdef uint64_t handle = self.pool.put(blob)
        self.c_install(table, idx, old, handle << HANDLE_SHIFT | (HUGE_BIT if huge else 0)
                       | <uint64_t>algo << ALGO_SHIFT | DEVICE,
                       self.pool.charge(len(blob)), 0)
        return old

    cdef uint64_t c_store_inline(self, NativeTable table, long long idx,
                                 uint64_t handle) except? 0:
        """store_same of a word that fits in the table word (`handle`: its bits)."""
        cdef uint64_t old = self.c_clear(table, idx)
        self.c_install(table, idx, old, handle << HANDLE_SHIFT | SAME, 0, 0)
        return old

    cdef uint64_t c_store_fallback(self, NativeTable table, long long idx, bytes blob,
                                   int algo, bint huge) except? 0:
        cdef uint64_t old = self.c_clear(table, idx)
        cdef uint64_t handle = <uint64_t>self.fallback.put(blob)
        self.c_install(table, idx, old, handle << HANDLE_SHIFT | (HUGE_BIT if huge else 0)
                       | <uint64_t>algo << ALGO_SHIFT | FALLBACK, 0, 0)
        return old

    cdef uint64_t c_promote(self, NativeTable table, long long idx, bytes blob, int algo,
                            bint huge) except? 0:
        """store_promoted of a page just read, its kept form's fields apart."""
        cdef uint64_t old = self.c_clear(table, idx)
        self.ntier.c_put(table, idx, blob, algo, huge)
        self.c_install(table, idx, old, PROMOTED, 0, 0)
        return old

    cdef int c_install(self, NativeTable table, long long idx, uint64_t old, uint64_t word,
                       long long charge, long long extra) except -1:
        cdef int kind = word & KIND_MASK
        table.set(idx, word)
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
        elif kind == SAME or kind == BACKED:
            table.stored_pages += 1
        elif kind == PROMOTED:
            table.promoted_pages += 1
        elif word == INJECTED_POISON:
            self.injected_poison += 1
        if self.hook is not None:
            self.hook(table, idx, old, word, self.cause)
        return 0

    cdef uint64_t c_clear(self, NativeTable table, long long idx) except? 0:
        """release() without the hook: the object is freed first (a stale handle
        raises with nothing changed), then the word and the counts."""
        cdef uint64_t word = table.get(idx)
        cdef int kind
        cdef long long charge = 0, extra
        cdef double deadline
        if not word:
            if self._marks:
                self._marks.pop((table, idx), None)
            return 0
        kind = word & KIND_MASK
        if kind >= KINDS:
            raise ValueError(f"slot {idx}: a word of no known kind ({word:#x})")
        if kind == DEVICE:
            if self.release_delay:
                # the file lets go now; the device gets the memory back later
                charge = self.pool.charge_of(word >> HANDLE_SHIFT)
                deadline = max(self._monotonic() + self.release_delay / 1000, 0.0)
                if self.deferred:       # (wraparound=False: no [-1] here)
                    deadline = max(deadline, self.deferred[len(self.deferred) - 1][0])
                self.deferred.append((deadline, word >> HANDLE_SHIFT))
                self.pending_bytes += charge
            else:
                charge = self.pool.free(word >> HANDLE_SHIFT)
        elif kind == FALLBACK:
            self.fallback.free(word >> HANDLE_SHIFT)
        elif kind == PROMOTED:
            self.ntier.c_pop(table, idx)
        elif kind == BACKED:
            if self.free_block is None:
                raise AssertionError("a written-back page with no backing file")
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
        elif kind == SAME or kind == BACKED:
            table.stored_pages -= 1
        elif kind == PROMOTED:
            table.promoted_pages -= 1
        elif word == INJECTED_POISON:
            self.injected_poison -= 1
        return word

    # ------------------------------------------------------------ writeback marks

    def mark(self, NativeTable table not None, long long idx, long long block):
        self._marks[(table, idx)] = block

    def marked(self, NativeTable table not None, long long idx):
        return self._marks.get((table, idx)) if self._marks else None

    def unmark(self, NativeTable table not None, long long idx, long long block):
        if self._marks.get((table, idx)) != block:
            return False
        del self._marks[(table, idx)]
        return True

    def unmark_range(self, NativeTable table not None, long long first, long long stop):
        if self._marks:
            for key in [k for k in self._marks if k[0] is table and first <= k[1] < stop]:
                del self._marks[key]

    # ------------------------------------------------------------ the pool's memory

    def release_due(self, double now):
        pending = self.deferred
        while pending and pending[0][0] <= now:
            _, handle = pending.popleft()
            self.pending_bytes -= self.pool.free(handle)

    def shorten_delay(self, double early):
        self.deferred = collections.deque((t - early, h) for t, h in self.deferred)

    def compact(self, tables):
        cdef dict moves = self.pool.compact()
        cdef NativeTable table
        cdef uint64_t word, handle, new
        if not moves:
            return 0
        if self.deferred:
            self.deferred = collections.deque((t, _rebase(h, moves)) for t, h in self.deferred)
        for table in tables:
            if table is None:
                raise TypeError("compact() needs the device's tables, not None")
            for idx, word in table.items():
                if (word & KIND_MASK) == DEVICE:
                    handle = word >> HANDLE_SHIFT
                    new = _rebase(handle, moves)
                    if new != handle:
                        table.set(idx, new << HANDLE_SHIFT | word & ((<uint64_t>1 << HANDLE_SHIFT) - 1))
        return len(moves)

    def reset_peak(self):
        self.mem_used_max = self.pool.used_bytes + self.extra
