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


