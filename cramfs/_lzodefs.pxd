# LZO1X's numbers, shared by the kernel-exact codec's modules (_lzokc compresses,
# _lzokd decompresses, _lzok is their Python interface): the work memory, the
# kernel's return codes, the worst-case bound, and lib/lzo/lzodefs.h's values (the
# format's, not its text). Declarations only: nothing here is a module of its own.

cdef enum:
    # LZO1X_1_MEM_COMPRESS: the hash table, 2^13 16-bit offsets
    LZOK_WORKMEM = 16384
    # the kernel's return codes (include/linux/lzo.h)
    LZOK_E_ERROR = -1
    LZOK_E_INPUT_OVERRUN = -4
    LZOK_E_OUTPUT_OVERRUN = -5
    LZOK_E_LOOKBEHIND_OVERRUN = -6
    LZOK_E_INPUT_NOT_CONSUMED = -8


cdef inline int lzok_bound(int n) noexcept nogil:
    """lzo1x_worst_compress(n): the largest block `n` bytes can give, lzo-rle's
    2-byte header included. (Callers keep n below 2^31 * 16 / 17 - 69.)"""
    return n + (n >> 4) + 64 + 3 + 2


# lib/lzo/lzodefs.h's values
cdef enum:
    D_BITS = 13
    D_SIZE = 1 << 13            # entries: D_SIZE * 2 bytes == LZOK_WORKMEM
    D_MASK = (1 << 13) - 1
    M2_MAX_LEN = 8
    M3_MAX_LEN = 33
    M4_MAX_LEN = 9
    M2_MAX_OFFSET = 0x0800
    M3_MAX_OFFSET = 0x4000
    M4_MAX_OFFSET_V0 = 0xbfff
    M4_MAX_OFFSET_V1 = 0xbffe
    M3_MARKER = 32
    M4_MARKER = 16
    MIN_ZERO_RUN = 4
    MAX_ZERO_RUN = 2047 + 4
    RLE_VERSION = 1
    TAIL = 20                   # the bytes at a chunk's end never probed
