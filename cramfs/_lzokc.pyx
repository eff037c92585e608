# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compressor of the kernel-exact LZO1X-1 codec: zram's `lzo` and `lzo-rle`.

What: lzok_compress, one core for both formats. `lzo` is the kernel's
lzo1x_1_compress, `lzo-rle` its lzorle1x_1_compress: the same LZO1X-1 stream
behind a 2-byte header (17, then bitstream version 1) with one more instruction,
a run of 4 to 2051 zero bytes, spelt as an M4 copy whose distance bits are all
ones (a distance real copies may not use there). The decompressor is _lzokd's,
the Python interface _lzok's, the format's numbers _lzodefs.pxd's.

Why: zram stores a page in the size its compressor gives, and that size decides
the page's zsmalloc class, whether it is huge, and so mm_stat. python-lzo's
level 1 (liblzo2's lzo1x_1) gives other sizes on most pages, and nothing
packaged writes lzo-rle at all. So this core follows lib/lzo/lzo1x_compress.c
rule for rule:
- a table of 2^13 16-bit offsets, cleared for every chunk; an entry never
  written points at the chunk's first byte, and a match found there counts;
- chunks of 0xc000 bytes (0xbfff for lzo-rle), the literals still pending at a
  chunk's end (`ti`) carried into the next; a chunk whose length plus those
  literals is under 32 bytes (so any input under 32 bytes) is not searched at
  all: the kernel's wrap-around guard, ptr + (pending + length) / 32 <= ptr,
  holds there, and the rest goes out as literals;
- after a probe that found nothing, a step of 1 + (bytes since the last
  instruction) / 32; the last 20 bytes of a chunk are never probed;
- match lengths counted 8 bytes at a time, as x86-64 and arm64 kernels count
  them: a match stops growing once that count reaches 20 bytes before the
  chunk's end, whatever follows;
- lzo-rle: wherever a probe lands on 4 zero bytes, a zero run (not past that
  same limit, at most 2051 bytes), and no table entry for it; an M4 copy of
  261..264 bytes whose distance bits could read as the run marker is cut to 260.
tests/test_lzok.py holds it to zram's compr_data_size page for page and to
liblzo2's lzo1x_1_15_compress (identical output) byte for byte.

Safety: the compressor never reads outside [src, src + n) nor writes outside
[dst, dst + capacity): it returns -1 when the block would be longer.
"""

from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy, memset

from ._lzodefs cimport (D_BITS, D_MASK, LZOK_WORKMEM, M2_MAX_LEN, M2_MAX_OFFSET,
                        M3_MARKER, M3_MAX_LEN, M3_MAX_OFFSET, M4_MARKER, M4_MAX_LEN,
                        M4_MAX_OFFSET_V0, M4_MAX_OFFSET_V1, MAX_ZERO_RUN, MIN_ZERO_RUN,
                        RLE_VERSION, TAIL)

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* the kernel's get_unaligned_le32 */
    static inline uint32_t lzok_le32(const unsigned char *p) {
        return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16)
            | ((uint32_t)p[3] << 24);
    }
    static inline uint64_t lzok_load64(const unsigned char *p) {
        uint64_t v;
        memcpy(&v, p, 8);
        return v;
    }
    /* x: two 8-byte loads xor-ed, not 0: how many leading bytes (memory order) agree */
    static inline unsigned lzok_same_bytes(uint64_t x) {
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        return (unsigned)__builtin_clzll(x) >> 3;
    #else
        return (unsigned)__builtin_ctzll(x) >> 3;
    #endif
    }
    """
    uint32_t lzok_le32(const unsigned char *p) noexcept nogil
    uint64_t lzok_load64(const unsigned char *p) noexcept nogil
    unsigned lzok_same_bytes(uint64_t x) noexcept nogil


cdef inline uint8_t *_literals(uint8_t *op, uint8_t *lo, uint8_t *op_end,
                               const uint8_t *ii, size_t t, int state_offset,
                               bint spare) noexcept nogil:
    """`t` (> 0) literals from `ii` after the instruction that ends at `op`: 1..3
    go into that instruction's state bits, more get a length of their own. The
    new end, or NULL if they would pass op_end. `spare`: the input goes on for 15
    bytes at least after the literals (inside a chunk: they end before ip_end), so
    they may be copied 16 bytes at a time when the output has as much room."""
    cdef size_t tt, k
    cdef uint8_t *end
    if t <= 3:
        if op - lo < -state_offset:
            return NULL         # no instruction to carry them (the kernel never asks)
        (op + state_offset)[0] |= <uint8_t>t
    elif t <= 18:
        if <size_t>(op_end - op) < 1 + t:
            return NULL
        op[0] = <uint8_t>(t - 3)
        op += 1
    else:
        tt = t - 18
        k = (tt - 1) // 255                 # zero bytes standing for 255 each
        if <size_t>(op_end - op) < 2 + k + t:
            return NULL
        memset(op, 0, 1 + k)
        op += 1 + k
        op[0] = <uint8_t>(tt - 255 * k)
        op += 1
    if spare and <size_t>(op_end - op) >= t + 16:
        end = op + t
        while True:
            memcpy(op, ii, 16)              # (a fixed size: two 8-byte moves, no call)
            op += 16
            ii += 16
            if op >= end:
                return end
    if <size_t>(op_end - op) < t:
        return NULL
    memcpy(op, ii, t)
    return op + t


cdef inline uint8_t *_long_length(uint8_t *op, uint8_t *op_end, uint8_t opcode,
                                  size_t rest) noexcept nogil:
    """An M3/M4 opcode with length field 0 and `rest` (> 0) in extra bytes, plus
    room for the 2 distance bytes after it; NULL if that would pass op_end."""
    cdef size_t k = (rest - 1) // 255
    if <size_t>(op_end - op) < 4 + k:
        return NULL
    op[0] = opcode
    memset(op + 1, 0, k)
    op += 1 + k
    op[0] = <uint8_t>(rest - 255 * k)
    return op + 1


cdef int _compress_chunk(const uint8_t *inp, size_t in_len, uint8_t **out, uint8_t *lo,
                         uint8_t *op_end, size_t *tp, uint16_t *table, int *state_offset,
                         bint rle) noexcept nogil:
    """lzo1x_1_do_compress: one chunk (in_len > TAIL) of at most M4_MAX_OFFSET + 1
    bytes. `tp` carries the literals still pending before the chunk in and those
    pending at its end out. 0, or -1 if the output would pass op_end."""
    cdef const uint8_t *ip_end = inp + in_len - TAIL
    cdef const uint8_t *ip = inp
    cdef const uint8_t *ii = inp
    cdef const uint8_t *m_pos = NULL
    cdef const uint8_t *ir
    cdef const uint8_t *limit
    cdef uint8_t *op = out[0]
    cdef size_t ti = tp[0]
    cdef size_t t, m_len, m_off, run, h
    cdef uint32_t dv
    cdef uint64_t v
    cdef bint cut

    if ti < 4:
        ip += 4 - ti
    ip += 1 + ((ip - ii) >> 5)
    while ip < ip_end:
        dv = lzok_le32(ip)
        run = 0
        if dv == 0 and rle:
            # a zero run: up to MAX_ZERO_RUN bytes, not past ip_end (4 at least)
            limit = ip_end if ip_end - ip <= MAX_ZERO_RUN else ip + MAX_ZERO_RUN + 1
            ir = ip + 4
            while limit - ir >= 8:
                v = lzok_load64(ir)
                if v != 0:
                    ir += lzok_same_bytes(v)
                    break
                ir += 8
            while ir < limit and ir[0] == 0:
                ir += 1
            run = <size_t>(ir - ip)
            if run > MAX_ZERO_RUN:
                run = MAX_ZERO_RUN
        else:
            h = (<uint32_t>(dv * <uint32_t>0x1824429d) >> (32 - D_BITS)) & D_MASK
            m_pos = inp + table[h]
            table[h] = <uint16_t>(ip - inp)
            if dv != lzok_le32(m_pos):
                ip += 1 + ((ip - ii) >> 5)          # no match: skip ahead
                continue

        # the literals since the last instruction (some maybe from the last chunk)
        ii -= ti
        ti = 0
        t = <size_t>(ip - ii)
        if t != 0:
            op = _literals(op, lo, op_end, ii, t, state_offset[0], True)
            if op == NULL:
                return -1

        if run != 0:
            ip += run
            run -= MIN_ZERO_RUN
            if op_end - op < 4:
                return -1
            # M4, H = 1, distance bits all ones; the run in L and a 4th byte
            op[0] = <uint8_t>(M4_MARKER | 8 | (run & 7))
            op[1] = 0xfc
            op[2] = 0xff
            op[3] = <uint8_t>(run >> 3)
            op += 4
            state_offset[0] = -3
            ii = ip
            continue

        # the match's length, 8 bytes at a time; cut once it reaches ip_end
        m_len = 4
        cut = False
        v = lzok_load64(ip + m_len) ^ lzok_load64(m_pos + m_len)
        if v == 0:
            while True:
                m_len += 8
                v = lzok_load64(ip + m_len) ^ lzok_load64(m_pos + m_len)
                if ip + m_len >= ip_end:
                    cut = True
                    break
                if v != 0:
                    break
        if not cut:
            m_len += lzok_same_bytes(v)

        m_off = <size_t>(ip - m_pos)
        ip += m_len
        if m_len <= M2_MAX_LEN and m_off <= M2_MAX_OFFSET:
            m_off -= 1
            if op_end - op < 2:
                return -1
            op[0] = <uint8_t>(((m_len - 1) << 5) | ((m_off & 7) << 2))
            op[1] = <uint8_t>(m_off >> 3)
            op += 2
        else:
            if m_off <= M3_MAX_OFFSET:
                m_off -= 1
                if m_len <= M3_MAX_LEN:
                    if op_end - op < 3:
                        return -1
                    op[0] = <uint8_t>(M3_MARKER | (m_len - 2))
                    op += 1
                else:
                    op = _long_length(op, op_end, M3_MARKER, m_len - M3_MAX_LEN)
            else:
                m_off -= 0x4000
                if m_len <= M4_MAX_LEN:
                    if op_end - op < 3:
                        return -1
                    op[0] = <uint8_t>(M4_MARKER | ((m_off >> 11) & 8) | (m_len - 2))
                    op += 1
                else:
                    if rle and (m_off & 0x403f) == 0x403f and 261 <= m_len <= 264:
                        # its length byte and distance could read as a zero run
                        ip -= m_len - 260
                        m_len = 260
                    op = _long_length(op, op_end, M4_MARKER | ((m_off >> 11) & 8),
                                      m_len - M4_MAX_LEN)
            if op == NULL:
                return -1
            op[0] = <uint8_t>(m_off << 2)       # room checked with the opcode
            op[1] = <uint8_t>(m_off >> 6)
            op += 2
        state_offset[0] = -2
        ii = ip

    out[0] = op
    tp[0] = <size_t>((inp + in_len) - (ii - ti))
    return 0


cdef int lzok_compress(const unsigned char *src, int n, unsigned char *dst, int capacity,
                       bint rle, void *wrkmem) noexcept nogil:
    cdef uint8_t *op = dst
    cdef uint8_t *op_end
    cdef uint8_t *data_start
    cdef const uint8_t *ip = src
    cdef size_t left, ll, t = 0, max_chunk
    cdef int state_offset = -2
    if n < 0 or capacity < 0:
        return -1
    op_end = dst + capacity
    if rle:
        if capacity < 2:
            return -1
        op[0] = 17                  # a version-0 stream starts so only when empty
        op[1] = RLE_VERSION
        op += 2
        max_chunk = M4_MAX_OFFSET_V1 + 1
    else:
        max_chunk = M4_MAX_OFFSET_V0 + 1
    data_start = op
    left = <size_t>n
    while left > TAIL:
        ll = left if left < max_chunk else max_chunk
        if t + ll < 32:
            # the kernel's guard against address wrap-around, ptr + (t + ll) / 32 <= ptr,
            # also holds when t + ll < 32: such a short rest is all literals
            break
        memset(wrkmem, 0, LZOK_WORKMEM)
        if _compress_chunk(ip, ll, &op, dst, op_end, &t, <uint16_t *>wrkmem, &state_offset,
                           rle) < 0:
            return -1
        ip += ll
        left -= ll
    t += left
    if t > 0:
        if op == data_start and t <= 238:
            if op_end - op < 1 + <Py_ssize_t>t:
                return -1
            op[0] = <uint8_t>(17 + t)
            memcpy(op + 1, src + n - t, t)
            op += 1 + t
        else:
            op = _literals(op, dst, op_end, src + n - t, t, state_offset, False)
            if op == NULL:
                return -1
    if op_end - op < 3:
        return -1
    op[0] = M4_MARKER | 1           # end of stream: M4, distance 0
    op[1] = 0
    op[2] = 0
    return <int>(op + 3 - dst)
