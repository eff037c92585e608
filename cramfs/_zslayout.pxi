# The page and handle layout, for each of the compiled pool's modules (_zsmemory,
# _zsclass, _zspool) to `include`: a DEF cannot be cimported, and one definition
# included everywhere means the modules cannot disagree. _zspool._constants()
# reports it, and engine.py checks it against pool.py's (zsclass.py) at import.
# handle: class 8 bits | zspage 26 bits | object index 10 bits | size 13 bits
DEF PAGE_SHIFT = 12
DEF PAGE = 4096
DEF HUGE = 255
DEF SIZE_BITS = 13
DEF IDX_BITS = 10
DEF ZS_BITS = 26
DEF IDX_SHIFT = 13
DEF ZS_SHIFT = 23
DEF CLS_SHIFT = 49
