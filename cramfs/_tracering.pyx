# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""The trace's request-path queue and its writer, compiled.

A traced request pays for its record where the kernel waits. In Python that record
was a tuple, a float and two ints on a deque: memory that grows until the writer
takes it, that the cyclic GC scans meanwhile, and a writer that packs in Python
and so takes the GIL from the request path for every record it packs. Here a
record is a slot of a fixed ring (the payload held by reference, not copied), and
`drain` packs and writes with the GIL released from start to end: the writer
never takes the GIL. The request path drops the payloads the writer is done with,
a few at each record, so no Python object is freed off it.

The ring is single-producer (the request path, which holds the GIL) and
single-consumer (the writer, which does not). The producer is enforced: the first
thread to record owns the ring, and a record from any other raises RuntimeError
(a second producer could claim the slot the first is filling). A slot is claimed
only after every Python call a record needs (the clock, the payload's snapshot,
the integer conversions), right after the capacity check, so nothing can run in
between. `head` is published with release
semantics after a slot is filled, and `done` after the writer has read the slots
before it; a slot is filled again only once `done` has passed it.

`trace/ring.py`'s PyTraceRing is the reference: the same interface, with the
writer's packing in Python (`trace/format.py`'s pack_records). tests/test_tracering.py
holds the two to the same bytes, and scripts/test-asan runs it on an AddressSanitizer
build.
"""

cimport cython
from cpython.pythread cimport PyThread_get_thread_ident
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy, memset
from posix.time cimport CLOCK_MONOTONIC, clock_gettime, timespec

import time

from ._lz4page cimport (LZ4_BOUND_PAGE, PAGE, LZ4_compressBound, state_size,
                        compress_block, compress_page, same_filled)

cdef extern from *:
    """
    static inline Py_ssize_t ring_load(const Py_ssize_t *p) {
        return __atomic_load_n(p, __ATOMIC_ACQUIRE);
    }
    static inline void ring_store(Py_ssize_t *p, Py_ssize_t v) {
        __atomic_store_n(p, v, __ATOMIC_RELEASE);
    }
    """
    Py_ssize_t ring_load(const Py_ssize_t *p) noexcept nogil
    void ring_store(Py_ssize_t *p, Py_ssize_t v) noexcept nogil

cdef extern from "Python.h":
    # the payload's bytes, read by the writer without the GIL: a bytes object is
    # immutable, and the ring holds a reference until the writer is done with it
    char *bytes_data "PyBytes_AS_STRING"(PyObject *o) nogil
    Py_ssize_t bytes_size "PyBytes_GET_SIZE"(PyObject *o) nogil

cdef extern from "unistd.h" nogil:
    ssize_t write(int fd, const void *buf, size_t count)
    int usleep(unsigned int usec)

cdef extern from "errno.h" nogil:
    int errno
    int EINTR
    int ENOMEM

# the trace format (trace/format.py)
cdef enum:
    HEAD_SIZE = 37               # a record's fixed part, `<dBIqqiI`
    WRITE_OP = 8                 # format.WRITE
    WHOLE = 0                    # a write payload's format bytes
    PAGES = 1
    SAME_TAG = 0                 # a page's tags
    LZ4_TAG = 1
    RAW_TAG = 2
    BUFFER = 1 << 20             # packed records, written out when the next does not fit
    IDLE_US = 2000               # the writer's nap when the ring is empty


cdef struct Slot:
    double t
    long long a
    long long b
    unsigned int ino
    int result
    int op
    PyObject *payload            # a bytes object the ring holds a reference to, or NULL


@cython.final
cdef class TraceRing:
    """Records taken on the request path, for one writer thread."""

    cdef Slot *slots
    cdef Py_ssize_t mask
    cdef Py_ssize_t head          # records published (request path; read by the writer)
    cdef Py_ssize_t done          # records the writer is done with (writer; read by the request path)
    cdef Py_ssize_t freed         # payloads dropped (request path)
    cdef Py_ssize_t taken         # records the writer has taken (writer only)
    cdef Py_ssize_t bytes_in      # payload bytes recorded (request path)
    cdef Py_ssize_t bytes_out     # payload bytes taken (writer; read by the request path)
    cdef Py_ssize_t finishing     # the writer ends once it is empty (set by stop and fail)
    cdef Py_ssize_t max_backlog
    cdef object clock
    cdef bint c_clock             # clock is time.monotonic: read it here, with no call
    cdef bint draining            # drain() runs: take() and release() would race it
    cdef unsigned long producer   # the thread that records (0: none yet)
    cdef readonly bint active
    cdef readonly object error

    def __cinit__(self, Py_ssize_t capacity, Py_ssize_t max_backlog, clock):
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError("a ring's capacity is a power of two")
        self.slots = <Slot *>malloc(capacity * sizeof(Slot))
        if self.slots == NULL:
            raise MemoryError()
        # touched now, at the start of a recording, not a page fault at a time on the
        # request path
        memset(self.slots, 0, capacity * sizeof(Slot))
        self.mask = capacity - 1
        self.max_backlog = max_backlog
        self.clock = clock
        self.c_clock = clock is time.monotonic
        self.active = True

    def __dealloc__(self):
        # no writer runs here: drain() holds a reference to the ring
        if self.slots != NULL:
            ring_store(&self.done, self.head)
            self._drop_done()
            free(self.slots)

    @property
    def events(self) -> int:
        return self.head

    @property
    def backlog(self) -> int:
        """Records published and not yet done with by the writer."""
        return self.head - ring_load(&self.done)

    @property
    def finished(self) -> bool:
        """Stopped or failed: the writer ends once it has taken what is left."""
        return ring_load(&self.finishing) != 0

    def fail(self, str why):
        """Stop taking records, for `why` (the first reason given is kept)."""
        if self.error is None:
            self.error = why
        self.active = False
        ring_store(&self.finishing, 1)

    def stop(self):
        """Take no more records; the writer ends once it has taken what is left."""
        self.active = False
        ring_store(&self.finishing, 1)

    cdef inline int _own(self) except -1:
        cdef unsigned long me = PyThread_get_thread_ident()
        if self.producer != me:
            if self.producer:
                raise RuntimeError("a trace ring takes records from one thread only")
            self.producer = me
        return 0

    def record_write(self, ino, off, data, result):
        """record(WRITE, ino, off, len(data), result, data): the request path's own,
        with the fewest arguments to pass."""
        if self.active:
            self._own()
            self._put(WRITE_OP, ino, off, None, result, data, None)

    def record(self, int op, ino=0, a=0, b=0, result=0, payload=b"", at=None):
        """Queue one record, at time `at` (the clock's now if None: the moment the
        recorded call returned). Never raises for what it is given: a record the
        trace cannot hold stops the recording. RuntimeError from a second thread."""
        if self.active:
            self._own()
            self._put(op, ino, a, b, result, payload, at)

    cdef void _put(self, int op, ino, a, b, result, payload, at) noexcept:
        try:
            self._fill(op, ino, a, b, result, payload, at)
        except Exception as e:
            self.fail(f"a record the trace cannot hold: {e!r}")

    cdef int _fill(self, int op, ino, a, b, result, payload, at) except -1:
        # b None: the payload's length. An exception here (a value the trace has no
        # room for, a payload that is no buffer) stops the recording, in _put.
        cdef Slot *s
        cdef Py_ssize_t n = 0
        cdef double t
        cdef long long ia, ib, iino, ires
        self._drop_done()
        if payload:
            if type(payload) is not bytes:
                payload = bytes(payload)      # a snapshot: the writer reads it later
            n = len(payload)
            self.bytes_in += n
            if self.bytes_in - ring_load(&self.bytes_out) > self.max_backlog:
                self.fail(f"the trace writer fell {self.max_backlog >> 20} MiB behind")
                return 0
        else:
            payload = None
        if at is not None:
            t = at
        elif self.c_clock:
            t = _monotonic()
        else:
            t = self.clock()
        iino, ia, ires = ino, a, result
        ib = n if b is None else b
        if not (0 <= iino <= 0xFFFFFFFF and -0x80000000 <= ires <= 0x7FFFFFFF
                and 0 <= op <= 255):
            raise ValueError(f"op {op} inode {iino} result {ires}")
        # the last check before the slot is claimed: no Python call from here on
        if self.head - self.freed > self.mask:
            self.fail(f"the trace writer fell {self.mask + 1} records behind")
            return 0
        s = &self.slots[self.head & self.mask]
        s.t, s.op, s.ino, s.a, s.b, s.result = t, op, iino, ia, ib, ires
        if payload is None:
            s.payload = NULL
        else:
            Py_INCREF(payload)
            s.payload = <PyObject *>payload
        ring_store(&self.head, self.head + 1)
        return 0

    cdef inline void _drop_done(self) noexcept:
        # the payloads of records the writer is done with (the GIL is held here)
        cdef Py_ssize_t d = ring_load(&self.done)
        cdef Slot *s
        while self.freed < d:
            s = &self.slots[self.freed & self.mask]
            Py_XDECREF(s.payload)
            s.payload = NULL
            self.freed += 1

    def release(self):
        """After the writer ended: drop every payload still held."""
        if self.draining:
            raise RuntimeError("release() while drain() runs")
        ring_store(&self.done, self.head)
        self._drop_done()

    def take(self):
        """The records not taken yet, as (time, op, inode, a, b, result, payload)
        tuples: for a writer that packs in Python (one that also keeps other
        compressors' blocks). Called with the GIL, like record()."""
        cdef Py_ssize_t i, h = self.head, n = 0
        cdef Slot *s
        if self.draining:
            raise RuntimeError("take() while drain() runs")
        out = []
        for i in range(self.taken, h):
            s = &self.slots[i & self.mask]
            if s.payload == NULL:
                payload = b""
            else:
                payload = <object>s.payload
                n += bytes_size(s.payload)
            out.append((s.t, s.op, s.ino, s.a, s.b, s.result, payload))
        self.taken = h
        ring_store(&self.bytes_out, self.bytes_out + n)
        ring_store(&self.done, h)
        return out

    def drain(self, int fd, double start):
        """The writer: pack each record as format.pack_records does (times less
        `start`) and write it to `fd`, until the ring is finished and empty. The GIL
        is released throughout. 0, or the errno of a failed write (ENOMEM: out of
        memory for the packing buffer)."""
        cdef int err
        if self.draining:
            raise RuntimeError("drain() runs already")
        self.draining = True            # set with the GIL held: no second writer starts
        try:
            with nogil:
                err = self._drain(fd, start)
        finally:
            self.draining = False
        return err

    cdef int _drain(self, int fd, double start) noexcept nogil:
        cdef Py_ssize_t cap = BUFFER, used = 0, h, i, need, n, k
        cdef Py_ssize_t got
        cdef char *buf = <char *>malloc(cap)
        cdef char *grown
        cdef void *state = malloc(state_size())
        cdef Slot *s
        cdef int err = 0
        if buf == NULL or state == NULL:
            free(buf)
            free(state)
            return ENOMEM
        while True:
            h = ring_load(&self.head)
            if self.taken == h:
                if ring_load(&self.finishing):
                    # a last look: the request path publishes before it finishes
                    h = ring_load(&self.head)
                    if self.taken == h:
                        break
                else:
                    usleep(IDLE_US)
                    continue
            got = 0
            for i in range(self.taken, h):
                s = &self.slots[i & self.mask]
                n = 0 if s.payload == NULL else bytes_size(s.payload)
                got += n
                # the most this record can pack to: every page raw, or one lz4 block
                need = HEAD_SIZE + 1 + n + n // PAGE * 3 + 4 + LZ4_compressBound(
                    <int>min(n, 0x7E000000)) if n else HEAD_SIZE
                if used + need > cap:
                    if used:
                        err = _write_all(fd, buf, used)
                        if err:
                            break
                        used = 0
                    if need > cap:
                        grown = <char *>realloc(buf, need)
                        if grown == NULL:
                            err = ENOMEM
                            break
                        buf, cap = grown, need
                k = _pack(s, start, buf + used, buf + used + HEAD_SIZE, state)
                if k < 0:
                    err = ENOMEM
                    break
                used += HEAD_SIZE + k
            if err == 0 and used:
                err = _write_all(fd, buf, used)
                used = 0
            self.taken = h
            ring_store(&self.bytes_out, self.bytes_out + got)
            ring_store(&self.done, h)
            if err:
                break
        free(buf)
        free(state)
        return err


cdef inline double _monotonic() noexcept nogil:
    # time.monotonic(), the same double: CLOCK_MONOTONIC in ns, then seconds
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>(<long long>ts.tv_sec * 1000000000 + ts.tv_nsec) / 1e9


cdef inline void _store(char *p, const void *v, size_t n) noexcept nogil:
    memcpy(p, v, n)                 # little-endian: ring.py checks the host is


cdef Py_ssize_t _pack(Slot *s, double start, char *head, char *body,
                      void *state) noexcept nogil:
    """One record: its fixed part at `head`, its payload at `body`; the payload's
    length, or -1 if lz4 failed."""
    cdef double t = s.t - start
    cdef unsigned char op = <unsigned char>s.op
    cdef unsigned int length, size32
    cdef Py_ssize_t n = 0, k, pages, i
    cdef const char *src = NULL
    cdef const char *page
    cdef int size
    cdef unsigned short u16
    if s.payload != NULL:
        src = bytes_data(s.payload)
        n = bytes_size(s.payload)
    if op == WRITE_OP and n:
        if s.a % PAGE or n % PAGE:
            # WHOLE: as lz4.block.compress(data) (its size stored first)
            body[0] = WHOLE
            size32 = <unsigned int>n
            _store(body + 1, &size32, 4)
            size = compress_block(state, src, <int>n, body + 5, LZ4_compressBound(<int>n))
            if size <= 0:
                return -1
            k = 5 + size
        else:
            body[0] = PAGES
            k = 1
            pages = n // PAGE
            for i in range(pages):
                page = src + i * PAGE
                if same_filled(page):
                    body[k] = SAME_TAG
                    memcpy(body + k + 1, page, 8)
                    k += 9
                    continue
                size = compress_page(state, page, body + k + 3, LZ4_BOUND_PAGE)
                if size <= 0:
                    return -1
                if size >= PAGE:
                    body[k] = RAW_TAG
                    memcpy(body + k + 1, page, PAGE)
                    k += 1 + PAGE
                else:
                    body[k] = LZ4_TAG
                    u16 = <unsigned short>size
                    _store(body + k + 1, &u16, 2)
                    k += 3 + size
    else:
        if n:
            memcpy(body, src, n)
        k = n
    length = <unsigned int>k
    _store(head, &t, 8)
    head[8] = <char>op
    _store(head + 9, &s.ino, 4)
    _store(head + 13, &s.a, 8)
    _store(head + 21, &s.b, 8)
    _store(head + 29, &s.result, 4)
    _store(head + 33, &length, 4)
    return k


cdef int _write_all(int fd, const char *buf, Py_ssize_t n) noexcept nogil:
    cdef ssize_t w
    while n > 0:
        w = write(fd, buf, n)
        if w < 0:
            if errno == EINTR:
                continue
            return errno
        buf += w
        n -= w
    return 0
