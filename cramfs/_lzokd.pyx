# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The decompressor of the kernel-exact LZO1X-1 codec: zram's `lzo` and `lzo-rle`.

What: lzok_decompress, one decoder for both formats (a block that starts with
lzo-rle's 2-byte header, 17 then bitstream version 1, may hold its zero runs).
The compressor is _lzokc's, the Python interface _lzok's, the format's numbers
_lzodefs.pxd's.

Safety: it is written from the format, not from lzo1x_decompress_safe's credit
scheme: every byte is checked against the input's end before it is read, every
literal run, zero run and copy against the output's end, every back-reference
against the output's start, so no input, however hostile, makes it touch memory
outside the two buffers. It still accepts exactly the streams the kernel's
decoder accepts and gives the same error codes (the same checks in the same
order, including the 3 bytes a well-formed stream always has left after any
literals; compared with the kernel's own code, built in user space, on millions
of mutated blocks).
"""

from libc.stdint cimport uint8_t
from libc.string cimport memcpy, memset

from ._lzodefs cimport (LZOK_E_ERROR, LZOK_E_INPUT_NOT_CONSUMED, LZOK_E_INPUT_OVERRUN,
                        LZOK_E_LOOKBEHIND_OVERRUN, LZOK_E_OUTPUT_OVERRUN, M2_MAX_OFFSET,
                        M3_MAX_LEN, M4_MAX_LEN, MIN_ZERO_RUN)


cdef inline const uint8_t *_extension(const uint8_t *ip, const uint8_t *ip_end,
                                      size_t *add) noexcept nogil:
    """A length's extra bytes: zeros worth 255 each, then a non-zero byte. Past
    them, or NULL if the input ends first."""
    cdef const uint8_t *start = ip
    while ip < ip_end and ip[0] == 0:
        ip += 1
    if ip >= ip_end:
        return NULL
    add[0] = <size_t>(ip - start) * 255 + ip[0]
    return ip + 1


cdef int lzok_decompress(const unsigned char *src, int n, unsigned char *dst,
                         int capacity) noexcept nogil:
    cdef const uint8_t *ip = src
    cdef const uint8_t *ip_end
    cdef const uint8_t *m_pos
    cdef uint8_t *op = dst
    cdef uint8_t *op_end
    cdef size_t t, length, dist, add, w
    cdef size_t state = 0, nxt = 4
    cdef uint8_t version = 0
    cdef bint run
    if n < 3 or capacity < 0:
        return LZOK_E_INPUT_OVERRUN if n < 3 else LZOK_E_OUTPUT_OVERRUN
    ip_end = src + n
    op_end = dst + capacity
    if n >= 5 and ip[0] == 17:
        version = ip[1]
        ip += 2

    # the first byte may be a literal run of its own (at least 3 bytes are left)
    if ip[0] > 17:
        t = ip[0] - 17
        ip += 1
        if t < 4:
            nxt = t
        else:
            if <size_t>(op_end - op) < t:
                return LZOK_E_OUTPUT_OVERRUN
            if <size_t>(ip_end - ip) < t + 3:
                return LZOK_E_INPUT_OVERRUN
            memcpy(op, ip, t)
            op += t
            ip += t
            state = 4
            nxt = 4                 # no trailing literals to copy below

    while True:
        if nxt < 4:
            # the 0..3 literals an instruction's state bits ask for; a well-formed
            # stream always has 3 more bytes after them (its end marker at least)
            if <size_t>(ip_end - ip) < nxt + 3:
                return LZOK_E_INPUT_OVERRUN
            if <size_t>(op_end - op) < nxt:
                return LZOK_E_OUTPUT_OVERRUN
            memcpy(op, ip, nxt)
            op += nxt
            ip += nxt
            state = nxt
        nxt = 4

        if ip >= ip_end:
            return LZOK_E_INPUT_OVERRUN
        t = ip[0]
        ip += 1
        run = False
        if t < 16:
            if state == 0:
                # a run of 4 or more literals
                if t == 0:
                    ip = _extension(ip, ip_end, &add)
                    if ip == NULL:
                        return LZOK_E_INPUT_OVERRUN
                    t = 15 + add
                t += 3
                if <size_t>(op_end - op) < t:
                    return LZOK_E_OUTPUT_OVERRUN
                if <size_t>(ip_end - ip) < t + 3:     # (3 more: see above)
                    return LZOK_E_INPUT_OVERRUN
                memcpy(op, ip, t)
                op += t
                ip += t
                state = 4
                continue
            if ip >= ip_end:
                return LZOK_E_INPUT_OVERRUN
            nxt = t & 3
            if state != 4:          # 2 bytes within 1 KiB
                dist = 1 + (t >> 2) + (<size_t>ip[0] << 2)
                length = 2
            else:                   # 3 bytes 2..3 KiB back
                dist = 1 + M2_MAX_OFFSET + (t >> 2) + (<size_t>ip[0] << 2)
                length = 3
            ip += 1
        elif t >= 64:               # M2: 3..8 bytes within 2 KiB
            if ip >= ip_end:
                return LZOK_E_INPUT_OVERRUN
            nxt = t & 3
            dist = 1 + ((t >> 2) & 7) + (<size_t>ip[0] << 3)
            length = (t >> 5) + 1
            ip += 1
        elif t >= 32:               # M3: within 16 KiB
            length = (t & 31) + 2
            if length == 2:
                ip = _extension(ip, ip_end, &add)
                if ip == NULL:
                    return LZOK_E_INPUT_OVERRUN
                length = M3_MAX_LEN + add
            if ip_end - ip < 2:
                return LZOK_E_INPUT_OVERRUN
            w = ip[0] | (<size_t>ip[1] << 8)
            ip += 2
            dist = 1 + (w >> 2)
            nxt = w & 3
        else:                       # M4: 16..48 KiB back, a zero run, or the end
            if ip_end - ip < 2:
                return LZOK_E_INPUT_OVERRUN
            w = ip[0] | (<size_t>ip[1] << 8)
            if version != 0 and (w & 0xfffc) == 0xfffc and (t & 0xf8) == 0x18:
                if ip_end - ip < 3:
                    return LZOK_E_INPUT_OVERRUN
                length = ((t & 7) | (<size_t>ip[2] << 3)) + MIN_ZERO_RUN
                if <size_t>(op_end - op) < length:
                    return LZOK_E_OUTPUT_OVERRUN
                memset(op, 0, length)
                op += length
                nxt = w & 3
                ip += 3
                continue
            length = (t & 7) + 2
            if length == 2:
                ip = _extension(ip, ip_end, &add)
                if ip == NULL:
                    return LZOK_E_INPUT_OVERRUN
                length = M4_MAX_LEN + add
                if ip_end - ip < 2:
                    return LZOK_E_INPUT_OVERRUN
                w = ip[0] | (<size_t>ip[1] << 8)
            ip += 2
            dist = ((t & 8) << 11) + (w >> 2)
            nxt = w & 3
            if dist == 0:           # the end marker: M4, length 3, distance 0
                if length != 3:
                    return LZOK_E_ERROR
                return <int>(op - dst) if ip == ip_end else LZOK_E_INPUT_NOT_CONSUMED
            dist += 0x4000

        # a copy from `dist` bytes back, overlapping itself if dist < length
        if dist > <size_t>(op - dst):
            return LZOK_E_LOOKBEHIND_OVERRUN
        if <size_t>(op_end - op) < length:
            return LZOK_E_OUTPUT_OVERRUN
        m_pos = op - dist
        if dist >= length:
            memcpy(op, m_pos, length)
            op += length
        else:
            while length > 0:
                op[0] = m_pos[0]
                op += 1
                m_pos += 1
                length -= 1
