"""Which engine keeps a device's compressed pages: compiled, or the Python reference.

The two implement one `pool.Pool` interface and make the same decisions (the
property tests hold them to identical handles, bytes and counters), so the
choice changes speed only. `native` is the compiled pool (`_zspool.pyx`,
built by `pip install`); `python` is `pool.ArenaPool`, which needs no
compiler and is what the native one is checked against. A mount asks for one
with `-o engine=`; by default it gets the native one if it was built.
"""

from __future__ import annotations

from .pool import ArenaPool
from .zsgeometry import DEFAULT_CHAIN_SIZE

ENGINES = ("native", "python")

try:
    from ._zspool import NativePool
except ImportError:          # not built: a checkout used without `pip install`
    NativePool = None  # type: ignore[assignment,misc]

AnyPool = ArenaPool | NativePool     # what make_pool returns: the interface and then some


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
