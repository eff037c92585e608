"""The zsmalloc-like arena pool against a dict model."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cramfs import engine
from cramfs.pool import PAGE_SIZE, REUSE_CACHE_BYTES, rebase
from cramfs.procfs import status_bytes

# every pool test runs on both engines: the reference and the compiled one
ENGINES = pytest.mark.parametrize("engine_name", engine.ENGINES)

sizes = st.one_of(st.integers(1, 64), st.integers(64, 3624), st.integers(3625, PAGE_SIZE))
ops = st.lists(st.one_of(
    st.tuples(st.just("put"), sizes, st.integers(0, 255)),
    st.tuples(st.just("free"), st.integers(0, 10**6)),
    st.tuples(st.just("compact")),
), max_size=120)


def check(pool: engine.AnyPool, model: dict[int, bytes]) -> None:
    assert len(pool) == len(model)
    for h, blob in model.items():
        assert pool.get(h) == blob
    assert pool.stored_bytes == sum(map(len, model.values()))
    ext = sorted((*pool.extent(h), h) for h in model)
    for a, b in itertools.pairwise(ext):
        assert a[1] <= b[0], f"objects {a[2]} and {b[2]} overlap"
    held = sum(s.pages_used for s in pool.class_stats()) * PAGE_SIZE
    assert pool.used_bytes == held
    charges = sum(pool.charge(len(b)) for b in model.values())
    assert charges <= pool.used_bytes


@ENGINES
@settings(max_examples=200, deadline=None)
@given(seq=ops)
def test_pool_matches_model(engine_name, seq):
    pool = engine.make_pool(engine_name)
    model: dict[int, bytes] = {}
    compacted = 0
    for op in seq:
        if op[0] == "put":
            half = op[1] // 2
            blob = bytes([op[2]]) * half + random.Random(op[1]).randbytes(op[1] - half)
            h = pool.put(blob)
            assert h not in model
            model[h] = blob
        elif op[0] == "free" and model:
            h = sorted(model)[op[1] % len(model)]
            assert pool.free(h) == pool.charge(len(model.pop(h)))
        elif op[0] == "compact":
            before, pages_before = pool.used_bytes, pool.pages_compacted
            moves = pool.compact()
            freed = pool.pages_compacted - pages_before
            compacted += freed
            assert pool.used_bytes == before - freed * PAGE_SIZE
            model = {rebase(h, moves): b for h, b in model.items()}
            for s in pool.class_stats():
                assert s.freeable_pages < s.pages_per_zspage or s.size == PAGE_SIZE
        check(pool, model)
    for h in list(model):
        pool.free(h)
    assert pool.used_bytes == 0 and pool.stored_bytes == 0
    assert pool.pages_compacted == compacted
    pool.close()


@ENGINES
def test_compact_frees_sparse_zspages(engine_name):
    pool = engine.make_pool(engine_name)
    hs = [pool.put(bytes([i % 250 + 1]) * 1000) for i in range(400)]
    full = pool.used_bytes
    for h in hs[::2]:
        pool.free(h)
    assert pool.used_bytes == full, "half-empty zspages are still held"
    moves = pool.compact()
    freed = pool.pages_compacted
    assert moves and freed > 0 and pool.used_bytes == full - freed * PAGE_SIZE
    assert pool.used_bytes <= full // 2 + 4 * PAGE_SIZE
    for i, h in enumerate(hs):
        if i % 2:
            assert pool.get(rebase(h, moves)) == bytes([i % 250 + 1]) * 1000
    pool.close()


@ENGINES
def test_freed_zspages_go_back_to_the_kernel(engine_name):
    pool = engine.make_pool(engine_name)
    n = 3 * REUSE_CACHE_BYTES // PAGE_SIZE                 # huge pages: a page each
    hs = [pool.put(random.Random(i).randbytes(PAGE_SIZE)) for i in range(n)]
    assert pool.used_bytes == n * PAGE_SIZE
    rss_full = _shmem_kib()
    for h in hs:
        pool.free(h)
    assert pool.used_bytes == 0
    # all but the reuse cache is punched out of the memfd
    assert _shmem_kib() <= rss_full - (n * PAGE_SIZE - REUSE_CACHE_BYTES) // 1024 + 1024
    pool.compact()                                           # and compaction drops that too
    assert _shmem_kib() <= rss_full - n * PAGE_SIZE // 1024 + 1024
    pool.close()


def _shmem_kib() -> int:
    return status_bytes("self", "RssShmem") // 1024      # the pool's memfd pages




# ---------------------------------------------------------------- handles the pool refuses

def _filled(engine_name: str, n: int = 40) -> tuple[engine.AnyPool, dict[int, bytes]]:
    pool = engine.make_pool(engine_name)
    rng = random.Random(n)
    model = {}
    for i in range(n):
        blob = bytes([i % 251]) * rng.choice([40, 300, 1500, 3000, PAGE_SIZE])
        model[pool.put(blob)] = blob
    return pool, model


def _state(pool: engine.AnyPool) -> tuple[object, ...]:
    return (len(pool), pool.used_bytes, pool.stored_bytes, pool.class_stats(),
            pool.metadata_bytes)


@ENGINES
@pytest.mark.parametrize("size", [40, 1500, PAGE_SIZE])
def test_a_double_free_is_refused_and_changes_nothing(engine_name, size):
    """zsmalloc's live tag: a second free raises, and the next two puts still get two
    different objects (absorbed, it would hand out one slot twice)."""
    pool, model = _filled(engine_name)
    h = pool.put(b"x" * size)
    pool.free(h)
    before = _state(pool)
    with pytest.raises(ValueError, match=r"not live|no live object"):
        pool.free(h)
    with pytest.raises(ValueError):
        pool.get(h)                      # a read of a freed object, too
    assert _state(pool) == before
    a, b = pool.put(b"a" * size), pool.put(b"b" * size)
    assert a != b and pool.get(a) == b"a" * size and pool.get(b) == b"b" * size
    model.update({a: b"a" * size, b: b"b" * size})
    check(pool, model)


@ENGINES
def test_stale_and_forged_handles_are_refused(engine_name):
    pool, model = _filled(engine_name)
    h = next(iter(model))
    moves_before = dict(model)
    victims = [h ^ (1 << 13), h + (1 << 13) * 500, (h & ~0x1FFF) | 4095]   # other objects
    for bad in victims:
        if bad in model:
            continue
        before = _state(pool)
        with pytest.raises(ValueError):
            pool.free(bad)
        assert _state(pool) == before
    # after compaction the old handle of a moved object names nothing live
    for k in list(model)[::2]:
        pool.free(k)
        del model[k]
    moves = pool.compact()
    assert moves, "something moved"
    old = next(o for o in moves_before if (o & ~0x1FFF) in moves)
    with pytest.raises(ValueError):
        pool.get(old)
    model = {rebase(k, moves): v for k, v in model.items()}
    check(pool, model)


@ENGINES
@pytest.mark.parametrize("nth", [1, 2, 3, 4])
def test_a_failed_window_leaves_the_pool_as_it_was(engine_name, nth):
    """The memfd cannot grow (no memory): the put fails with nothing counted, and the
    pool works on once memory is back."""
    pool = engine.make_pool(engine_name)
    model: dict[int, bytes] = {}
    pool.inject_failure(nth)
    fails = 0
    for i in range(3000):                # a window per zspage length: 1, 3, 5 and 8 pages
        blob = bytes([i % 251]) * (PAGE_SIZE, 40, 300, 2500)[i % 4]
        try:
            model[pool.put(blob)] = blob
        except OSError:
            fails += 1
            check(pool, model)
    assert fails == 1
    check(pool, model)


@ENGINES
def test_failed_punches_keep_runs_cached_and_compaction_consistent(engine_name):
    """A hole that cannot be punched leaves its run resident (cached), never lost; the
    free or the compaction that gave it back still completes."""
    pool, model = _filled(engine_name, 3000)
    for k in list(model)[::3]:
        pool.inject_failure(1)           # every give-back that punches fails
        pool.free(k)
        del model[k]
    check(pool, model)
    pool.inject_failure(1)
    moves = pool.compact()               # flush's punch fails: compaction still lands
    model = {rebase(k, moves): v for k, v in model.items()}
    check(pool, model)
    for k in list(model):
        pool.free(k)
    assert pool.used_bytes == 0 and len(pool) == 0
    pool.inject_failure(0)
    pool.compact()


@ENGINES
def test_a_device_whose_table_names_a_freed_object_fails_that_request_only(engine_name):
    """A page-table word left naming an object freed behind the device's back (a bug
    the live tag exists for): reading or freeing that page raises, the pool is left as
    it was, and the other pages read back intact."""
    from cramfs.config import DeviceConfig
    from cramfs.device import Device
    from cramfs.pagetable import handle_of

    from .helpers import text_page
    dev = Device(DeviceConfig(advertised=1 << 22, physical=1 << 22, dram=0,
                              engine=engine_name))
    t = dev.table("f")
    for i in range(4):
        dev.write(t, i * PAGE_SIZE, text_page(i))
    dev.pool.free(handle_of(t.get(1)))            # the bug: freed under the table
    before = _state(dev.pool)
    with pytest.raises(ValueError):
        dev.read(t, PAGE_SIZE, PAGE_SIZE)
    with pytest.raises(ValueError):
        dev.pool.free(handle_of(t.get(1)))
    assert _state(dev.pool) == before
    assert dev.read(t, 2 * PAGE_SIZE, PAGE_SIZE) == text_page(2)
