"""The slot store's two implementations, step by step.

device/slots.py's SlotStore (the reference) and _slotstore.NativeSlotStore get the
same random transitions, on tables of their own engine, and must end every step
with the same words (handles included), the same counts, the same delayed frees,
marks and DRAM tier, and must report the same transitions to their hook. Then
what both must refuse: a stale handle, a double free, a pool that fails halfway.
The ASan build runs this file (scripts/test-asan).
"""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cramfs import engine as engines
from cramfs.compressors import COMPRESSORS
from cramfs.device.common import Counters
from cramfs.pagetable import HANDLE_SHIFT, KIND_MASK, KINDS
from cramfs.units import PAGE_SIZE as P

from .helpers import FakeClock

ENGINES = ("python", "native")
NONE_ID = COMPRESSORS["none"].ident
LZ4_ID = COMPRESSORS["lz4"].ident
TABLE_PAGES = 24


class Rig:
    """One store, its tables and what it reported."""

    def __init__(self, engine: str, chain: int = 8) -> None:
        if engine == "native" and not engines.native_available():
            pytest.fail("the native engine is not built: run scripts/setup")
        self.clock = FakeClock()
        self.counters = Counters()
        self.store = engines.make_store(
            engine, engines.make_pool(engine, None, chain), engines.make_fallback_pool(engine),
            engines.tier_class(engine)(), self.counters, self.clock,
            lambda: int(self.clock()) % 1000 + 1)
        self.tables = [engines.table_class(engine)(f"f{i}") for i in range(2)]
        self.freed: list[int] = []            # backing-file blocks given back
        self.events: list[tuple] = []
        self.store.free_block = self.freed.append
        self.store.hook = lambda t, i, old, new, cause: self.events.append(
            (t.name, i, old, new, cause))

    def state(self) -> tuple:
        s = self.store
        oldest = s.oldest()
        return (list(s.pages), s.huge_pages, s.charged, s.extra, s.injected_poison,
                s.mem_used_max, s.pending, s.pending_bytes, s.used, s.pool.stored_bytes,
                s.fallback.used_bytes, s.promoted(), s.busy,
                None if oldest is None else (oldest[0].name, oldest[1]),
                sorted((t.name, i, b) for (t, i), b in s.marks.items()),
                self.counters.huge_pages_since, s.words.live,
                [(t.name, list(t.items()), t.count, t.stored_pages, t.physical_bytes,
                  t.promoted_pages, dict(t.extra)) for t in self.tables],
                self.freed, self.events)

    def check_counts(self) -> None:
        """The counts are the slots': recounted from the tables."""
        by_kind = [0] * KINDS
        for t in self.tables:
            for _, w in t.items():
                by_kind[w & KIND_MASK] += 1
        assert list(self.store.pages)[1:] == by_kind[1:]
        assert self.store.charged == sum(t.physical_bytes for t in self.tables)
        assert self.store.promoted() == self.store.pages[4]


def _blob(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


slots = st.tuples(st.integers(0, 1), st.integers(0, TABLE_PAGES - 1))
store_ops = st.lists(st.one_of(
    st.tuples(st.just("same"), slots, st.sampled_from(["zero", "small", "wide"]),
              st.integers(0, 9)),
    st.tuples(st.just("device"), slots, st.sampled_from([1, 40, 700, 2000, 3000, P]),
              st.sampled_from([0, 0, 0, 100, 4096]), st.integers(0, 9)),
    st.tuples(st.just("fallback"), slots, st.sampled_from([30, 900, P]), st.integers(0, 9)),
    st.tuples(st.just("promote"), slots, st.integers(0, 9)),
    st.tuples(st.just("backed"), slots, st.integers(0, 500)),
    st.tuples(st.just("poison"), slots, st.booleans()),
    st.tuples(st.just("release"), slots),
    st.tuples(st.just("release"), slots),
    st.tuples(st.just("keep"), slots, st.integers(0, 9)),
    st.tuples(st.just("mark"), slots, st.integers(0, 500)),
    st.tuples(st.just("unmark"), slots, st.integers(0, 500)),
    st.tuples(st.just("unmark_range"), st.integers(0, 1), st.integers(0, 30), st.integers(0, 30)),
    st.tuples(st.just("delay"), st.sampled_from([0, 0, 5, 1000])),
    st.tuples(st.just("time"), st.sampled_from([0.001, 0.5, 2.0])),
    st.tuples(st.just("compact")),
    st.tuples(st.just("track")),
    st.tuples(st.just("peek"), slots, st.booleans()),
    st.tuples(st.just("note"), slots),
), max_size=120)


def _step(rig: Rig, op: tuple) -> object:
    """One transition on one rig; what it returned, or the exception's type."""
    s = rig.store
    name = op[0]
    t: Any = None
    idx: Any = None
    if len(op) > 1 and isinstance(op[1], tuple):
        t, idx = rig.tables[op[1][0]], op[1][1]
    try:
        if name == "same":
            word = {"zero": bytes(8), "small": (op[3] + 1).to_bytes(8, "little"),
                    "wide": b"\xa5" * 7 + bytes([op[3]])}[op[2]]
            return s.store_same(t, idx, word)
        if name == "device":             # a real lz4 page, or a whole one if it is huge
            page = _blob(op[2], op[4]) + bytes(P - op[2])
            blob = COMPRESSORS["lz4"].compress(page)
            huge = len(blob) >= 3000
            return s.store_device(t, idx, page if huge else blob, NONE_ID if huge else LZ4_ID,
                                  huge, op[3])
        if name == "fallback":
            return s.store_fallback(t, idx, _blob(op[2], op[3]), NONE_ID, op[2] == P)
        if name == "promote":
            return s.store_promoted(t, idx, (None, _blob(P, op[2]), NONE_ID, True))
        if name == "backed":
            return s.store_backed(t, idx, op[2])
        if name == "poison":
            return s.store_poison(t, idx, op[2])
        if name == "release":
            return s.release(t, idx)
        if name == "keep":
            if t.get(idx) & KIND_MASK != 4:
                return None
            return s.keep(t, idx, (None, _blob(P, op[2]), -1, False))
        if name == "mark":
            return s.mark(t, idx, op[2])
        if name == "unmark":
            return s.unmark(t, idx, op[2])
        if name == "unmark_range":
            return s.unmark_range(rig.tables[op[1]], op[2], op[3])
        if name == "delay":
            s.release_delay = op[1]
            return None
        if name == "time":
            rig.clock.advance(op[1])
            return s.release_due(rig.clock())
        if name == "compact":
            return s.compact(rig.tables)
        if name == "track":
            for table in rig.tables:
                table.track(1)
            s.tracking = True
            return None
        if name == "peek":
            return s.peek(t, idx, op[2])
        if name == "note":
            return s.note(t, idx, "refused")
    except Exception as e:
        return type(e)
    raise AssertionError(op)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([4, 8, 16]), store_ops)
def test_both_stores_make_the_same_transitions(chain, ops):
    ref, nat = Rig("python", chain), Rig("native", chain)
    for n, op in enumerate(ops):
        assert _step(ref, op) == _step(nat, op), (n, op)
        assert ref.state() == nat.state(), (n, op)
        ref.check_counts()
    for rig in (ref, nat):                    # and both empty out completely
        rig.store.release_delay = 0
        for t in rig.tables:
            for i, _ in t.items():
                rig.store.release(t, i)
        rig.store.release_due(float("inf"))
        assert rig.store.used == 0 and not any(rig.store.pages)
        assert rig.store.charged == 0 and rig.store.extra == 0
    assert ref.state() == nat.state()


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("size", [700, P])
def test_a_stale_handle_is_refused_and_nothing_changes(engine, size):
    """A word naming an object the pool no longer holds (freed behind the store's
    back): its release and its read raise, and the slot and every count stay."""
    rig = Rig(engine)
    t = rig.tables[0]
    rig.store.store_device(t, 3, _blob(size, 1), NONE_ID if size == P else 0, size == P)
    word = t.get(3)
    rig.store.pool.free(word >> HANDLE_SHIFT)
    before = rig.state()
    with pytest.raises(ValueError, match=r"not live|no live object"):
        rig.store.release(t, 3)
    with pytest.raises(ValueError):
        rig.store.peek(t, 3)
    with pytest.raises(ValueError):
        rig.store.blob(word)
    assert rig.state() == before and t.get(3) == word


@pytest.mark.parametrize("engine", ENGINES)
def test_a_double_free_is_refused(engine):
    """A handle freed twice: the second free raises, and the next two stores still get
    two different objects (an absorbed double free would hand out one twice)."""
    rig = Rig(engine)
    t = rig.tables[0]
    rig.store.store_device(t, 0, _blob(700, 1), 0, False)
    handle = t.get(0) >> HANDLE_SHIFT
    assert rig.store.release(t, 0)
    with pytest.raises(ValueError):
        rig.store.pool.free(handle)
    assert rig.store.release(t, 0) == 0            # a hole: nothing to free
    rig.store.store_device(t, 1, _blob(700, 2), 0, False)
    rig.store.store_device(t, 2, _blob(700, 3), 0, False)
    assert t.get(1) >> HANDLE_SHIFT != t.get(2) >> HANDLE_SHIFT
    rig.check_counts()


@pytest.mark.parametrize("engine", ENGINES)
def test_a_stale_fallback_handle_is_refused(engine):
    rig = Rig(engine)
    t = rig.tables[0]
    rig.store.store_fallback(t, 5, _blob(900, 1), 0, False)
    word = t.get(5)
    rig.store.fallback.free(word >> HANDLE_SHIFT)
    before = rig.state()
    with pytest.raises(KeyError):
        rig.store.release(t, 5)
    assert rig.state() == before


def _failing_put(engine: str) -> tuple:
    rig = Rig(engine)
    t = rig.tables[0]
    rig.store.store_same(t, 0, (7).to_bytes(8, "little"))
    rig.store.pool.inject_failure(1)            # the first window the pool carves
    with pytest.raises(OSError, match="injected"):
        rig.store.store_device(t, 0, _blob(700, 1), 0, False)
    rig.check_counts()
    after_failure = rig.state()
    rig.store.store_device(t, 0, _blob(700, 1), 0, False)      # the pool still works
    rig.check_counts()
    return after_failure, rig.state()


def test_a_pool_failing_halfway_leaves_both_stores_consistent_and_alike():
    """The pool cannot grow during a store: the old page was released first (as every
    store does, so handles come out as zram's), nothing of the new one is counted,
    and both stores are left alike."""
    ref, nat = _failing_put("python"), _failing_put("native")
    assert ref == nat
    pages = ref[0][0]
    assert not any(pages) and ref[0][8] == 0     # a hole, nothing used


def test_the_native_store_takes_only_native_parts():
    """No silent mix of engines: the compiled store refuses a Python pool or tier."""
    with pytest.raises(TypeError):
        engines.make_store("native", engines.make_pool("python"),
                           engines.make_fallback_pool("native"), engines.tier_class("native")(),
                           Counters(), FakeClock(), lambda: 1)


@pytest.mark.parametrize("engine", ENGINES)
def test_a_word_of_no_known_kind_is_refused_before_it_is_counted(engine):
    """Kind 7 exists in no state: a table holding it was corrupted. Its release raises,
    and nothing (the compiled store's count by kind least of all) is touched."""
    rig = Rig(engine)
    t = rig.tables[0]
    rig.store.store_same(t, 0, bytes(8))
    t.set(1, 1 << HANDLE_SHIFT | 7)
    before = rig.state()
    with pytest.raises(ValueError, match="no known kind"):
        rig.store.release(t, 1)
    assert rig.state() == before


@pytest.mark.parametrize("engine", ENGINES)
def test_no_table_is_a_type_error_not_a_crash(engine):
    from cramfs.config import DeviceConfig
    from cramfs.device import Device

    rig = Rig(engine)
    with pytest.raises((TypeError, AttributeError)):
        rig.store.release(None, 0)
    dev = Device(DeviceConfig(engine=engine))
    for call in (lambda: dev.paths.read_page(None, 0), lambda: dev.paths.read(None, 0, P),
                 lambda: dev.paths.write_page(None, 0, bytes(P)),
                 lambda: dev.paths.write(None, 0, bytes(2 * P))):
        with pytest.raises((TypeError, AttributeError)):
            call()
    dev.close()
