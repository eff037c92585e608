# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""LZ4 block compression by the Linux kernel's rules: zram's compressed sizes, page for page.

What: an LZ4 block compressor (the raw block format, no frame) that gives, for a
4096-byte page, exactly the bytes the kernel's lib/lz4 gives when zram's lz4
backend calls LZ4_compress_fast(src, dst, 4096, bound, 1).

Why: cramfs emulates zram, and a page's compressed size decides its size class
and whether zram stores it "huge". Debian's liblz4 (1.9.4) and python-lz4 do not
give the kernel's sizes: liblz4 differs on about one page in twenty by 1-6
bytes, python-lz4 (streaming path) more often. With this module the emulator's
sizes are zram's, checked page by page against zram0 in tests/test_lz4k.py.

Which rules: the kernel's lib/lz4 is the 2017 port of LZ4 1.7.3, and for inputs
under 64 KiB LZ4_compress_fast takes the byU16 path:
  - a table of 8192 16-bit positions (LZ4_MEMORY_USAGE 14, LZ4_HASHLOG 12, +1 for
    byU16), zeroed for every call, so an empty slot names position 0;
  - the hash of the 4 bytes at p, read in the machine's order:
    (read32(p) * 2654435761) mod 2^32 >> (32 - 13);
  - the search: each candidate's slot is read and then overwritten with the
    current position; the step between candidates starts at 1 and grows by one
    every 64 misses (LZ4_SKIPTRIGGER 6, acceleration 1); a candidate matches if
    its 4 bytes equal the current 4 (no distance test: under 64 KiB every
    offset fits);
  - a match is extended backwards over equal bytes (not before the last
    sequence's end, not before the block's start), and forwards up to
    LASTLITERALS (5) bytes before the end;
  - after a match, the position 2 before its end is put in the table, and the
    position at its end is tried at once ("test next position"); a hit there
    starts a sequence with no literals;
  - the search stops when the next candidate would lie past n - MFLIMIT (12),
    and no sequence starts after n - 12: the rest are the last literals.
    LZ4 1.8.2 changed that search exit to "past n - 11", so liblz4 >= 1.8.2
    may try one candidate more near the end of a block and there find a match
    the kernel does not. For a fresh byU16 block no other difference shows:
    `_compress_as_182` applies the later rule and matches Debian's liblz4
    byte for byte (tests/test_lz4k.py holds it to that).
Inputs under 13 bytes (MFLIMIT + 1) are all literals without a search; a
13-byte input is too, its first candidate (position 2) being past n - 12.

Memory safety: this runs inside a daemon holding someone's swap, so every write
into `dst` is checked against `capacity` before it is made, and every read of
`src` stays below `n`. The checks and why each one is there:
  - n < 0, n > 65535, capacity <= 0, NULL pointers: refused (0). Positions are
    kept as 16-bit table entries and offsets as 16-bit fields; past 65535 both
    would wrap and name wrong bytes.
  - before a sequence's literals: room for the token, the length bytes, the
    literals and the 2-byte offset. The literal copy moves 8 bytes at a time
    and may write up to 7 bytes past the literals, so it does so only where
    those 7 bytes are inside `capacity` too, and copies exactly otherwise;
    its reads stay below the match's start + 8 <= n - 4.
  - before a match's extra length bytes: room for them (a long match of
    zeros needs one per 255 bytes).
  - before a sequence found by "test next position": room for its token and
    offset.
  - before the last literals: room for the token, the length bytes and the
    literals.
  - reads: a candidate is read 4 bytes at a time only at positions <= n - 11,
    and a match's forward count reads 8-byte words only while the word ends
    at or before n - 5 (then byte by byte up to n - 5), as LZ4_count does.
So `capacity` = lz4k_bound(n) always suffices, and any smaller capacity gives
0 exactly when the block would not fit (the kernel's own limited-output path
gives up a few bytes early instead; its full-size output is the one matched).
The table lives on the stack (16 KiB) or in a caller's buffer: no allocation.

Assumes gcc or clang (__builtin_ctzll/clzll); reads are in the machine's byte
order, as the kernel's are, so hashes and output are the same machine's zram's.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize

cdef extern from *:
    """
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define LZ4K_COMMON_BYTES(x) ((unsigned int)__builtin_clzll(x) >> 3)
    #else
    #define LZ4K_COMMON_BYTES(x) ((unsigned int)__builtin_ctzll(x) >> 3)
    #endif
    #define LZ4K_UNLIKELY(x) __builtin_expect(!!(x), 0)
    """
    unsigned int LZ4K_COMMON_BYTES(uint64_t x) nogil   # equal low-order bytes; x != 0
    bint LZ4K_UNLIKELY(bint x) nogil

cdef enum:
    MINMATCH = 4
    MFLIMIT = 12                  # no match starts in the last 12 bytes
    LASTLITERALS = 5              # no match covers the last 5 bytes
    MIN_LENGTH = MFLIMIT + 1      # shorter inputs are all literals
    SKIPTRIGGER = 6               # the step grows by 1 every 2^6 misses
    HASH_SHIFT = 32 - 13          # byU16: LZ4_HASHLOG (12) + 1 bits of hash
    RUN_MASK = 15
    ML_MASK = 15


cdef inline uint32_t read32(const uint8_t *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t read64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint32_t hash4(const uint8_t *p) noexcept nogil:
    return <uint32_t>(read32(p) * <uint32_t>2654435761u) >> HASH_SHIFT


cdef inline Py_ssize_t count_equal(const uint8_t *src, Py_ssize_t p, Py_ssize_t m,
                                   Py_ssize_t limit) noexcept nogil:
    """How many bytes from src + p equal those from src + m (m < p), stopping at
    `limit`: LZ4_count. Reads nothing at or past src + limit."""
    cdef Py_ssize_t start = p
    cdef uint64_t diff
    while p + 8 <= limit:
        diff = read64(src + m) ^ read64(src + p)
        if diff:
            return p - start + LZ4K_COMMON_BYTES(diff)
        p += 8
        m += 8
    while p < limit and src[p] == src[m]:
        p += 1
        m += 1
    return p - start


cdef inline Py_ssize_t put_length(uint8_t *dst, Py_ssize_t op, Py_ssize_t rest) noexcept nogil:
    """The bytes after a token for a length field's `rest` (its value - 15): one 255
    per 255, then the remainder. The caller has checked the room:
    rest / 255 + 1 bytes."""
    cdef Py_ssize_t full = rest // 255
    memset(dst + op, 255, full)
    dst[op + full] = <uint8_t>(rest - full * 255)
    return op + full + 1


cdef inline Py_ssize_t length_bytes(Py_ssize_t length) noexcept nogil:
    """Bytes a literal or match length field takes after its token's 4 bits."""
    return (length - 15) // 255 + 1 if length >= 15 else 0


cdef int _compress(const uint8_t *src, int n, uint8_t *dst, int capacity, uint16_t *table,
                   int search_slack) noexcept nogil:
    """The kernel's LZ4_compress_generic(byU16, noDict, acceleration 1), as the module
    docstring describes; `search_slack` 1 moves the search's exit test as LZ4 1.8.2
    did (the kernel: 0)."""
    cdef Py_ssize_t ip = 0, anchor = 0, op = 0, fwd, match, mflimit, search_end
    cdef Py_ssize_t matchlimit, lit, ml, token, k, dist
    cdef uint32_t h, fwd_h
    cdef unsigned int step, attempts
    cdef bint done = False
    if n < 0 or n > LZ4K_MAX_INPUT or capacity <= 0 or dst == NULL or table == NULL:
        return 0
    if src == NULL and n > 0:
        return 0
    if n >= MIN_LENGTH:
        memset(table, 0, LZ4K_TABLE_ENTRIES * sizeof(uint16_t))
        mflimit = n - MFLIMIT
        search_end = mflimit + search_slack
        matchlimit = n - LASTLITERALS
        table[hash4(src)] = 0
        ip = 1
        fwd_h = hash4(src + 1)
        while True:
            # find a match: candidates at growing steps; each slot read, then
            # given the current position
            fwd = ip
            step = 1
            attempts = 1 << SKIPTRIGGER
            while True:
                h = fwd_h
                ip = fwd
                fwd += step
                step = attempts >> SKIPTRIGGER
                attempts += 1
                if LZ4K_UNLIKELY(fwd > search_end):
                    done = True
                    break
                match = table[h]
                fwd_h = hash4(src + fwd)          # fwd <= n - 11: reads below n - 7
                table[h] = <uint16_t>ip
                if read32(src + match) == read32(src + ip):
                    break
            if done:
                break
            # catch up: extend the match backwards
            while ip > anchor and match > 0 and src[ip - 1] == src[match - 1]:
                ip -= 1
                match -= 1
            # the literals since the last sequence; room for token, lengths,
            # literals and offset
            lit = ip - anchor
            if 1 + length_bytes(lit) + lit + 2 > capacity - op:
                return 0
            token = op
            op += 1
            if lit >= RUN_MASK:
                dst[token] = RUN_MASK << 4
                op = put_length(dst, op, lit - RUN_MASK)
            else:
                dst[token] = <uint8_t>(lit << 4)
            if lit + 8 <= capacity - op:
                # 8 at a time, up to 7 bytes past the literals (inside capacity);
                # reads stop below ip + 8 <= n - 3
                k = 0
                while k < lit:
                    memcpy(dst + op + k, src + anchor + k, 8)
                    k += 8
            else:
                memcpy(dst + op, src + anchor, lit)
            op += lit
            while True:
                # the offset (room checked with the token), then the match's length
                dist = ip - match
                dst[op] = <uint8_t>dist
                dst[op + 1] = <uint8_t>(dist >> 8)
                op += 2
                ml = count_equal(src, ip + MINMATCH, match + MINMATCH, matchlimit)
                ip += MINMATCH + ml
                if ml >= ML_MASK:
                    if length_bytes(ml) > capacity - op:
                        return 0
                    dst[token] += ML_MASK
                    op = put_length(dst, op, ml - ML_MASK)
                else:
                    dst[token] += <uint8_t>ml
                anchor = ip
                if ip > mflimit:
                    done = True
                    break
                # fill the table 2 before the match's end, then test the end itself
                table[hash4(src + ip - 2)] = <uint16_t>(ip - 2)
                h = hash4(src + ip)
                match = table[h]
                table[h] = <uint16_t>ip
                if read32(src + match) != read32(src + ip):
                    break
                # a sequence with no literals
                if 3 > capacity - op:
                    return 0
                token = op
                dst[op] = 0
                op += 1
            if done:
                break
            ip += 1
            fwd_h = hash4(src + ip)               # ip <= n - 11
    # the last literals: token, length bytes, the bytes themselves
    lit = n - anchor
    if 1 + length_bytes(lit) + lit > capacity - op:
        return 0
    if lit >= RUN_MASK:
        dst[op] = RUN_MASK << 4
        op = put_length(dst, op + 1, lit - RUN_MASK)
    else:
        dst[op] = <uint8_t>(lit << 4)
        op += 1
    if lit:
        memcpy(dst + op, src + anchor, lit)
    return <int>(op + lit)


cdef int lz4k_bound(int n) noexcept nogil:
    if n < 0:
        return 0
    return n + n // 255 + 16


cdef int lz4k_compress_table(const unsigned char *src, int n, unsigned char *dst,
                             int capacity, uint16_t *table) noexcept nogil:
    return _compress(src, n, dst, capacity, table, 0)


cdef int lz4k_compress(const unsigned char *src, int n, unsigned char *dst,
                       int capacity) noexcept nogil:
    cdef uint16_t table[LZ4K_TABLE_ENTRIES]
    return _compress(src, n, dst, capacity, table, 0)


cdef inline int _compress_with(const unsigned char *src, int n, unsigned char *dst,
                               int capacity, uint16_t *table,
                               int search_slack) noexcept nogil:
    # the kernel's rules through the cimportable entry points themselves
    if search_slack == 0:
        return lz4k_compress_table(src, n, dst, capacity, table)
    return _compress(src, n, dst, capacity, table, search_slack)


cdef bytes _py_compress(const unsigned char[::1] data, int search_slack):
    cdef Py_ssize_t n = data.shape[0]
    cdef const unsigned char *src
    cdef uint16_t table[LZ4K_TABLE_ENTRIES]
    cdef unsigned char page_out[LZ4K_PAGE_BOUND]
    cdef unsigned char empty = 0
    cdef unsigned char *big
    cdef int cap, size
    cdef bytes out
    if n > LZ4K_MAX_INPUT:
        raise ValueError(f"{n} bytes: at most {LZ4K_MAX_INPUT} can be compressed as one block")
    src = &data[0] if n else &empty
    cap = lz4k_bound(<int>n)
    if cap <= LZ4K_PAGE_BOUND:
        # a page or less: into a stack buffer, then one bytes object of the right size
        with nogil:
            if search_slack == 0:
                size = lz4k_compress(src, <int>n, page_out, cap)
            else:
                size = _compress(src, <int>n, page_out, cap, table, search_slack)
        if size <= 0:
            raise RuntimeError("lz4k: a block did not fit in its bound")
        return PyBytes_FromStringAndSize(<char *>page_out, size)
    out = PyBytes_FromStringAndSize(NULL, cap)
    big = <unsigned char *>PyBytes_AS_STRING(out)
    with nogil:
        size = _compress_with(src, <int>n, big, cap, table, search_slack)
    if size <= 0:
        raise RuntimeError("lz4k: a block did not fit in its bound")
    return out[:size]


def compress(const unsigned char[::1] data not None) -> bytes:
    """`data` (bytes-like, contiguous, at most 65535 bytes) as one LZ4 block, exactly as
    the kernel's LZ4_compress_fast(..., acceleration 1) compresses it. The GIL is
    released around the compression."""
    return _py_compress(data, 0)


def _compress_as_182(const unsigned char[::1] data not None) -> bytes:
    """As compress(), with the search exit of LZ4 >= 1.8.2 (one candidate more near the
    end): for the tests, which hold it to Debian's liblz4 byte for byte."""
    return _py_compress(data, 1)


def _compress_into(const unsigned char[::1] src not None, unsigned char[::1] dst not None,
                   bint as_182=False) -> int:
    """For the tests: the C call itself, with capacity = len(dst). The block's size, or 0
    if it does not fit; nothing past dst[len(dst) - 1] is written."""
    cdef Py_ssize_t n = src.shape[0]
    cdef Py_ssize_t cap = dst.shape[0]
    cdef uint16_t table[LZ4K_TABLE_ENTRIES]
    cdef unsigned char empty = 0
    cdef const unsigned char *s = &src[0] if n else &empty
    cdef unsigned char *d = &dst[0] if cap else &empty
    cdef int size
    if n > LZ4K_MAX_INPUT or cap > 0x7FFFFFFF:
        raise ValueError("too large")
    with nogil:
        size = _compress_with(s, <int>n, d, <int>cap, table, 1 if as_182 else 0)
    return size


def bound(Py_ssize_t n) -> int:
    """LZ4_COMPRESSBOUND(n): the most an n-byte block can compress to."""
    if n < 0:
        raise ValueError("a negative size")
    return n + n // 255 + 16
