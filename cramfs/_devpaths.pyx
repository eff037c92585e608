# cython: language_level=3, boundscheck=True, wraparound=False, initializedcheck=True
# distutils: language = c++
"""device/paths.py's page paths, their common case compiled.

`NativePaths` keeps PagePaths' interface. It runs, in C, the cases a device
meets on nearly every request: a page stored far from capacity, a page read in
place or promoted, a clean demotion, a page refused into host memory under
pressure, a read of many pages decoded into one buffer. Every other case it
hands, whole, to the device's reference `PagePaths` (`self.ref`), so each rule
is written once, in Python. It changes slots only through the compiled slot
store's c_ methods, and reads the device's policy (its derived settings) through
`configure()`, called whenever they change.

tests/test_engine.py drives a python and a native device with the same random
operations and every setting that changes a path, and demands equal results,
counters, mm_stat and events.
"""

cimport cython
from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE

cdef extern from "lz4.h" nogil:
    int LZ4_decompress_safe(const char *src, char *dst, int compressedSize, int dstCapacity)

from ._dramtier cimport NativeTier, _Node
from ._pagetable cimport NativeTable
from ._pagecodec cimport Lz4PageEncoder
from ._slotstore cimport NativeSlotStore
from ._zspool cimport NativePool

from functools import partial

from . import parallel
from .compressors import BY_ID

include "_slotword.pxi"

cdef uint64_t INLINE_MASK = (<uint64_t>1 << 57) - 1
cdef bytes ZERO_PAGE = bytes(PAGE)         # a fault's stand-in for bytes nobody reads
cdef object DeviceError = None             # device.DeviceError, looked up at the first
                                           # NativePaths (cramfs.device imports this module)


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


@cython.final
cdef class NativePaths:
    """The page paths of one device on the native engine (see device/paths.py)."""

    cdef object dev
    cdef readonly object ref                # the reference PagePaths: every other case
    cdef NativeSlotStore slots
    cdef object counters
    # the device's derived settings, copied by configure()
    cdef object encode
    cdef Lz4PageEncoder lz4                 # encode, when it is the compiled lz4 one
    cdef object encode_request
    cdef int algo
    cdef bint zswap, promote, direct_dram, refuse_to_host
    cdef long long tier_budget, comp_threads, easy_below, fallback_limit
    cdef double inflate, quiet_low, quiet_high

    def __init__(self, dev, ref):
        global DeviceError
        if DeviceError is None:
            from .device.common import DeviceError
        self.dev = dev                      # a weak proxy: the device owns its paths
        self.ref = ref
        self.slots = <NativeSlotStore?>dev.store
        self.counters = dev.counters

    def configure(self):
        """Copy what the device derived from its settings, level and faults."""
        dev = self.dev
        self.encode = dev.encode
        self.lz4 = dev.encode if type(dev.encode) is Lz4PageEncoder else None
        self.encode_request = dev.encode_request
        self.algo = dev.algo
        self.zswap, self.promote = dev.zswap, dev.promote
        self.direct_dram, self.refuse_to_host = dev.direct_dram, dev.refuse_to_host
        self.tier_budget, self.comp_threads = dev.tier_budget, dev.comp_threads
        self.easy_below, self.inflate = dev.easy_below, dev.inflate
        self.quiet_low, self.quiet_high = dev.quiet_low, dev.quiet_high
        self.fallback_limit = dev.config.fallback_limit

    cdef inline int _refresh(self) except -1:
        """The device's refresh, skipped while usage stays in the quiet band."""
        cdef long long used
        cdef NativeSlotStore slots = self.slots
        if not slots.deferred:
            used = slots.c_used()
            if used > slots.mem_used_max:
                slots.mem_used_max = used
            if self.quiet_low <= used < self.quiet_high:
                return 0
        self.dev.refresh()
        return 0

    # ------------------------------------------------------------ reads

    def peek(self, NativeTable table not None, long long idx, bint touch=False):
        """PagePaths.peek for a hole, an inline same-filled page and a promoted page
        kept as lz4 or whole; the rest is the reference's."""
        cdef uint64_t word = table.get(idx)
        cdef bytes page
        cdef _Node n
        cdef NativeTier tier = self.slots.ntier
        if not word:
            return ZERO_PAGE
        if (word & KIND_MASK) == PROMOTED:
            n = tier.c_get(table, idx) if touch else tier.c_peek(table, idx)
            page = PyBytes_FromStringAndSize(NULL, PAGE)
            if decode_kept(n.algo, n.blob, PyBytes_AS_STRING(page)):
                return page
        elif (word & KIND_MASK) == SAME:
            page = PyBytes_FromStringAndSize(NULL, PAGE)
            if fill_page(word, PyBytes_AS_STRING(page)):
                return page
        return self.ref.peek(table, idx, touch)

    def read_page(self, NativeTable table not None, long long idx, object data=None):
        """Serve one page; `data` is its decompressed content if already known."""
        return self.c_read_page(table, idx, data)

    cdef bytes c_read_page(self, NativeTable table, long long idx, object data):
        cdef uint64_t word = table.get(idx)
        cdef int kind = word & KIND_MASK
        cdef int algo
        cdef bint promote
        cdef bytes blob
        cdef NativeSlotStore store = self.slots
        if kind == BACKED:
            return self.ref.read_page(table, idx, data)
        if kind != DEVICE and kind != FALLBACK:
            return self.peek(table, idx, True)
        promote = self.promote
        algo = word >> ALGO_SHIFT & 3
        # one copy out of the pool serves both the decompression and the promotion
        blob = b""
        if data is None or promote:
            if kind == DEVICE:
                blob = store.pool.get(word >> HANDLE_SHIFT)
            else:
                blob = store.fallback.get(word >> HANDLE_SHIFT)
        if data is None:
            data = BY_ID[algo].decompress(blob)
        if store.tracking:
            table.touch(idx, self.dev.now())
        if self.zswap:
            # Every access faults; the page goes back to DRAM and the compressed
            # copy is released (zswap loads are exclusive).
            self.counters.faults += 1
            if promote:
                if self.tier_room():
                    store.c_promote(table, idx, blob, algo, word & HUGE_BIT != 0)
                    self._refresh()
                    self.counters.promotions += 1
                else:
                    self.counters.promotions_skipped += 1
        return data

    cdef int _read_into(self, NativeTable table, long long idx, char *dst) except -1:
        """read_page for one page of a larger read, decoded straight into the request's
        buffer: an lz4 or whole page on the device goes from the pool to `dst` with no
        page object and no join; every other page takes read_page as it is. The
        transitions after the decoding (ages, the fault, the promotion) are
        read_page's own, told the data is known."""
        cdef uint64_t word = table.get(idx)
        cdef int algo = word >> ALGO_SHIFT & 3
        cdef bytes page
        cdef _Node node
        cdef const char *src
        cdef Py_ssize_t n
        cdef NativePool pool
        if fill_page(word, dst):
            return 0
        if (word & KIND_MASK) == PROMOTED:
            node = self.slots.ntier.c_get(table, idx)
            if decode_kept(node.algo, node.blob, dst):
                return 0
        if (word & KIND_MASK) != DEVICE or (algo != LZ4_ID and algo != NONE_ID):
            page = self.c_read_page(table, idx, None)
            if PyBytes_GET_SIZE(page) != PAGE:
                raise ValueError(f"page {idx}: {PyBytes_GET_SIZE(page)} bytes")
            memcpy(dst, PyBytes_AS_STRING(page), PAGE)
            return 0
        # decoded in place: nothing between here and the decoding touches the pool
        pool = self.slots.pool
        src = pool.view(word >> HANDLE_SHIFT, &n)
        if algo == NONE_ID:
            if n != PAGE:
                raise ValueError(f"page {idx}: a whole page of {n} bytes")
            memcpy(dst, src, PAGE)
        elif LZ4_decompress_safe(src, dst, <int>n, PAGE) != PAGE:
            raise ValueError(f"page {idx}: damaged lz4 block")
        self.c_read_page(table, idx, ZERO_PAGE)
        return 0

    def read(self, NativeTable table not None, long long off, long long size):
        """PagePaths.read; a read of several pages is decoded into one buffer."""
        cdef long long first = off // PAGE, start = off % PAGE
        cdef long long count = (off + size - 1) // PAGE - first + 1
        cdef long long k
        cdef bytes page
        # (comp_threads is not used here: decoding straight into the reply beats
        # decoding in threads page by page, each taking the GIL back for its bytes)
        if off < 0 or size <= 0:
            return self.ref.read(table, off, size)
        self.counters.reads += count
        if count == 1:
            page = self.c_read_page(table, first, None)
            return page if size == PAGE else page[start:start + size]
        data = PyBytes_FromStringAndSize(NULL, count * PAGE)
        for k in range(count):
            self._read_into(table, first + k, PyBytes_AS_STRING(data) + k * PAGE)
        return data if start == 0 and size == count * PAGE else data[start:start + size]

    def fault(self, NativeTable table not None, long long off, long long size):
        """PagePaths.fault: a replay's reads, without their bytes."""
        cdef long long first = off // PAGE, last = (off + size - 1) // PAGE, idx
        cdef uint64_t word
        cdef int kind
        if off < 0 or size <= 0:
            return self.ref.fault(table, off, size)
        self.counters.reads += last - first + 1
        for idx in range(first, last + 1):
            word = table.get(idx)
            kind = word & KIND_MASK
            # what read_page does to a hole, a same-filled page and a promoted one is
            # only to decode it (and touch the promoted one): nothing a fault needs
            if not word or kind == SAME:
                continue
            if kind == PROMOTED:
                self.slots.ntier.c_get(table, idx)
                continue
            self.c_read_page(table, idx, ZERO_PAGE)
        return size

    # ------------------------------------------------------------ the DRAM tier

    cpdef bint tier_room(self) except -1:
        while len(self.slots.ntier) >= self.tier_budget:
            if not self.demote_one():
                return False
        return True

    cpdef bint demote_one(self) except -1:
        """PagePaths.demote_one for a clean page (its kept form goes back as it is);
        the reference's for the rest."""
        cdef _Node n = self.slots.ntier.c_oldest()
        cdef bint ok
        if n is None:
            return False
        if not (n.word is None and type(n.blob) is bytes and (n.algo == self.algo
                                                              or n.algo == NONE_ID)):
            return self.ref.demote_one()
        store = self.slots
        if store.hook is None:
            ok = self._store_blob(n.table, n.idx, n.blob, n.algo, n.huge, True, False, n.kept)
        else:
            cause, store.cause = store.cause, "demote"
            try:
                ok = self._store_blob(n.table, n.idx, n.blob, n.algo, n.huge, True, False,
                                      n.kept)
            finally:
                store.cause = cause
        if not ok:
            return False
        self.counters.demotions += 1
        return True

    # ------------------------------------------------------------ writes

    def write_page(self, NativeTable table not None, long long idx, object page,
                   object enc=None, bint force=False):
        self.c_write_page(table, idx, page, enc, force)

    cdef int c_write_page(self, NativeTable table, long long idx, object page, object enc,
                          bint force) except -1:
        cdef int algo = 0
        cdef bint huge = False
        cdef bytes blob
        if self.direct_dram:
            self.ref.write_page(table, idx, page, enc, force)
            return 0
        if enc is None and self.lz4 is not None and type(page) is bytes:
            # the swap path: the page encoded and stored with no tuple between
            blob = self.lz4.c_encode(page, &algo, &huge)
            if blob is not None:
                self._store_blob(table, idx, blob, algo, huge, False, force, None)
                return 0
        self.store_(table, idx, enc or self.encode(page), False, force)
        return 0

    def store(self, NativeTable table not None, long long idx, tuple enc, bint demoting,
              bint force=False):
        return self.store_(table, idx, enc, demoting, force)

    cdef bint store_(self, NativeTable table, long long idx, tuple enc, bint demoting,
                     bint force) except -1:
        """PagePaths.store: an inline same-filled page or a compressed one far from
        capacity here, the rest the reference's."""
        cdef object word = enc[0]
        cdef uint64_t old
        cdef int64_t value
        if word is not None:
            if type(word) is not bytes or PyBytes_GET_SIZE(word) != 8:
                return self.ref.store(table, idx, enc, demoting, force)
            memcpy(&value, PyBytes_AS_STRING(word), 8)       # little-endian, as the table's
            if not -INLINE_LIMIT <= value < INLINE_LIMIT:
                return self.ref.store(table, idx, enc, demoting, force)
            old = self.slots.c_store_inline(table, idx, (<uint64_t>value & INLINE_MASK) << 1)
            if value == 0 and (old & KIND_MASK) in (DEVICE, FALLBACK, PROMOTED):
                self.counters.zero_released_pages += 1
            self._refresh()
            return True
        return self._store_blob(table, idx, enc[1], enc[2], enc[3], demoting, force, enc)

    cdef bint _store_blob(self, NativeTable table, long long idx, bytes blob, int algo,
                          bint huge, bint demoting, bint force, tuple enc) except -1:
        """store of a compressed page, its Encoded's fields apart (`enc` is the tuple,
        or None where no one made it: made here only for the reference's path)."""
        if self.inflate != 1 or (self.slots.c_used() > self.easy_below and not force):
            if self.refuse_to_host and not force and self._to_host(table, idx, blob, algo,
                                                                   huge):
                return True
            if enc is None:
                enc = (None, blob, algo, huge)
            return self.ref.store(table, idx, enc, demoting, force)
        self.slots.c_store_device(table, idx, blob, algo, huge)
        self._refresh()
        return True

    cdef bint _to_host(self, NativeTable table, long long idx, bytes blob, int algo,
                       bint huge) except -1:
        """Admission's refusal into host memory (fallback=host, write control at
        critical, no reclaim), compiled: a device under pressure takes this for every
        page. False where the fallback pool is full: the reference says why."""
        cdef Py_ssize_t size = PyBytes_GET_SIZE(blob)
        fallback = self.slots.fallback
        if fallback.used_bytes + fallback.charge(size) > self.fallback_limit:
            return False
        self.counters.reject_write_control += 1
        self.dev.events.add("refused", partial(self.ref.refused_to_host, table, idx, size),
                            ratelimit=True)
        self.slots.c_store_fallback(table, idx, blob, algo, huge)
        self._refresh()
        return True

    def write_encoded(self, NativeTable table not None, long long off, list encoded,
                      object page_of):
        """PagePaths.write_encoded, its loop compiled (a replay's writes)."""
        if off < 0 or off % PAGE or self.direct_dram:
            return self.ref.write_encoded(table, off, encoded, page_of)
        return self._store_pages(table, off // PAGE, encoded)

    cdef long long _store_pages(self, NativeTable table, long long first,
                                list encoded) except -1:
        """The whole-page loop over pages already encoded, off the DRAM path (where a
        page is only its encoding): a refusal after some pages is a short count, of
        the first page an error."""
        cdef long long k
        for k in range(len(encoded)):
            self.counters.writes += 1
            try:
                self.store_(table, first + k, encoded[k], False, False)
            except DeviceError:
                if k:
                    return k * PAGE
                raise
        return len(encoded) * PAGE

    def write(self, NativeTable table not None, long long off, object data):
        """PagePaths.write: its one-page case (the swap path) and its whole-page case
        compiled; a partial page is the reference's."""
        cdef Py_ssize_t n = len(data)
        if off < 0 or off % PAGE or n % PAGE or n == 0:
            return self.ref.write(table, off, data)
        if n == PAGE:
            self.counters.writes += 1
            self.c_write_page(table, off // PAGE, data, None, False)
            return PAGE
        encode = self.encode_request
        if self.direct_dram or encode is None or type(data) is not bytes:
            return self._write_pages(table, off // PAGE, data)
        # the whole request encoded at once, never sliced into page objects
        return self._store_pages(table, off // PAGE,
                                 parallel.map_parts(partial(encode, data), n // PAGE,
                                                    self.comp_threads))

    def _write_pages(self, NativeTable table not None, long long first, data):
        """PagePaths._write_pages with the compiled write_page: pages encoded ahead
        on comp_threads (or kept whole for direct mode's DRAM)."""
        cdef long long k
        pages = [data[i:i + PAGE] for i in range(0, len(data), PAGE)]
        ahead = None
        if self.direct_dram:
            encoded = [None] * len(pages)
        else:
            encoded = ahead = parallel.imap(self.encode, pages, self.comp_threads)
        try:
            for k, (page, enc) in enumerate(zip(pages, encoded, strict=True)):
                self.counters.writes += 1
                try:
                    self.c_write_page(table, first + k, page, enc, False)
                except DeviceError:
                    if k:
                        return k * PAGE
                    raise
        finally:
            if ahead is not None:
                ahead.close()            # stops the workers computing ahead
        return len(data)
