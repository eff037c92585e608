"""zsmalloc's size classes, derived as mm/zsmalloc.c derives them at zs_create_pool.

The numbers users compare with zram (mem_used_total, the huge threshold, the
per-class table) all follow from four rules, reproduced here exactly:

- classes are 16 bytes apart from 32 bytes up to a page (255 of them);
- each class's zspage is a chain of 1 to CONFIG_ZSMALLOC_CHAIN_SIZE pages, the
  chain that wastes the fewest bytes (`calculate_zspage_chain_size`; a power
  of two gets one page);
- walking down from the page-sized class, a class with the same pages per zspage
  and objects per zspage as the one above it is merged into it (`can_merge`),
  so its objects take the larger class's size;
- zs_malloc adds ZS_HANDLE_SIZE to every object before it looks up the class,
  and the huge class size (zram's threshold for storing a page raw) is the
  first class from the top that packs more than one object into a chain of
  more than one page, less ZS_HANDLE_SIZE - 1.

With a chain of 8 (this kernel's) pages of 3625 bytes and up are stored raw;
4 gives 3257 and 16 gives 3833.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from .units import PAGE_SIZE

ZS_HANDLE_SIZE = 8
ZS_MIN_ALLOC_SIZE = 32
ZS_SIZE_CLASS_DELTA = 16
ZS_SIZE_CLASSES = (PAGE_SIZE - ZS_MIN_ALLOC_SIZE + ZS_SIZE_CLASS_DELTA - 1) \
    // ZS_SIZE_CLASS_DELTA + 1
CHAIN_SIZES = range(4, 17)          # what CONFIG_ZSMALLOC_CHAIN_SIZE may be
DEFAULT_CHAIN_SIZE = 8


@dataclass(frozen=True)
class SizeClass:
    index: int              # zsmalloc's class index: size == 32 + 16 * index
    size: int
    pages_per_zspage: int
    objs_per_zspage: int


@dataclass(frozen=True)
class Geometry:
    chain_size: int
    classes: tuple[SizeClass, ...]    # the distinct classes, smallest first
    slot: tuple[int, ...]             # class index (0-254) -> position in `classes`
    huge_class_size: int              # an object this long or longer is stored raw

    def class_of(self, length: int) -> SizeClass:
        """The class zs_malloc(length) allocates from (handle bytes included)."""
        return self.classes[self.slot[class_index(length + ZS_HANDLE_SIZE)]]


def class_index(size: int) -> int:
    """get_size_class_index()."""
    idx = 0
    if size > ZS_MIN_ALLOC_SIZE:
        idx = (size - ZS_MIN_ALLOC_SIZE + ZS_SIZE_CLASS_DELTA - 1) // ZS_SIZE_CLASS_DELTA
    return min(ZS_SIZE_CLASSES - 1, idx)


def chain_pages(size: int, chain_size: int) -> int:
    """calculate_zspage_chain_size(): the chain length that wastes the fewest bytes."""
    if size & (size - 1) == 0:
        return 1
    best, least = 1, PAGE_SIZE * chain_size
    for pages in range(1, chain_size + 1):
        waste = pages * PAGE_SIZE % size
        if waste < least:
            best, least = pages, waste
    return best


@functools.cache
def geometry(chain_size: int = DEFAULT_CHAIN_SIZE) -> Geometry:
    """zs_create_pool()'s walk from the largest class down."""
    if chain_size not in CHAIN_SIZES:
        raise ValueError(f"chain_size must be {CHAIN_SIZES[0]}-{CHAIN_SIZES[-1]}")
    owners: list[SizeClass] = []
    slot_owner: list[SizeClass] = []        # for each class index, the class it uses
    huge = 0
    prev: SizeClass | None = None
    for i in range(ZS_SIZE_CLASSES - 1, -1, -1):
        size = min(ZS_MIN_ALLOC_SIZE + i * ZS_SIZE_CLASS_DELTA, PAGE_SIZE)
        pages = chain_pages(size, chain_size)
        objs = pages * PAGE_SIZE // size
        if pages != 1 and objs != 1 and not huge:
            huge = size - (ZS_HANDLE_SIZE - 1)
        if prev is not None and (prev.pages_per_zspage, prev.objs_per_zspage) == (pages, objs):
            slot_owner.append(prev)             # merged into the larger class
            continue
        prev = SizeClass(i, size, pages, objs)
        owners.append(prev)
        slot_owner.append(prev)
    owners.reverse()
    slot_owner.reverse()
    position = {c.index: n for n, c in enumerate(owners)}
    return Geometry(chain_size, tuple(owners), tuple(position[c.index] for c in slot_owner),
                    huge)
