# cython: language_level=3, boundscheck=True, wraparound=False, initializedcheck=True
# distutils: language = c++
"""tier.DramTier compiled: the DRAM tier's promoted pages in LRU order.

The native slot store keeps its promoted pages here, and the compiled page paths
read a page's kept form from a node's typed fields, with no tuple made.
"""

cimport cython
from libc.stdint cimport uint32_t, uintptr_t
from cpython.ref cimport PyObject

@cython.final
@cython.no_gc
cdef class _Node:
    # One promoted page in the LRU list (no cycle outlives an unlink, so no GC). What
    # the tier keeps for it is in typed fields (_dramtier.pxd), for the compiled paths
    # to read with no tuple made or taken apart; the Encoded tuple Python code gets is
    # made when it asks.

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

    cdef void _unlink(self, _Node n):
        if n.prev is None:
            self._head = n.next
        else:
            n.prev.next = n.next
        if n.next is None:
            self._tail = n.prev
        else:
            n.next.prev = n.prev
        n.prev = n.next = None

    cdef void _append(self, _Node n):
        n.prev = self._tail
        n.next = None
        if self._tail is None:
            self._head = n
        else:
            self._tail.next = n
        self._tail = n

    cdef _Node _find(self, table, long long idx):
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

    cdef _Node c_oldest(self):
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


