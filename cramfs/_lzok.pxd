# The kernel-exact LZO1X-1 codec (_lzok.pyx), for other compiled modules: the same
# block, byte for byte, as zram's `lzo` (rle false) and `lzo-rle` (rle true).
# Cimport it from here. The numbers and lzok_bound are _lzodefs.pxd's, lzok_compress
# is _lzokc's and lzok_decompress _lzokd's; their contracts are in those .pxd files.

from ._lzodefs cimport (LZOK_E_ERROR, LZOK_E_INPUT_NOT_CONSUMED, LZOK_E_INPUT_OVERRUN,
                        LZOK_E_LOOKBEHIND_OVERRUN, LZOK_E_OUTPUT_OVERRUN, LZOK_WORKMEM,
                        lzok_bound)
from ._lzokc cimport lzok_compress
from ._lzokd cimport lzok_decompress
