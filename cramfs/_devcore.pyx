# cython: language_level=3, boundscheck=True, wraparound=False, initializedcheck=True
# distutils: language = c++
"""The native engine's page transitions: device.py's hot paths, compiled.

`device.Device` is the reference: every page transition is decided there, in
Python. A device on the native engine is a `device.NativeDevice`, whose class
puts this `NativeCore` in front of `Device` in the method order. NativeCore
keeps the state those transitions touch in C fields (Device's code reaches
them as ordinary attributes) and re-implements only their common case:
installing and releasing a slot, a page stored far from capacity, a fault
promoting a page, a clean demotion, the usage check after each. Anything
else (write control near capacity, injected costs, wide same-filled words,
release_delay, level changes) is handed to the reference implementation
itself, through `super(NativeCore, self)`, so there is one definition of
every rule and this file only makes the frequent path cheaper.

tests/test_engine.py drives a Device and a NativeDevice with the same random
operations and demands equal results, counters, mm_stat and events.
"""

cimport cython
from libc.stdint cimport int64_t, uint32_t, uint64_t, uintptr_t
from libcpp.vector cimport vector
from cpython.ref cimport PyObject
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

cdef extern from "lz4.h" nogil:
    int LZ4_decompress_safe(const char *src, char *dst, int compressedSize, int dstCapacity)

from ._pagetable cimport NativeTable
from ._zspool cimport NativeClassPool, NativePool
from ._pagecodec cimport Lz4PageEncoder

from functools import partial

from .compressors import BY_ID
from .parallel import map_parts

DEF PAGE = 4096
DEF KIND_MASK = 7
DEF SAME = 1
DEF DEVICE = 2
DEF FALLBACK = 3
DEF PROMOTED = 4
DEF BACKED = 6
DEF ALGO_SHIFT = 3
DEF HUGE_BIT = 32
DEF HANDLE_SHIFT = 6
DEF WIDE_WORD = 64
DEF INJECTED_POISON = 13        # pack(POISONED, algo=1)
DEF DIRTY = -1
DEF NONE_ID = 2
DEF LZ4_ID = 0
DEF INLINE_LIMIT = 1 << 56

cdef uint64_t INLINE_MASK = (<uint64_t>1 << 57) - 1


cdef inline int fill_page(uint64_t word, char *dst) except -1:
    """Write a hole's or an inline same-filled page's bytes to dst; 1 if done, 0 for a
    word that needs more than the word itself (a wide same-filled word and every
    other kind)."""
    cdef uint64_t handle
    cdef int64_t value
    cdef int i
    if not word:
        memset(dst, 0, PAGE)
        return 1
    if (word & KIND_MASK) != SAME or word & WIDE_WORD:
        return 0
    handle = word >> HANDLE_SHIFT
    value = <int64_t>(handle >> 1)
    if value >= INLINE_LIMIT:                 # sign-extend the 57-bit form
        value -= <int64_t>1 << 57
    for i in range(PAGE // 8):
        memcpy(dst + 8 * i, &value, 8)        # little-endian, as the table's
    return 1


cdef inline int decode_kept(int algo, object blob, char *dst) except -1:
    """Write a promoted page's bytes to dst from what the DRAM tier keeps: the page
    itself (changed since, or stored whole) or its lz4 block; 0 for another algorithm
    (or anything but bytes)."""
    if type(blob) is not bytes:
        return 0
    cdef Py_ssize_t n = PyBytes_GET_SIZE(blob)
    if algo == DIRTY or algo == NONE_ID:
        if n != PAGE:
            raise ValueError(f"a promoted page of {n} bytes")
        memcpy(dst, PyBytes_AS_STRING(blob), PAGE)
        return 1
    if algo != LZ4_ID:
        return 0
    if LZ4_decompress_safe(PyBytes_AS_STRING(blob), dst, <int>n, PAGE) != PAGE:
        raise ValueError("a promoted page's lz4 block is damaged")
    return 1
cdef bytes ZERO_PAGE = bytes(PAGE)         # a fault's stand-in for bytes nobody reads
cdef object _DeviceError = None            # device.DeviceError, looked up on first use


# A device on the native engine has NativeTables, called here without Python; a table
# of any other kind still works, through its methods.
cdef inline uint64_t t_get(table, long long idx) except? 0:
    if type(table) is NativeTable:
        return (<NativeTable>table).get(idx)
    return table.get(idx)


cdef inline int t_set(table, long long idx, uint64_t word) except -1:
    if type(table) is NativeTable:
        (<NativeTable>table).set(idx, word)
    else:
        table.set(idx, word)
    return 0


cdef inline uint64_t t_clear(table, long long idx) except? 0:
    if type(table) is NativeTable:
        return (<NativeTable>table).clear(idx)
    return table.clear(idx)


cdef extern from *:
    """
    #include <vector>
    #include <cstdint>
    // The DRAM tier's index: a promoted page, named by its table's address and its
    // index, to the slot of its node. The node holds the table, so the address
    // cannot be reused while the entry exists.
    //
    // Open addressing with linear probing in one array, at most half full, and
    // deletion by backward shift (no tombstones): a lookup reads a cache line or
    // two, and promotion and demotion allocate nothing. (std::unordered_map
    // chased and allocated a node per entry: a tenth of a replay.) Every position
    // is masked to the array, whose accesses are bounds-checked in the ASan build.
    struct cram_tier_entry {
        uintptr_t table;     // 0: empty (no object lives at address 0)
        long long idx;
        uint32_t slot;
    };
    struct cram_tier_map {
        std::vector<cram_tier_entry> e;
        size_t n = 0;
        size_t size() const { return n; }
        void clear() { e.clear(); n = 0; }
    };
    static inline size_t cram_tier_hash(uintptr_t t, long long i) {
        uint64_t h = (uint64_t)t * 0x9E3779B97F4A7C15ULL ^ (uint64_t)i;
        h ^= h >> 31;
        h *= 0xBF58476D1CE4E5B9ULL;
        return (size_t)(h ^ (h >> 29));
    }
    // the position of (t, i) in e, or of the empty entry that ends its probe
    static inline size_t cram_tier_at(const std::vector<cram_tier_entry> &e, uintptr_t t,
                                      long long i) {
        size_t mask = e.size() - 1;
        size_t p = cram_tier_hash(t, i) & mask;
        while (e[p].table && !(e[p].table == t && e[p].idx == i))
            p = (p + 1) & mask;
        return p;
    }
    static inline size_t cram_tier_pos(const cram_tier_map &m, uintptr_t t, long long i) {
        return cram_tier_at(m.e, t, i);
    }
    static inline long long cram_tier_find(const cram_tier_map &m, uintptr_t t,
                                           long long i) {
        if (m.e.empty())
            return -1;
        const cram_tier_entry &x = m.e[cram_tier_pos(m, t, i)];
        return x.table ? (long long)x.slot : -1;
    }
    // twice the room; if the allocation fails (bad_alloc) the index is as it was
    static void cram_tier_grow(cram_tier_map &m) {
        std::vector<cram_tier_entry> bigger(m.e.empty() ? 64 : m.e.size() * 2,
                                            cram_tier_entry{0, 0, 0});
        for (const cram_tier_entry &x : m.e)
            if (x.table)
                bigger[cram_tier_at(bigger, x.table, x.idx)] = x;
        m.e.swap(bigger);
    }
    // insert (t, i) -> slot if absent and return -1; else return the slot it has
    static inline long long cram_tier_add(cram_tier_map &m, uintptr_t t, long long i,
                                          uint32_t slot) {
        if ((m.n + 1) * 2 > m.e.size())
            cram_tier_grow(m);
        cram_tier_entry &x = m.e[cram_tier_pos(m, t, i)];
        if (x.table)
            return (long long)x.slot;
        x = cram_tier_entry{t, i, slot};
        m.n++;
        return -1;
    }
    static inline long long cram_tier_take(cram_tier_map &m, uintptr_t t, long long i) {
        if (m.e.empty())
            return -1;
        size_t mask = m.e.size() - 1;
        size_t hole = cram_tier_pos(m, t, i);
        if (!m.e[hole].table)
            return -1;
        long long slot = m.e[hole].slot;
        // backward shift: move up each later entry of the run whose home is not
        // cyclically within (hole, q], so every probe still finds its key
        for (size_t q = (hole + 1) & mask; m.e[q].table; q = (q + 1) & mask) {
            size_t home = cram_tier_hash(m.e[q].table, m.e[q].idx) & mask;
            bool stays = hole < q ? (hole < home && home <= q) : (hole < home || home <= q);
            if (!stays) {
                m.e[hole] = m.e[q];
                hole = q;
            }
        }
        m.e[hole] = cram_tier_entry{0, 0, 0};
        m.n--;
        return slot;
    }
    """
    cppclass cram_tier_map:
        size_t size()
        void clear()
    long long cram_tier_find(const cram_tier_map &m, uintptr_t t, long long i)
    long long cram_tier_take(cram_tier_map &m, uintptr_t t, long long i)
    long long cram_tier_add(cram_tier_map &m, uintptr_t t, long long i,
                            uint32_t slot) except +


@cython.final
@cython.no_gc
cdef class _Node:
    # One promoted page in the LRU list (no cycle outlives an unlink, so no GC). What
    # the tier keeps for it is in typed fields, for the compiled paths to read with
    # no tuple made or taken apart; the Encoded tuple Python code gets is made when
    # it asks.
    cdef _Node prev
    cdef _Node next
    cdef object table
    cdef long long idx
    cdef uint32_t slot          # its place in NativeTier._slots
    cdef object word            # Encoded's fields: same-filled word (None here)
    cdef object blob            # the compressed form, or the page itself
    cdef int algo               # compressor id, or DIRTY
    cdef bint huge
    cdef object kept            # the tuple Python code gave or was given, if any

    cdef tuple encoded(self):
        if self.kept is None:
            self.kept = (self.word, self.blob, self.algo, self.huge)
        return self.kept


@cython.final
cdef class NativeTier:
    """tier.DramTier compiled: the same LRU order, as a doubly linked list of nodes
    found through a flat hash index keyed by (table, index). Every operation is O(1)
    with no iterator, no reordering of a hash table (OrderedDict's move_to_end and
    first-key lookup cost more than the page's own bookkeeping) and no key tuple
    to make, hash and compare (a dict keyed by tuples cost a tenth of a replay).
    The compiled paths use the c_ methods, on a page's fields; Python code the
    DramTier methods, on tuples. The nodes live in `_slots`, which owns them; the
    map only names their slots, so no pointer in it can outlive its object."""

    cdef cram_tier_map _index
    cdef list _slots            # node by slot; None in a free slot
    cdef vector[uint32_t] _free
    cdef _Node _head            # least recently used
    cdef _Node _tail            # most recently used

    def __init__(self):
        self._slots = []

    def __dealloc__(self):
        # break the links, which no GC would find
        cdef _Node n = self._head
        cdef _Node nxt
        while n is not None:
            nxt = n.next
            n.prev = n.next = None
            n = nxt

    def __len__(self):
        return self._index.size()

    cdef inline void _unlink(self, _Node n):
        if n.prev is None:
            self._head = n.next
        else:
            n.prev.next = n.next
        if n.next is None:
            self._tail = n.prev
        else:
            n.next.prev = n.prev
        n.prev = n.next = None

    cdef inline void _append(self, _Node n):
        n.prev = self._tail
        n.next = None
        if self._tail is None:
            self._head = n
        else:
            self._tail.next = n
        self._tail = n

    cdef inline _Node _find(self, table, long long idx):
        cdef long long slot = cram_tier_find(self._index, <uintptr_t><PyObject *>table, idx)
        return None if slot < 0 else <_Node?>self._slots[slot]

    cdef _Node _place(self, table, long long idx):
        """The node for (table, idx), made if new, as most recently used: one probe of
        the index either way (a promotion's page is rarely there already). Everything
        that can fail (the node, the slot list's room, the index's growth) happens
        before anything is changed for good, so a failure leaves the tier as it was:
        no index entry naming a slot that holds nothing."""
        cdef _Node n = _Node.__new__(_Node)
        cdef bint fresh = self._free.size() == 0
        cdef uint32_t slot
        cdef long long had
        if fresh:
            slot = len(self._slots)
            self._slots.append(None)          # the room first
        else:
            slot = self._free.back()
        try:
            had = cram_tier_add(self._index, <uintptr_t><PyObject *>table, idx, slot)
        except BaseException:
            if fresh:
                self._slots.pop()
            raise
        if had >= 0:
            if fresh:
                self._slots.pop()
            n = <_Node?>self._slots[had]
            self._unlink(n)
        else:
            n.table = table
            n.idx = idx
            n.slot = slot
            if not fresh:
                self._free.pop_back()
            self._slots[slot] = n
        self._append(n)
        return n

    cdef _Node _take(self, table, long long idx):
        """Remove a page's node and return it (KeyError if not promoted)."""
        cdef long long slot = cram_tier_take(self._index, <uintptr_t><PyObject *>table, idx)
        if slot < 0:
            raise KeyError((table, idx))
        cdef _Node n = <_Node?>self._slots[slot]
        self._slots[slot] = None
        self._free.push_back(<uint32_t>slot)
        self._unlink(n)
        return n

    cdef int c_put(self, table, long long idx, bytes blob, int algo, bint huge) except -1:
        cdef _Node n = self._place(table, idx)
        n.word, n.blob, n.algo, n.huge, n.kept = None, blob, algo, huge, None
        return 0

    cdef _Node c_peek(self, table, long long idx):
        cdef _Node n = self._find(table, idx)
        if n is None:
            raise KeyError((table, idx))
        return n

    cdef _Node c_get(self, table, long long idx):
        """A page's node, marked most recently used (KeyError if not promoted)."""
        cdef _Node n = self.c_peek(table, idx)
        if n is not self._tail:
            self._unlink(n)
            self._append(n)
        return n

    cdef int c_pop(self, table, long long idx) except -1:
        self._take(table, idx)
        return 0

    cdef inline _Node c_oldest(self):
        return self._head

    cpdef put(self, key, data):
        """Insert as most recently used. `data` is taken apart first: one that is not an
        Encoded raises with the tier unchanged."""
        table, idx = key
        word, blob, algo, huge = data
        cdef int c_algo = algo
        cdef bint c_huge = huge
        cdef _Node n = self._place(table, idx)
        n.word, n.blob, n.algo, n.huge = word, blob, c_algo, c_huge
        n.kept = data

    cpdef get(self, key):
        """Return the page and mark it most recently used."""
        table, idx = key
        return self.c_get(table, idx).encoded()

    cpdef peek(self, key):
        table, idx = key
        return self.c_peek(table, idx).encoded()

    cpdef pop(self, key):
        table, idx = key
        return self._take(table, idx).encoded()

    cpdef oldest(self):
        """The least recently used key, or None when empty."""
        return None if self._head is None else (self._head.table, self._head.idx)


cdef class NativeCore:
    # what the transitions read and write on every page, as C fields
    cdef object _pool
    cdef NativePool _npool              # the pool when it is the compiled one: C calls
    cdef object _fallback
    cdef NativeClassPool _nfallback     # the fallback pool when compiled: C calls
    cdef public object tier
    cdef public object words
    cdef public object counters
    cdef public object config
    cdef public list pages
    cdef public long long huge_pages
    cdef public long long charged
    cdef public long long _extra
    cdef public long long injected_poison
    cdef public long long mem_used_max
    cdef public long long pending_bytes
    cdef public object _pending
    cdef public bint tracking
    cdef public double inflate
    cdef public double _quiet_low
    cdef public double _quiet_high
    cdef public object _easy_below
    cdef public bint _refuse_to_host
    cdef public int _algo
    cdef public bint _zswap
    cdef public bint _promote
    cdef public long long _tier_budget
    cdef public long long _release_delay
    cdef public long long _comp_threads
    cdef public bint _direct_dram
    cdef public bint _wb_busy           # pages under writeback: releases go to Device
    cdef public object _encode
    # everything else Device keeps stays an ordinary attribute, in NativeDevice's __dict__

    @property
    def pool(self):
        return self._pool

    @property
    def fallback(self):
        return self._fallback

    @fallback.setter
    def fallback(self, value):
        self._fallback = value
        self._nfallback = value if type(value) is NativeClassPool else None

    @pool.setter
    def pool(self, value):
        self._pool = value
        self._npool = value if type(value) is NativePool else None

    cdef inline long long _used(self) except -1:
        """pool.used_bytes, read from C where it can be."""
        if self._npool is not None:
            return self._npool.used_bytes
        return self._pool.used_bytes

    cdef inline int _pool_free(self, uint64_t handle) except -1:
        if self._npool is not None:
            return self._npool.free(handle)
        return self._pool.free(handle)

    # ------------------------------------------------------------ slots

    cpdef _install(self, table, long long idx, uint64_t word, long long charge=0,
                   long long extra=0):
        cdef int kind = word & KIND_MASK
        cdef NativeTable nt = table if type(table) is NativeTable else None
        t_set(table, idx, word)
        self.pages[kind] += 1
        if kind == DEVICE:
            if nt is not None:
                nt.stored_pages += 1
                nt.physical_bytes += charge + extra
            else:
                table.stored_pages += 1
                table.physical_bytes += charge + extra
            self.charged += charge + extra
            if self.tracking:
                table.renew(idx, self._now())
            if extra:
                table.extra[idx] = extra
                self._extra += extra
            if word & HUGE_BIT:
                self.huge_pages += 1
                self.counters.huge_pages_since += 1
        elif kind == SAME:
            table.stored_pages += 1
        elif kind == PROMOTED:
            if nt is not None:
                nt.promoted_pages += 1
            else:
                table.promoted_pages += 1
        elif kind == BACKED:
            table.stored_pages += 1
        elif word == INJECTED_POISON:
            self.injected_poison += 1

    cpdef uint64_t _release(self, table, long long idx) except? 0:
        """Make a slot a hole and free whatever it held; return the old word."""
        cdef uint64_t word
        cdef int kind
        cdef long long charge, extra
        if self._release_delay or self._wb_busy:
            return super(NativeCore, self)._release(table, idx)
        cdef NativeTable nt = table if type(table) is NativeTable else None
        word = t_clear(table, idx)
        if not word:
            return 0
        kind = word & KIND_MASK
        self.pages[kind] -= 1
        if kind == DEVICE:
            charge = self._pool_free(word >> HANDLE_SHIFT)
            if nt is not None:
                extra = nt.extra.pop(idx, 0) if nt.extra else 0
            else:
                extra = table.extra.pop(idx, 0) if table.extra else 0
            if nt is not None:
                nt.stored_pages -= 1
                nt.physical_bytes -= charge + extra
            else:
                table.stored_pages -= 1
                table.physical_bytes -= charge + extra
            self.charged -= charge + extra
            self._extra -= extra
            if word & HUGE_BIT:
                self.huge_pages -= 1
        elif kind == SAME:
            table.stored_pages -= 1
            if word & WIDE_WORD:
                self.words.free(word >> (HANDLE_SHIFT + 1))
        elif kind == FALLBACK:
            if self._nfallback is not None:
                self._nfallback.free(word >> HANDLE_SHIFT)
            else:
                self._fallback.free(word >> HANDLE_SHIFT)
        elif kind == PROMOTED:
            if type(self.tier) is NativeTier:
                (<NativeTier>self.tier).c_pop(table, idx)
            else:
                self.tier.pop((table, idx))
            if nt is not None:
                nt.promoted_pages -= 1
            else:
                table.promoted_pages -= 1
        elif kind == BACKED:
            self._backed_released(table, word)
        elif word == INJECTED_POISON:
            self.injected_poison -= 1
        return word

    cpdef _refresh(self, bint overflowed=False, bint settings=False):
        cdef long long used
        if self._pending:
            return super(NativeCore, self)._refresh(overflowed, settings)
        used = self._used() + self._extra
        if used > self.mem_used_max:
            self.mem_used_max = used
        if not (overflowed or settings) and self._quiet_low <= used < self._quiet_high:
            return
        return super(NativeCore, self)._refresh(overflowed, settings)

    # ------------------------------------------------------------ page paths

    cpdef bint _store(self, table, long long idx, tuple enc, bint demoting,
                      bint force=False) except -1:
        cdef object word = enc[0]
        cdef bytes blob
        cdef uint64_t old
        cdef int64_t value
        cdef uint64_t handle
        cdef long long charge
        if word is not None:
            if type(word) is not bytes or PyBytes_GET_SIZE(word) != 8:
                return super(NativeCore, self)._store(table, idx, enc, demoting, force)
            memcpy(&value, PyBytes_AS_STRING(word), 8)       # little-endian, as the table's
            if not -INLINE_LIMIT <= value < INLINE_LIMIT:
                return super(NativeCore, self)._store(table, idx, enc, demoting, force)
            old = self._release(table, idx)
            if value == 0 and (old & KIND_MASK) in (DEVICE, FALLBACK, PROMOTED):
                self.counters.zero_released_pages += 1
            self._install(table, idx, (((<uint64_t>value & INLINE_MASK) << 1) << HANDLE_SHIFT)
                          | SAME)
            self._refresh()
            return True
        return self._store_blob(table, idx, enc[1], enc[2], enc[3], demoting, force, enc)

    cdef bint _store_blob(self, table, long long idx, bytes blob, int algo, bint huge,
                          bint demoting, bint force, tuple enc) except -1:
        """_store of a compressed page, its Encoded's fields apart (`enc` is the tuple,
        or None where no one made it: made here only for Device's path)."""
        cdef uint64_t handle
        cdef long long charge
        if self.inflate != 1 or (self._used() + self._extra > self._easy_below
                                 and not force):
            if self._refuse_to_host and not force and self._to_host(table, idx, blob, algo,
                                                                    huge):
                return True
            if enc is None:
                enc = (None, blob, algo, huge)
            return super(NativeCore, self)._store(table, idx, enc, demoting, force)
        self._release(table, idx)
        if self._npool is not None:
            handle = self._npool.put(blob)
            charge = self._npool.charge(PyBytes_GET_SIZE(blob))
        else:
            handle = self._pool.put(blob)
            charge = self._pool.charge(len(blob))
        self._install(table, idx, handle << HANDLE_SHIFT
                      | (HUGE_BIT if huge else 0) | <uint64_t>algo << ALGO_SHIFT | DEVICE,
                      charge, 0)
        self._refresh()
        return True

    cdef bint _to_host(self, table, long long idx, bytes blob, int algo,
                       bint huge) except -1:
        """Device._screen's refusal into host memory (fallback=host, write control at
        critical, no reclaim), compiled: a device under pressure takes this for every
        page. False where the fallback pool is full: Device says why."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(blob)
        cdef NativeClassPool fallback = self._nfallback
        if fallback is None or (fallback.used_bytes + fallback.charge(size)
                                > self.config.fallback_limit):
            return False
        self.counters.reject_write_control += 1
        self.events.add("refused", partial(self._refused_to_host, table, idx, size),
                        ratelimit=True)
        self._release(table, idx)
        self._install(table, idx, <uint64_t>fallback.put(blob) << HANDLE_SHIFT
                      | (HUGE_BIT if huge else 0) | <uint64_t>algo << ALGO_SHIFT | FALLBACK)
        self._refresh()
        return True

    cpdef _write_page(self, table, long long idx, object page, object enc=None,
                      bint force=False):
        cdef int algo = 0
        cdef bint huge = False
        cdef bytes blob
        if self._direct_dram:
            return super(NativeCore, self)._write_page(table, idx, page, enc, force)
        if enc is None and type(self._encode) is Lz4PageEncoder and type(page) is bytes:
            # the swap path: the page encoded and stored with no tuple between
            blob = (<Lz4PageEncoder>self._encode).c_encode(page, &algo, &huge)
            if blob is not None:
                self._store_blob(table, idx, blob, algo, huge, False, force, None)
                return
        self._store(table, idx, enc or self._encode(page), False, force)

    cpdef bint _demote_one(self) except -1:
        cdef _Node n
        tier = self.tier
        if type(tier) is NativeTier:
            n = (<NativeTier>tier).c_oldest()
            if n is None:
                return False
            if n.word is None and type(n.blob) is bytes and (n.algo == self._algo
                                                             or n.algo == NONE_ID):
                # a clean page: its compressed form goes back as it is
                if not self._store_blob(n.table, n.idx, n.blob, n.algo, n.huge, True, False,
                                        n.kept):
                    return False
                self.counters.demotions += 1
                return True
            key = (n.table, n.idx)
        else:
            key = tier.oldest()
            if key is None:
                return False
        table, idx = key
        kept = tier.peek(key)
        algo = kept[2]
        if algo == DIRTY:
            kept = self._encode(kept[1])
        elif algo != self._algo and algo != NONE_ID:
            kept = self._encode(BY_ID[algo].decompress(kept[1]))   # the compressor changed
        if not self._store(table, idx, kept, True):
            return False
        self.counters.demotions += 1
        return True

    cpdef bint _tier_room(self) except -1:
        tier = self.tier
        while len(tier) >= self._tier_budget:
            if not self._demote_one():
                return False
        return True

    cdef int _promote_blob(self, table, long long idx, bytes blob, int algo,
                           bint huge) except -1:
        """_to_dram of a page just released from the device, its fields apart."""
        if type(self.tier) is NativeTier:
            (<NativeTier>self.tier).c_put(table, idx, blob, algo, huge)
            self._install(table, idx, PROMOTED)
            self._refresh()
        else:
            self._to_dram(table, idx, (None, blob, algo, huge))
        return 0

    cpdef _to_dram(self, table, long long idx, tuple kept):
        if type(self.tier) is NativeTier:
            (<NativeTier>self.tier).put((table, idx), kept)
        else:
            self.tier.put((table, idx), kept)
        self._install(table, idx, PROMOTED)
        self._refresh()

    cpdef bytes _peek(self, table, long long idx, bint touch=False):
        """Device._peek for a hole, an inline same-filled page and a promoted page
        kept as lz4 or whole; the rest is Device's."""
        cdef uint64_t word = t_get(table, idx)
        cdef bytes page
        cdef _Node n
        if not word:
            return ZERO_PAGE
        if (word & KIND_MASK) == PROMOTED and type(self.tier) is NativeTier:
            tier = <NativeTier>self.tier
            n = tier.c_get(table, idx) if touch else tier.c_peek(table, idx)
            page = PyBytes_FromStringAndSize(NULL, PAGE)
            if decode_kept(n.algo, n.blob, PyBytes_AS_STRING(page)):
                return page
        elif (word & KIND_MASK) == SAME:
            page = PyBytes_FromStringAndSize(NULL, PAGE)
            if fill_page(word, PyBytes_AS_STRING(page)):
                return page
        return super(NativeCore, self)._peek(table, idx, touch)

    cpdef bytes _read_page(self, table, long long idx, object data=None):
        """Serve one page; `data` is its decompressed content if already known."""
        cdef uint64_t word = t_get(table, idx)
        cdef int kind = word & KIND_MASK
        cdef int algo
        cdef bint promote
        cdef bytes blob
        if kind == BACKED:
            return super(NativeCore, self)._read_page(table, idx, data)
        if kind != DEVICE and kind != FALLBACK:
            return self._peek(table, idx, True)
        promote = self._promote
        algo = word >> ALGO_SHIFT & 3
        # one copy out of the pool serves both the decompression and the promotion
        blob = b""
        if data is None or promote:
            if kind == DEVICE and self._npool is not None:
                blob = self._npool.get(word >> HANDLE_SHIFT)
            elif kind == FALLBACK and self._nfallback is not None:
                blob = self._nfallback.get(word >> HANDLE_SHIFT)
            else:
                blob = (self._pool if kind == DEVICE else self._fallback).get(word >> HANDLE_SHIFT)
        if data is None:
            data = BY_ID[algo].decompress(blob)
        if self.tracking:
            table.touch(idx, self._now())
        if self._zswap:
            # Every access faults; the page goes back to DRAM and the compressed
            # copy is released (zswap loads are exclusive).
            self.counters.faults += 1
            if promote:
                if self._tier_room():
                    self._release(table, idx)
                    self._promote_blob(table, idx, blob, algo, word & HUGE_BIT != 0)
                    self.counters.promotions += 1
                else:
                    self.counters.promotions_skipped += 1
        return data

    cdef int _read_into(self, table, long long idx, char *dst) except -1:
        """_read_page for one page of a larger read, decoded straight into the request's
        buffer: an lz4 or whole page on the device goes from the pool to `dst` with no
        page object and no join; every other page takes _read_page as it is. The
        transitions after the decoding (ages, the fault, the promotion) are
        _read_page's own, told the data is known."""
        cdef uint64_t word = t_get(table, idx)
        cdef int algo = word >> ALGO_SHIFT & 3
        cdef bytes blob, page
        cdef _Node node
        cdef const char *src
        cdef Py_ssize_t n
        if fill_page(word, dst):
            return 0
        if (word & KIND_MASK) == PROMOTED and type(self.tier) is NativeTier:
            node = (<NativeTier>self.tier).c_get(table, idx)
            if decode_kept(node.algo, node.blob, dst):
                return 0
        if (word & KIND_MASK) != DEVICE or (algo != LZ4_ID and algo != NONE_ID):
            page = self._read_page(table, idx)
            if PyBytes_GET_SIZE(page) != PAGE:
                raise ValueError(f"page {idx}: {PyBytes_GET_SIZE(page)} bytes")
            memcpy(dst, PyBytes_AS_STRING(page), PAGE)
            return 0
        if self._npool is not None:
            # decoded in place: nothing between here and the decoding touches the pool
            src = self._npool.view(word >> HANDLE_SHIFT, &n)
        else:
            blob = self._pool.get(word >> HANDLE_SHIFT)
            src, n = PyBytes_AS_STRING(blob), PyBytes_GET_SIZE(blob)
        if algo == NONE_ID:
            if n != PAGE:
                raise ValueError(f"page {idx}: a whole page of {n} bytes")
            memcpy(dst, src, PAGE)
        elif LZ4_decompress_safe(src, dst, <int>n, PAGE) != PAGE:
            raise ValueError(f"page {idx}: damaged lz4 block")
        self._read_page(table, idx, ZERO_PAGE)
        return 0

    # ------------------------------------------------------------ requests

    cpdef bytes read(self, table, long long off, long long size):
        """Device.read; a read of several pages is decoded into one buffer."""
        cdef long long first = off // PAGE, start = off % PAGE
        cdef long long count = (off + size - 1) // PAGE - first + 1
        cdef long long k
        cdef bytes page
        # (comp_threads is not used here: decoding straight into the reply beats
        # decoding in threads page by page, each taking the GIL back for its bytes)
        if off < 0 or size <= 0:
            return super(NativeCore, self).read(table, off, size)
        self.counters.reads += count
        if count == 1:
            page = self._read_page(table, first)
            return page if size == PAGE else page[start:start + size]
        data = PyBytes_FromStringAndSize(NULL, count * PAGE)
        for k in range(count):
            self._read_into(table, first + k, PyBytes_AS_STRING(data) + k * PAGE)
        return data if start == 0 and size == count * PAGE else data[start:start + size]

    cpdef long long write_encoded(self, table, long long off, list encoded,
                                  object page_of) except -1:
        """Device.write_encoded, its loop compiled (a replay's writes)."""
        if off < 0 or off % PAGE or self._direct_dram:
            return super(NativeCore, self).write_encoded(table, off, encoded, page_of)
        return self._store_pages(table, off // PAGE, encoded)

    cdef long long _store_pages(self, table, long long first, list encoded) except -1:
        """Device.write's whole-page loop over pages already encoded, off the DRAM path
        (where a page is only its encoding): a refusal after some pages is a short
        count, of the first page an error."""
        cdef long long k
        global _DeviceError
        if _DeviceError is None:
            from .device import DeviceError
            _DeviceError = DeviceError
        for k in range(len(encoded)):
            self.counters.writes += 1
            try:
                self._store(table, first + k, encoded[k], False)
            except _DeviceError:
                if k:
                    return k * PAGE
                raise
        return len(encoded) * PAGE

    cpdef long long fault(self, table, long long off, long long size) except -1:
        """Device.fault, its loop compiled: a replay's reads, without their bytes."""
        cdef long long first = off // PAGE, last = (off + size - 1) // PAGE, idx
        cdef uint64_t word
        cdef int kind
        cdef bint native_tier = type(self.tier) is NativeTier
        if off < 0 or size <= 0:
            return super(NativeCore, self).fault(table, off, size)
        self.counters.reads += last - first + 1
        for idx in range(first, last + 1):
            word = t_get(table, idx)
            kind = word & KIND_MASK
            # what _read_page does to a hole, a same-filled page and a promoted one is
            # only to decode it (and touch the promoted one): nothing a fault needs
            if not word or kind == SAME:
                continue
            if kind == PROMOTED and native_tier:
                (<NativeTier>self.tier).c_get(table, idx)
                continue
            self._read_page(table, idx, ZERO_PAGE)
        return size

    cpdef long long write(self, table, long long off, object data) except -1:
        """Device.write's one-page case (the swap path) and its whole-page case when the
        request encoder applies, compiled; the rest is Device.write."""
        cdef Py_ssize_t n = len(data)
        if off < 0 or off % PAGE:
            return super(NativeCore, self).write(table, off, data)
        if n == PAGE:
            self.counters.writes += 1
            self._write_page(table, off // PAGE, data)
            return PAGE
        encode = self._encode_request
        if n % PAGE or self._direct_dram or encode is None or type(data) is not bytes:
            return super(NativeCore, self).write(table, off, data)
        # the whole request encoded at once, never sliced into page objects
        return self._store_pages(table, off // PAGE,
                                 map_parts(partial(encode, data), n // PAGE, self._comp_threads))


def _constants():
    """The page-table word's layout and ids as this module was compiled with them: engine.py
    checks them against pagetable.py, device.py and compressors.py at import, so the two
    engines can never silently disagree on a bit."""
    return {"PAGE": PAGE, "KIND_MASK": KIND_MASK, "SAME": SAME, "DEVICE": DEVICE,
            "FALLBACK": FALLBACK, "PROMOTED": PROMOTED, "BACKED": BACKED,
            "ALGO_SHIFT": ALGO_SHIFT, "HUGE_BIT": HUGE_BIT, "HANDLE_SHIFT": HANDLE_SHIFT,
            "WIDE_WORD": WIDE_WORD, "INJECTED_POISON": INJECTED_POISON, "DIRTY": DIRTY,
            "NONE_ID": NONE_ID, "LZ4_ID": LZ4_ID, "INLINE_LIMIT": INLINE_LIMIT}
