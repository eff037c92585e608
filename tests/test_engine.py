"""The compiled engine against the Python reference: same decisions, byte for byte.

Hypothesis drives both with one random sequence and demands identical handles,
bytes, counters and mm_stat lines after every step. The native engine must be
there: scripts/setup builds it, and a suite that silently fell back to the
reference would prove nothing about what users run.
"""

from __future__ import annotations

import contextlib
import functools
import os
import random
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cramfs import engine, parallel
from cramfs.backing import IoJob, run_inline
from cramfs.config import DeviceConfig
from cramfs.device import Device, DeviceError, encoder
from cramfs.pagetable import DEVICE, KIND_MASK
from cramfs.pool import ArenaPool
from cramfs.units import PAGE_SIZE

from .helpers import FakeClock
from .test_device_properties import payload
from .test_pool import sizes

P = PAGE_SIZE


def test_native_engine_is_built_and_the_default():
    assert engine.native_available(), "cramfs._zspool is not built: run scripts/setup"
    assert DeviceConfig().engine == "native"
    assert type(Device().pool).__name__ == "NativePool"
    assert type(Device(DeviceConfig(engine="python")).pool) is ArenaPool


def test_engine_must_exist():
    with pytest.raises(ValueError, match="engine must be one of"):
        DeviceConfig(engine="fast").check()


# ---------------------------------------------------------------- the pools alone

pool_ops = st.lists(st.one_of(
    st.tuples(st.just("put"), sizes, st.integers(0, 255)),
    st.tuples(st.just("free"), st.integers(0, 10**6)),
    st.tuples(st.just("compact")),
), max_size=150)


def _state(pool: engine.AnyPool) -> tuple:
    return (pool.used_bytes, pool.stored_bytes, pool.huge_pages, pool.pages_compacted,
            len(pool), pool.class_stats(), pool.metadata_bytes,
            [pool.cost(n) for n in (1, 100, 700, 2000, 3000, P)])


def _put_or_free(ref, nat, op: tuple, live: list[tuple[int, bytes]]) -> None:
    """A store or a free, on both pools: the same handle back from a store, the same
    charge from a free."""
    if op[0] == "put":
        blob = random.Random(op[1] * 256 + op[2]).randbytes(op[1])
        h = ref.put(blob)
        assert nat.put(blob) == h
        live.append((h, blob))
    elif op[0] == "free" and live:
        h, _ = live.pop(op[1] % len(live))
        assert ref.charge_of(h) == nat.charge_of(h)
        assert ref.free(h) == nat.free(h)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from([4, 8, 16]), st.sampled_from([None, 1, 500, 3000]), pool_ops)
def test_pools_make_identical_decisions(chain, threshold, seq):
    geo_max = ArenaPool(chain_size=chain).huge_threshold
    threshold = None if threshold is None else min(threshold, geo_max)
    ref = engine.make_pool("python", threshold, chain)
    nat = engine.make_pool("native", threshold, chain)
    live: list[tuple[int, bytes]] = []
    for op in seq:
        _put_or_free(ref, nat, op, live)
        if op[0] == "compact":
            moves = ref.compact()
            assert nat.compact() == moves
            live = [(h if (n := moves.get(h & ~0x1FFF)) is None else n | h & 0x1FFF, b)
                    for h, b in live]
        assert _state(nat) == _state(ref)
    for h, blob in live:
        assert nat.get(h) == ref.get(h) == blob
        assert nat.extent(h) == ref.extent(h)
    ref.close()
    nat.close()


@settings(max_examples=150, deadline=None)
@given(pool_ops)
def test_fallback_pools_make_identical_decisions(seq):
    ref, nat = engine.make_fallback_pool("python"), engine.make_fallback_pool("native")
    assert type(nat).__name__ == "NativeClassPool"
    live: list[tuple[int, bytes]] = []
    for op in seq:
        _put_or_free(ref, nat, op, live)
        assert (nat.used_bytes, nat.stored_bytes, len(nat)) == (
            ref.used_bytes, ref.stored_bytes, len(ref))
        assert [nat.cost(n) for n in (0, 1, 100, 3000, P, P + 1)] == [
            ref.cost(n) for n in (0, 1, 100, 3000, P, P + 1)]
    for h, blob in live:
        assert nat.get(h) == ref.get(h) == blob
    with pytest.raises(KeyError):
        nat.get(10**9)              # a handle never handed out
    ref.close()
    nat.close()


@settings(max_examples=300, deadline=None)
@given(st.integers(0, (1 << 64) - 1))
def test_native_pool_refuses_handles_it_did_not_hand_out(handle):
    """A wrong handle is a ValueError (the adapter's EIO), never a stray access."""
    pool = engine.make_pool("native")
    good = {pool.put(bytes([i + 1]) * (50 + 37 * i)) for i in range(40)}
    good.add(pool.put(random.Random(1).randbytes(P)))
    if handle & ~0x1FFF in {g & ~0x1FFF for g in good}:
        return                   # names a live object's slot: a valid, if wrong, handle
    with pytest.raises(ValueError):
        pool.free(handle)
    with contextlib.suppress(ValueError):
        pool.get(handle)         # may name a live object's slot; must not fault
    pool.close()


def test_a_closed_native_pool_refuses_everything():
    pool = engine.make_pool("native")
    h = pool.put(b"x" * 100)
    pool.close()
    with pytest.raises(ValueError):
        pool.get(h)
    with pytest.raises(ValueError):
        pool.put(b"y" * 100)
    pool.close()                 # twice is fine


def test_native_pool_rejects_bad_objects():
    pool = engine.make_pool("native")
    with pytest.raises(ValueError):
        pool.put(bytes(P + 1))
    with pytest.raises(TypeError):
        pool.put(None)
    with pytest.raises(ValueError):
        pool.charge(-1)
    pool.close()


# ---------------------------------------------------------------- the DRAM tier

class _Table:
    """A stand-in page table: the tier keys pages by their table's identity."""


tier_ops = st.lists(st.tuples(st.sampled_from(["put", "put", "put", "get", "peek", "pop",
                                               "oldest"]),
                              st.integers(0, 3), st.integers(-2, 300)), max_size=400)


def _tier_call(tier, op: str, key: tuple, value: tuple):
    try:
        if op == "put":
            return tier.put(key, value)
        if op == "oldest":
            return tier.oldest()
        return getattr(tier, op)(key)
    except KeyError:
        return KeyError


@settings(max_examples=200, deadline=None)
@given(tier_ops)
def test_the_native_tier_keeps_the_python_tiers_order(ops):
    """NativeTier against tier.DramTier: the same pages, values and LRU order after
    every step (its flat index probes, grows and deletes by backward shift; a few
    hundred keys of four tables make long probe runs)."""
    tables = [_Table() for _ in range(4)]
    ref, nat = engine.tier_class("python")(), engine.tier_class("native")()
    for n, (op, t, idx) in enumerate(ops):
        key = (tables[t], idx)
        value = (None, random.Random(n).randbytes(n % 50), n % 3, n % 2 == 0)
        assert _tier_call(nat, op, key, value) == _tier_call(ref, op, key, value), (n, op)
        assert len(nat) == len(ref)
    while (oldest := ref.oldest()) is not None:      # the whole order, oldest first
        assert nat.oldest() == oldest
        assert nat.pop(oldest) == ref.pop(oldest)
    assert nat.oldest() is None and len(nat) == 0


def test_the_native_tier_index_survives_churn():
    """Many thousand promotions and demotions, as a replay makes them: the index
    grows, and every page is still found until it is taken."""
    tables = [_Table() for _ in range(3)]
    nat = engine.tier_class("native")()
    live: dict[tuple, tuple] = {}
    rng = random.Random(7)
    for n in range(60_000):
        if live and (len(live) > 3000 or rng.random() < 0.4):
            key = nat.oldest()
            assert nat.pop(key) == live.pop(key)
        else:
            key = (tables[rng.randrange(3)], rng.randrange(1 << 20))
            value = (None, b"x", 0, False)
            nat.put(key, value)
            live[key] = value
        if n % 997 == 0:
            for k, v in live.items():
                assert nat.peek(k) == v
    assert len(nat) == len(live)


# ---------------------------------------------------------------- the request encoder

page_kinds = st.tuples(st.sampled_from(["zero", "same", "wide", "text", "random", "half"]),
                       st.integers(0, 10**6))


def _page(kind: str, seed: int) -> bytes:
    if kind == "wide":                       # a same-filled word no table word holds
        return random.Random(seed).randbytes(8) * (P // 8)
    if kind == "half":                       # compresses to around the huge threshold
        rnd = random.Random(seed)
        return rnd.randbytes(P - seed % 1500) + bytes(seed % 1500)
    return payload(kind, seed, P)


@settings(max_examples=200, deadline=None)
@given(st.lists(page_kinds, max_size=40), st.sampled_from([1, 2000, 3257, 3625, 3833]),
       st.integers(0, 3))
def test_native_request_encoder_matches_the_python_one(kinds, threshold, threads):
    data = b"".join(_page(*k) for k in kinds)
    native = engine.request_encoder("native", "lz4", threshold)
    assert native is not None
    python = encoder("lz4", threshold)
    want = [python(data[i:i + P]) for i in range(0, len(data), P)]
    assert native(data, 0, len(kinds)) == want
    one = engine.page_encoder("native", "lz4", threshold)
    assert one is not None
    assert [one(data[i:i + P]) for i in range(0, len(data), P)] == want
    assert parallel.map_parts(functools.partial(native, data), len(kinds), threads) == want
    if kinds:
        assert native(data, 1, len(kinds)) == want[1:]


def test_request_encoder_refuses_what_it_cannot_encode():
    native = engine.request_encoder("native", "lz4", 3625)
    assert native is not None
    with pytest.raises(ValueError):
        native(bytes(2 * P), 1, 3)
    with pytest.raises(ValueError):
        native(bytes(2 * P), 2, 1)
    assert engine.request_encoder("python", "lz4", 3625) is None
    assert engine.request_encoder("native", "zstd", 3625) is None


# ---------------------------------------------------------------- whole devices

FILE_PAGES = 16


_SETS = [("mode", "zswap"), ("mode", "direct"), ("dram", "0"), ("dram", "16K"),
         ("compressor", "zstd"), ("compressor", "lz4"), ("compressor", "none"),
         ("compressor", "lzo"), ("write_control", "off"), ("write_control", "on"),
         ("fallback", "writeback"), ("fallback", "host"), ("reclaim", "writeback"),
         ("reclaim", "off"), ("release_delay", "0"), ("release_delay", "20"),
         ("release_delay", "1000"), ("fallback_limit", "16K"), ("fallback_limit", "4M")]
# drawn by weight: uniform choice among so many kinds left writes too rare for the
# device to fill, and hypothesis's short lists rarely reached a writeback
_WEIGHTS = {"write": 8, "wenc": 2, "read": 3, "fault": 1, "truncate": 1, "discard": 1, "unlink": 1,
            "demote": 1, "compact": 1, "idle": 1, "recompress": 1, "writeback": 2, "wbpage": 2,
            "land": 2, "settle": 1, "set": 2, "time": 2, "inject": 2, "poison": 1,
            "clear": 1}


@st.composite
def _device_op(draw: st.DrawFn) -> tuple:
    name = draw(st.sampled_from([n for n, w in _WEIGHTS.items() for _ in range(w)]))
    if name == "write":
        return (name, draw(st.integers(0, FILE_PAGES * P - 1)),
                draw(st.sampled_from([P, 2 * P, 8 * P, 1, 100, 3 * P + 17])),
                draw(st.sampled_from(["zero", "same", "text", "random"])),
                draw(st.integers(0, 1000)))
    if name == "wenc":                        # a replay's write: pages already encoded
        return (name, draw(st.integers(0, FILE_PAGES - 1)), draw(st.integers(1, 6)),
                draw(st.sampled_from(["zero", "same", "text", "random"])),
                draw(st.integers(0, 1000)))
    if name in ("read", "fault"):
        return (name, draw(st.integers(0, FILE_PAGES * P - 1)), draw(st.sampled_from([P, 5 * P])))
    if name == "truncate":
        return (name, draw(st.integers(0, FILE_PAGES * P)))
    if name == "discard":
        return (name, draw(st.integers(0, FILE_PAGES)), draw(st.integers(0, 6)))
    if name == "unlink":
        return (name, draw(st.integers(0, 2)))
    if name == "demote":
        return (name, draw(st.integers(0, 4)))
    if name == "recompress":
        return (name, draw(st.sampled_from(["idle", "huge", "huge_idle"])))
    if name == "writeback":
        return (name, draw(st.sampled_from(["idle", "huge", "incompressible"])))
    if name == "wbpage":                      # left under writeback until a "land"
        return (name, draw(st.integers(0, 1000)), draw(st.integers(0, 2)))
    if name == "set":
        return (name, draw(st.sampled_from(_SETS)))
    if name == "time":                        # the devices' clock moves on (ms)
        return (name, draw(st.sampled_from([1, 10, 500, 2000])))
    if name == "inject":
        return (name, draw(st.sampled_from([("ratio", 1.0), ("ratio", 2.5), ("ratio", 8.0),
                                            ("physical", 6 * P), ("physical", 40 * P)])))
    if name == "poison":
        return (name, draw(st.integers(0, FILE_PAGES - 1)))
    return (name,)


device_ops = st.lists(_device_op(), min_size=5, max_size=60)


def _outcome(fn):
    try:
        return fn()
    except DeviceError as e:
        return ("error", e.errno)


def _apply(d: Device, ts: list, o: tuple, pending: list[IoJob]):
    """One operation on one device; its result, for comparing the two."""
    name, t = o[0], ts[0]
    if name == "write":
        t = ts[o[4] % 3]

        def write() -> int:
            n = d.write(t, o[1], payload(o[3], o[4], o[2]))
            run_inline(d.staged_job())      # acknowledged once in the backing file
            return n

        return _outcome(write)
    if name == "wenc":
        data = payload(o[3], o[4], o[2] * P)
        pages = [data[i:i + P] for i in range(0, len(data), P)]

        def write_encoded() -> int:
            return d.write_encoded(t, o[1] * P, [d.encode(p) for p in pages],
                                   pages.__getitem__)

        return _outcome(write_encoded)
    if name == "writeback":
        return _outcome(lambda: run_inline(d.writeback(o[1])))
    if name == "wbpage":
        # the k-th page the device holds compressed in one of the files, if any
        t = ts[o[2]]
        held = [i for i, w in t.items() if w & KIND_MASK == DEVICE]
        if not held:
            return None
        job = _outcome(lambda: d.writeback("page", (t, held[o[1] % len(held)])))
        if isinstance(job, IoJob):
            pending.append(job)
        return job is None
    if name == "land":
        return _outcome(lambda: run_inline(pending.pop(0))) if pending else None
    if name == "settle":
        return d.settle()
    if name == "read":
        return _outcome(lambda: d.read(t, o[1], o[2]))
    if name == "fault":                       # a replay's read: no bytes
        return _outcome(lambda: d.fault(t, o[1], o[2]))
    if name == "truncate":
        return _outcome(lambda: d.truncate(t, o[1]))
    if name == "discard":
        return d.discard(t, o[1], o[2])
    if name == "unlink":
        d.drop(ts[o[1]])
        ts[o[1]] = d.table(f"g{o[1]}")
        return None
    if name == "demote":
        return d.demote(o[1])
    if name == "compact":
        return d.compact()
    if name == "time":
        d.clock.advance(o[1] / 1000)          # type: ignore[attr-defined]
        return d.tick()
    if name == "inject":
        kind, value = o[1]
        if kind == "ratio":
            return _outcome(lambda: d.inject_ratio(value))
        return _outcome(lambda: d.inject_physical(value))
    if name == "poison":
        return _outcome(lambda: d.inject_poison(t, o[1]))
    if name == "clear":
        return d.clear_faults()
    if name == "idle":
        return d.mark_idle(None)
    if name == "recompress":
        return d.recompress(o[1])
    d.set(*o[1])
    return None


@settings(max_examples=int(os.environ.get("CRAMFS_EXAMPLES", "120")),
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([8 * P, 24 * P, 256 * P]), st.sampled_from(["refuse", "poison"]),
       st.sampled_from(["host", "writeback"]), st.sampled_from(["off", "writeback"]),
       st.sampled_from([(8, -1), (4, -1), (16, -1), (8, 2000), (8, 3000)]),
       device_ops)
def test_devices_on_either_engine_are_indistinguishable(physical, overflow, fallback, reclaim,
                                                         geometry, ops):
    """The whole device on both engines, with every setting that changes a page's path:
    write control, fallback, overflow, reclaim, the DRAM tier in both modes,
    writeback, release_delay (on a clock the test moves), injected ratio, capacity
    and poison, the huge threshold and the chain size."""
    chain, threshold = geometry
    with tempfile.TemporaryDirectory() as tmp:
        backing = []
        for name in engine.ENGINES:
            backing.append(f"{tmp}/{name}")
            with open(backing[-1], "wb") as f:
                f.truncate(64 * P)
        devs = [Device(DeviceConfig(advertised=1 << 22, physical=physical, overflow=overflow,
                                    engine=name, backing_dev=path, fallback=fallback,
                                    reclaim=reclaim, chain_size=chain,
                                    huge_threshold=threshold),
                       clock=lambda: 0.0, monotonic=FakeClock())  # events alike
                for name, path in zip(engine.ENGINES, backing, strict=True)]
        _indistinguishable(devs, ops)


def _indistinguishable(devs: list[Device], ops: list[tuple]) -> None:
    tables = [[d.table(f"f{i}") for i in range(3)] for d in devs]
    pendings: list[list[IoJob]] = [[] for _ in devs]
    seen: list[list[tuple]] = [[] for _ in devs]
    for d, log in zip(devs, seen, strict=True):
        d.set_recomp_algorithm("zstd")
        # every transition, as the slot store reports it: the same words (handles
        # included) in the same order, for the same cause
        d.store.hook = lambda t, i, old, new, cause, log=log: log.append(
            (t.name, i, old, new, cause))
    for o in ops:
        results = []
        for d, ts, pending in zip(devs, tables, pendings, strict=True):
            results.append(_apply(d, ts, o, pending))
        assert results[0] == results[1], o
        stats = [d.stats() for d in devs]
        for s in stats:
            s.pop("engine")
        assert stats[0] == stats[1], o
        assert devs[0].mm_stat() == devs[1].mm_stat()
        assert devs[0].events.text() == devs[1].events.text()
        assert seen[0] == seen[1], o
    for d, ts, pending in zip(devs, tables, pendings, strict=True):
        while pending:
            _outcome(lambda: run_inline(pending.pop()))      # noqa: B023
        for t in ts:
            d.drop(t)
        d.settle()
        d.release_pending(float("inf"))       # release_delay's frees, whatever the clock
        assert d.physical_used == 0 and not any(d.pages), "every file dropped, nothing held"
        assert d.backing is not None and d.backing.count == 0
        d.close()


def test_every_compiled_module_imports():
    """No silent fallback: each module setup.py builds imports here (a stale or half-built
    one, say linked without liblz4, would otherwise send every test to the reference)."""
    import importlib
    import re
    from pathlib import Path
    names = re.findall(r'Extension\("(cramfs\._\w+)"',
                       (Path(__file__).parents[1] / "setup.py").read_text())
    assert {"cramfs._slotstore", "cramfs._devpaths", "cramfs._dramtier"} <= set(names)
    for name in names:
        importlib.import_module(name)


def test_the_compiled_constants_are_the_python_ones():
    """The word and handle layouts the .pyx files hold as DEFs are checked at import (the
    modules imported, so they agree); a difference is an ImportError naming it."""
    from cramfs._slotstore import _constants
    assert _constants()["HANDLE_SHIFT"] == 6
    with pytest.raises(ImportError, match="HUGE_BIT"):
        engine.check_constants("_slotstore", {**_constants(), "HUGE_BIT": 64}, _constants())


def test_a_failed_tier_put_leaves_the_native_tier_as_it_was():
    """NativeTier.put takes its data apart before it places a node: data that is not an
    Encoded raises, and no index entry or slot is left naming nothing."""
    if not engine.native_available():
        pytest.fail("the native engine is not built")
    tier = engine.NativeTier()
    t = object()
    tier.put((t, 1), (None, b"x", 0, False))
    for bad in [(None, b"y", 0), (None, b"y", "lz4", False), None]:
        with pytest.raises((ValueError, TypeError)):
            tier.put((t, 2), bad)
        assert len(tier) == 1 and tier.peek((t, 1)) == (None, b"x", 0, False)
        with pytest.raises(KeyError):
            tier.peek((t, 2))
    tier.put((t, 2), (None, b"z", 0, True))
    assert len(tier) == 2 and tier.peek((t, 2)) == (None, b"z", 0, True)
