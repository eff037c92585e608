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


def _constants():
    """The word's layout and ids as the including module was compiled with them:
    device/common.py checks them against pagetable.py, its own and compressors.py's
    at import, so the compiled and Python code can never silently disagree on a bit."""
    return {"PAGE": PAGE, "KIND_MASK": KIND_MASK, "SAME": SAME, "DEVICE": DEVICE,
            "FALLBACK": FALLBACK, "PROMOTED": PROMOTED, "POISONED": POISONED,
            "BACKED": BACKED, "KINDS": KINDS, "ALGO_SHIFT": ALGO_SHIFT,
            "HUGE_BIT": HUGE_BIT, "HANDLE_SHIFT": HANDLE_SHIFT, "WIDE_WORD": WIDE_WORD,
            "INJECTED_POISON": INJECTED_POISON, "DIRTY": DIRTY, "NONE_ID": NONE_ID,
            "LZ4_ID": LZ4_ID, "INLINE_LIMIT": INLINE_LIMIT}
