"""Which engine keeps a device's compressed pages: compiled, or the Python reference.

An engine is a pool (`pool.Pool`), a page table, a DRAM tier, a slot store
(device/slots.py's interface), a request encoder and the page paths: on the
native engine `_devpaths.NativePaths`, the compiled common case of the device's
page paths, which hands every other case to the reference `device.paths.PagePaths`.
The two engines make the same decisions (the property tests hold them to identical handles, bytes
and counters), so the choice changes speed only. `native` is the compiled
pool (`_zspool.pyx`), page table (`_pagetable.pyx`) and, for lz4, the
whole-request encoder (`_pagecodec.pyx`), all built by `pip install`;
`python` is `pool.ArenaPool`, `pagetable.PageTable` and `device.encoder()`
page by page, which need no compiler and are what the native ones are checked
against. A mount asks for one with
`-o engine=`; by default it gets the native one if it was built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .compressors import COMPRESSORS
from .pagetable import PageTable
from .pool import ArenaPool, ClassPool
from .tier import DramTier
from .zsgeometry import DEFAULT_CHAIN_SIZE

ENGINES: tuple[str, ...] = ("native", "python")

try:
    from ._devpaths import NativePaths
    from ._dramtier import NativeTier
    from ._pagecodec import Lz4PageEncoder, encode_lz4_pages
    from ._pagetable import NativeTable
    from ._slotstore import NativeSlotStore
    from ._zspool import NativeClassPool, NativePool
except ModuleNotFoundError as e:  # not built: a checkout used without `pip install`
    if not (e.name or "").startswith("cramfs._"):
        raise                # a missing dependency of a built module: say so
    NativePaths = None  # type: ignore[assignment,misc]
    NativeSlotStore = None  # type: ignore[assignment,misc]
    NativeTier = None  # type: ignore[assignment,misc]
    NativePool = None  # type: ignore[assignment,misc]
    NativeClassPool = None  # type: ignore[assignment,misc]
    NativeTable = None  # type: ignore[assignment,misc]
    encode_lz4_pages = None  # type: ignore[assignment]
    Lz4PageEncoder = None  # type: ignore[assignment,misc]

AnyPool = ArenaPool | NativePool     # what make_pool returns: the interface and then some


def check_constants(module: str, compiled: dict[str, int], python: dict[str, int]) -> None:
    """Constants a compiled module holds as DEFs must be the Python side's: checked at
    import, so a change made on one side only fails at once, loudly."""
    differ = {k: (compiled.get(k), v) for k, v in python.items() if compiled.get(k) != v}
    if differ or compiled.keys() != python.keys():
        raise ImportError(f"cramfs.{module} was compiled with other constants than the "
                          f"Python code has (compiled, Python): {differ}; rebuild it "
                          "(scripts/setup)")


if NativePool is not None:
    from . import pool as _pool
    from ._zspool import _constants as _zspool_constants
    check_constants("_zspool", dict(_zspool_constants()), {
        "PAGE": _pool.PAGE_SIZE, "PAGE_SHIFT": _pool.PAGE_SHIFT, "HUGE": _pool.HUGE,
        "SIZE_BITS": _pool._SIZE_BITS, "IDX_BITS": _pool._IDX_BITS, "ZS_BITS": _pool._ZS_BITS,
        "IDX_SHIFT": _pool._IDX_SHIFT, "ZS_SHIFT": _pool._ZS_SHIFT,
        "CLS_SHIFT": _pool._CLS_SHIFT})


def native_available() -> bool:
    return NativePool is not None


def default_engine() -> str:
    return "native" if native_available() else "python"


def check(engine: str) -> None:
    """Raise ValueError if `engine` cannot run here."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine == "native" and not native_available():
        raise ValueError("engine=native: the compiled engine is not built "
                         "(scripts/setup, or pip install ., builds it)")


def make_pool(engine: str, huge_threshold: int | None = None,
              chain_size: int = DEFAULT_CHAIN_SIZE) -> AnyPool:
    check(engine)
    if engine == "native":
        return NativePool(huge_threshold, chain_size)
    return ArenaPool(huge_threshold, chain_size)


def make_fallback_pool(engine: str) -> ClassPool | NativeClassPool:
    """The pool a device on `engine` keeps refused pages in (fallback=host)."""
    check(engine)
    return NativeClassPool() if engine == "native" else ClassPool()


def table_class(engine: str) -> type[PageTable]:
    """The page table a device on `engine` gives each file."""
    check(engine)
    return NativeTable if engine == "native" else PageTable


def tier_class(engine: str) -> type[DramTier[Any, Any]]:
    """The DRAM tier a device on `engine` keeps its promoted pages in."""
    check(engine)
    return NativeTier if engine == "native" else DramTier


def make_store(engine: str, pool: Any, fallback: Any, tier: Any, counters: Any,
               monotonic: Callable[[], float], now: Callable[[], int]) -> Any:
    """The slot store a device on `engine` changes its slots through."""
    check(engine)
    if engine == "native":
        return NativeSlotStore(pool, fallback, tier, counters, monotonic, now)
    from .device.slots import SlotStore
    return SlotStore(pool, fallback, tier, counters, monotonic, now)


def native_paths(dev: Any, reference: Any) -> Any:
    """The compiled page paths of `dev`, handing their uncommon cases to `reference`."""
    check("native")
    return NativePaths(dev, reference)


# (data, first page, stop page) -> the Encoded tuples of those whole pages
RequestEncoder = Callable[[bytes, int, int], list[tuple[bytes | None, bytes, int, bool]]]


EncodedPage = tuple[bytes | None, bytes, int, bool]      # device.Encoded


def page_encoder(engine: str, compressor: str,
                 huge_threshold: int) -> Callable[[bytes], EncodedPage] | None:
    """The native one-page encoder for these settings, or None where device.encoder()'s
    Python one is used (the python engine; compressors other than lz4)."""
    if engine != "native" or compressor != "lz4" or Lz4PageEncoder is None:
        return None
    return Lz4PageEncoder(COMPRESSORS["lz4"].ident, COMPRESSORS["none"].ident, huge_threshold)


def request_encoder(engine: str, compressor: str, huge_threshold: int) -> RequestEncoder | None:
    """The native whole-request encoder for these settings, or None where pages are
    encoded one by one in Python (the python engine; compressors other than lz4)."""
    if engine != "native" or compressor != "lz4" or encode_lz4_pages is None:
        return None
    ident, none_id = COMPRESSORS["lz4"].ident, COMPRESSORS["none"].ident

    def encode(data: bytes, lo: int, hi: int) -> list[tuple[bytes | None, bytes, int, bool]]:
        return encode_lz4_pages(data, lo, hi, ident, none_id, huge_threshold)

    return encode
