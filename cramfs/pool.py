"""Where compressed page data physically lives, and what it really costs.

The device talks to a pool through `Pool` only. `used_bytes` is the honest
physical usage including allocator overhead (zram's mem_used_total);
`stored_bytes` is the sum of object lengths (compr_data_size).

`ArenaPool` is zsmalloc's design in Python:

- zsmalloc's size classes for a chain size (zsgeometry.py): 16 bytes apart,
  merged where zsmalloc merges them, looked up with the handle's 8 bytes
  added; an object at or above the huge threshold gets a page of its own;
- each class carves *zspages*, runs of 1 to chain-size contiguous pages, so
  objects straddle page boundaries; the next object goes where zsmalloc
  would put it (the fullest zspage first), and compaction moves objects as
  zs_compact does, so the same stores and frees give zram's numbers;
- a handle *is* the object's location (class, zspage, index, size), as
  zsmalloc's obj value is, so a stored page costs no pool metadata beyond its
  share of its zspage's 10 bytes; `compact()` moves objects and returns the
  old-to-new handle map for the owner to apply;
- `used_bytes` = pages held by zspages and huge pages × 4096.

It is three layers, one module each, so that each is read (and held to its
compiled twin) on its own: this module is the pool, which routes an object to
its class or to a page of its own and keeps the counts; zsclass.py is one size
class, its zspages and the handle layout; zsmemory.py is the memory, one memfd
carved into runs of pages. The names other modules use from the lower two are
re-exported here.
"""

from __future__ import annotations

from typing import Protocol

# `name as name`: re-exported, not used here (engine.py checks the compiled handle
# layout against pool._SIZE_BITS and the rest; the tests take the memory's sizes from here)
from .units import PAGE_SHIFT, PAGE_SIZE
from .zsclass import (
    _CLS_SHIFT,
    _HUGE_MASK,
    _IDX_MASK,
    _IDX_SHIFT,
    _SIZE_MASK,
    _ZS_MASK,
    _ZS_SHIFT,
    HUGE,
    ClassStats,
    _SizeClass,
)
from .zsclass import _IDX_BITS as _IDX_BITS
from .zsclass import _SIZE_BITS as _SIZE_BITS
from .zsclass import _ZS_BITS as _ZS_BITS
from .zsclass import HANDLE_BITS as HANDLE_BITS
from .zsgeometry import CHAIN_SIZES, DEFAULT_CHAIN_SIZE, ZS_SIZE_CLASSES, geometry
from .zsmemory import POPULATE_BYTES as POPULATE_BYTES
from .zsmemory import REUSE_CACHE_BYTES as REUSE_CACHE_BYTES
from .zsmemory import WINDOW_BYTES as WINDOW_BYTES
from .zsmemory import _Memory, _Runs

MAX_ZSPAGE_PAGES = max(CHAIN_SIZES)     # the longest zspage any chain size makes


def class_size(size: int, chain_size: int = DEFAULT_CHAIN_SIZE) -> int:
    """The bytes an object of `size` occupies in zsmalloc: its merged class's size,
    handle included (a page for a page)."""
    return geometry(chain_size).class_of(min(size, PAGE_SIZE)).size


# class_size() for every object length at the default chain size: the fallback pool
# charges every page it takes and frees, and a refusal storm sends it thousands a second
DEFAULT_CLASS_SIZE = [class_size(n) for n in range(PAGE_SIZE + 1)]


class Pool(Protocol):
    @property
    def used_bytes(self) -> int: ...

    @property
    def stored_bytes(self) -> int: ...

    def cost(self, size: int) -> int:
        """How much `used_bytes` would grow if an object of `size` were stored now."""
        ...

    def charge(self, size: int) -> int:
        """The bytes an object of `size` occupies (its class size)."""
        ...

    def charge_of(self, handle: int) -> int:
        """The charge of a stored object."""
        ...

    def put(self, blob: bytes) -> int: ...

    def get(self, handle: int) -> bytes: ...

    def free(self, handle: int) -> int:
        """Free an object; return its charge."""
        ...

    def compact(self) -> dict[int, int]:
        """Move objects to free memory; return {old handle: new handle}."""
        ...

    def close(self) -> None:
        """Give the memory back; the pool is unusable after."""
        ...


class ClassPool:
    """Objects kept whole as Python bytes, each charged its size class.

    The host-memory side of fallback: few pages, no need for arenas."""

    def __init__(self) -> None:
        self._objects: dict[int, bytes] = {}
        self._next = 1
        self.used_bytes = 0
        self.stored_bytes = 0

    def cost(self, size: int) -> int:
        return DEFAULT_CLASS_SIZE[min(size, PAGE_SIZE)]

    def charge(self, size: int) -> int:
        return DEFAULT_CLASS_SIZE[min(size, PAGE_SIZE)]

    def charge_of(self, handle: int) -> int:
        return self.charge(len(self._objects[handle]))

    def put(self, blob: bytes) -> int:
        handle = self._next
        self._next += 1
        self._objects[handle] = blob
        self.used_bytes += self.charge(len(blob))
        self.stored_bytes += len(blob)
        return handle

    def get(self, handle: int) -> bytes:
        return self._objects[handle]

    def free(self, handle: int) -> int:
        blob = self._objects.pop(handle)
        charge = self.charge(len(blob))
        self.used_bytes -= charge
        self.stored_bytes -= len(blob)
        return charge

    def __len__(self) -> int:
        return len(self._objects)

    def compact(self) -> dict[int, int]:
        return {}

    def close(self) -> None:
        self._objects.clear()


class ArenaPool:
    def __init__(self, huge_threshold: int | None = None,
                 chain_size: int = DEFAULT_CHAIN_SIZE) -> None:
        geo = geometry(chain_size)
        self.geometry = geo
        self.huge_threshold = geo.huge_class_size if huge_threshold is None else huge_threshold
        if not 1 <= self.huge_threshold <= geo.huge_class_size:
            raise ValueError(f"huge_threshold must be 1-{geo.huge_class_size} with "
                             f"chain_size {chain_size}")
        self._mem = _Memory()
        self._runs: dict[int, _Runs] = {}
        # the classes an object below the huge threshold can land in
        top = geo.class_of(self.huge_threshold - 1).size if self.huge_threshold > 1 else 0
        specs = [c for c in geo.classes if c.size <= top]
        self._classes = [_SizeClass(cid, spec, self._runs_of(spec.pages_per_zspage))
                         for cid, spec in enumerate(specs)]
        assert len(self._classes) < HUGE
        by_index = {c.size: c for c in self._classes}
        # huge objects own a page: the handle holds its page number, no zspage state
        self._huge_runs = self._runs_of(1)
        self._huge_alive = bytearray()  # a live bit per page number (see _SizeClass.alive)
        # length -> class, precomputed: the lookup is on every store
        # (with huge_threshold 1 there are no classes at all: everything is huge)
        self._by_size: list[_SizeClass | None] = [
            by_index.get(geo.class_of(n).size) if n < self.huge_threshold else None
            for n in range(PAGE_SIZE + 1)]
        self.stored_bytes = 0
        self.used_bytes = 0             # pages held by zspages and huge pages, in bytes
        self.huge_pages = 0
        self.pages_compacted = 0

    def _runs_of(self, k: int) -> _Runs:
        if k not in self._runs:
            self._runs[k] = _Runs(self._mem, k)
        return self._runs[k]

    def _huge_live(self, page: int) -> bool:
        return page >> 3 < len(self._huge_alive) and bool(
            self._huge_alive[page >> 3] >> (page & 7) & 1)

    def _set_huge(self, page: int, live: bool) -> None:
        if page >> 3 >= len(self._huge_alive):       # in 8-byte words, as the native pool
            self._huge_alive.extend(bytes(((page >> 6) + 1) * 8 - len(self._huge_alive)))
        if live:
            self._huge_alive[page >> 3] |= 1 << (page & 7)
        else:
            self._huge_alive[page >> 3] &= ~(1 << (page & 7)) & 0xFF

    def _offset(self, handle: int) -> int:
        """Where a live object is; ValueError for a handle that names none (freed,
        never made, or of another size), as the native pool refuses it."""
        cid = handle >> _CLS_SHIFT
        size = handle & _SIZE_MASK
        if cid == HUGE:
            page = handle >> _IDX_SHIFT & _HUGE_MASK
            if not self._huge_live(page) or size > PAGE_SIZE:
                raise ValueError(f"bad pool handle {handle:#x}: no live object")
            return page << PAGE_SHIFT
        if cid >= len(self._classes):
            raise ValueError(f"bad pool handle {handle:#x}")
        c = self._classes[cid]
        zs, idx = handle >> _ZS_SHIFT & _ZS_MASK, handle >> _IDX_SHIFT & _IDX_MASK
        if not c.is_live(zs, idx) or size > c.size:
            raise ValueError(f"bad pool handle {handle:#x}: no live object")
        return (c.page[zs] << PAGE_SHIFT) + idx * c.size

    # ------------------------------------------------------------ Pool

    def charge(self, size: int) -> int:
        c = self._by_size[size]
        return c.size if c is not None else PAGE_SIZE

    def charge_of(self, handle: int) -> int:
        return self.charge(handle & _SIZE_MASK)

    def cost(self, size: int) -> int:
        c = self._by_size[size]
        if c is None:
            return PAGE_SIZE
        return 0 if c.has_room else c.k * PAGE_SIZE

    def put(self, blob: bytes) -> int:
        size = len(blob)
        c = self._by_size[size]
        if c is None:
            page = self._huge_runs.take()
            self._mem.mm[page << PAGE_SHIFT:(page << PAGE_SHIFT) + size] = blob  # type: ignore[index]
            self._set_huge(page, True)
            self.used_bytes += PAGE_SIZE
            self.stored_bytes += size
            self.huge_pages += 1
            return HUGE << _CLS_SHIFT | page << _IDX_SHIFT | size
        grows = not c.has_room
        zs, idx, off = c.alloc()          # may fail (no memory): nothing counted yet
        if grows:
            self.used_bytes += c.k * PAGE_SIZE
        self._mem.mm[off:off + size] = blob                  # type: ignore[index]
        self.stored_bytes += size
        return c.cid << _CLS_SHIFT | zs << _ZS_SHIFT | idx << _IDX_SHIFT | size

    def get(self, handle: int) -> bytes:
        off = self._offset(handle)
        return self._mem.mm[off:off + (handle & _SIZE_MASK)]     # type: ignore[index]

    def free(self, handle: int) -> int:
        """Free a live object; ValueError (nothing changed) for any other handle."""
        self._offset(handle)              # checks that it names a live object
        cid = handle >> _CLS_SHIFT
        if cid == HUGE:
            page = handle >> _IDX_SHIFT & _HUGE_MASK
            self._set_huge(page, False)
            self.stored_bytes -= handle & _SIZE_MASK
            self.used_bytes -= PAGE_SIZE
            self.huge_pages -= 1
            self._huge_runs.give_back(page)
            return PAGE_SIZE
        c = self._classes[cid]
        self.stored_bytes -= handle & _SIZE_MASK
        if c.release(handle >> _ZS_SHIFT & _ZS_MASK, handle >> _IDX_SHIFT & _IDX_MASK):
            self.used_bytes -= c.k * PAGE_SIZE
        return c.size

    def __len__(self) -> int:
        return sum(c.live for c in self._classes) + self.huge_pages

    def extent(self, handle: int) -> tuple[int, int]:
        """[start, stop) of an object in the pool, for checking that none overlap."""
        off = self._offset(handle)
        return off, off + (handle & _SIZE_MASK)

    # ------------------------------------------------------------ compaction and stats

    def compact(self) -> dict[int, int]:
        """zs_compact(): per class, largest first, move objects from the sparsest
        zspages into the fullest, as zsmalloc does; then give back the memory that
        holds nothing. Returns {old handle: new handle} (without the size bits);
        the owner rewrites its references (the device does, in its page tables)."""
        moves: dict[int, int] = {}
        mm = self._mem.mm
        for c in reversed(self._classes):
            if mm is not None and c.freeable():
                freed = c.compact(mm, moves)
                self.used_bytes -= freed * PAGE_SIZE
                self.pages_compacted += freed
        for runs in self._runs.values():
            runs.flush()
        return moves

    def class_stats(self) -> list[ClassStats]:
        out = [c.stats() for c in self._classes if c.zspages]
        if self.huge_pages:
            out.append(ClassStats(ZS_SIZE_CLASSES - 1, PAGE_SIZE, 1, self.huge_pages,
                                  self.huge_pages, self.huge_pages, 0))
        return out

    @property
    def metadata_bytes(self) -> int:
        """Bytes of bookkeeping the pool keeps outside the pages it holds."""
        return sum(c.metadata_bytes for c in self._classes) + sum(
            r.metadata_bytes for r in self._runs.values()) + len(self._huge_alive)

    def inject_failure(self, n: int) -> None:
        """Tests: the n-th next memory operation (a window carved, a hole punched)
        fails with ENOMEM; 0 clears it."""
        self._mem.fail_in = n

    def close(self) -> None:
        self._mem.close()


def rebase(handle: int, moves: dict[int, int]) -> int:
    """The handle an object has after compaction (moves are keyed without size)."""
    new = moves.get(handle & ~_SIZE_MASK)
    return handle if new is None else new | handle & _SIZE_MASK
