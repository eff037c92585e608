# The page-table word's layout and the ids the compiled store and paths test for, as
# compile-time constants. pagetable.py, device/common.py and compressors.py hold the
# same values; device/common.py compares them with each module's _constants() at import.
DEF PAGE = 4096
DEF KIND_MASK = 7
DEF SAME = 1
DEF DEVICE = 2
DEF FALLBACK = 3
DEF PROMOTED = 4
DEF POISONED = 5
DEF BACKED = 6
DEF KINDS = 7
DEF ALGO_SHIFT = 3
DEF HUGE_BIT = 32
DEF HANDLE_SHIFT = 6
DEF WIDE_WORD = 64
DEF INJECTED_POISON = 13        # pack(POISONED, algo=1)
DEF DIRTY = -1
DEF NONE_ID = 2
DEF LZ4_ID = 0
DEF INLINE_LIMIT = 1 << 56
