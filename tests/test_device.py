"""The device model without FUSE: every page-slot transition and its counters."""

from __future__ import annotations

import errno
from typing import Any

import pytest

from cramfs.config import DeviceConfig
from cramfs.device import Device, DeviceError
from cramfs.levels import pressure
from cramfs.pagetable import (
    DEVICE,
    FALLBACK,
    POISONED,
    PROMOTED,
    SAME,
    PageTable,
    algo_of,
    is_huge,
    kind_of,
)
from cramfs.units import PAGE_SIZE

from .helpers import check_accounting, kinds, random_page, text_page

P = PAGE_SIZE


def make(**kw: Any) -> tuple[Device, PageTable]:
    base: dict[str, Any] = {"advertised": 1 << 20, "physical": 16 * P}
    base.update(kw)
    dev = Device(DeviceConfig(**base))
    return dev, dev.table("f")


def test_hole_reads_zero_and_stores_nothing():
    dev, t = make()
    assert dev.read(t, 0, 3 * P) == bytes(3 * P)
    assert t.count == 0 and dev.physical_used == 0
    assert dev.counters.reads == 3


def test_same_filled_page_costs_nothing():
    dev, t = make()
    page = b"\x01\x02\x03\x04\x05\x06\x07\x08" * 512
    dev.write(t, 0, page)
    assert kinds(t) == {0: SAME}
    assert dev.physical_used == 0 and dev.logical_stored == P
    assert dev.stats()["same_filled_pages"] == 1
    assert dev.read(t, 0, P) == page
    check_accounting(dev, [t])


def test_compressed_and_huge_pages():
    dev, t = make()
    dev.write(t, 0, text_page(1))
    dev.write(t, P, random_page(2))
    assert kinds(t) == {0: DEVICE, 1: DEVICE}
    assert not is_huge(t.get(0)) and is_huge(t.get(1))
    s = dev.stats()
    assert s["stored_incompressible_pages"] == 1 and s["compressed_pages"] == 1
    # the huge page owns a page; the compressed one sits in its class's zspage
    assert 2 * P <= dev.physical_used <= 9 * P
    assert dev.pool.stored_bytes < 2 * P
    assert dev.mm_stat().split()[7:] == ["1", "1"]   # huge_pages huge_pages_since
    # dram=0 keeps reads in place, so the slots stay put for the next check
    dev.set("dram", "0")
    assert dev.read(t, 0, 2 * P) == text_page(1) + random_page(2)
    check_accounting(dev, [t])


def test_overwrite_with_zeros_gives_space_back():
    dev, t = make()
    dev.write(t, 0, random_page(1))
    assert dev.physical_used == P
    dev.write(t, 0, bytes(P))
    assert dev.physical_used == 0
    assert dev.counters.zero_released_pages == 1
    assert kinds(t) == {0: SAME}
    check_accounting(dev, [t])


def test_partial_writes_read_modify_write():
    dev, t = make(dram=0)
    dev.write(t, 0, text_page(3))
    dev.write(t, 100, b"X" * 10)
    dev.write(t, P - 5, b"Y" * 10)          # straddles pages 0 and 1
    expect = bytearray(text_page(3) + bytes(P))
    expect[100:110] = b"X" * 10
    expect[P - 5:P + 5] = b"Y" * 10
    assert dev.read(t, 0, 2 * P) == bytes(expect)
    assert dev.read(t, 95, 20) == bytes(expect[95:115])


def test_zswap_read_promotes_and_releases():
    dev, t = make(dram=4 * P)
    dev.write(t, 0, text_page(1))
    used = dev.physical_used
    assert used > 0
    assert dev.read(t, 0, P) == text_page(1)
    assert dev.physical_used == 0, "the compressed copy is released at once"
    assert kinds(t) == {0: PROMOTED}
    assert (dev.counters.faults, dev.counters.promotions) == (1, 1)
    # a promoted page is served from DRAM: no new fault, data kept for re-reads
    assert dev.read(t, 0, P) == text_page(1)
    assert dev.counters.faults == 1
    assert t.promoted_pages == 1
    check_accounting(dev, [t])


def test_zswap_with_no_dram_serves_in_place():
    dev, t = make(dram=0)
    dev.write(t, 0, text_page(1))
    used = dev.physical_used
    assert dev.read(t, 0, P) == text_page(1)
    assert dev.physical_used == used
    assert dev.counters.faults == 1 and dev.counters.promotions == 0


def test_zswap_write_invalidates_promoted_copy():
    dev, t = make(dram=4 * P)
    dev.write(t, 0, text_page(1))
    dev.read(t, 0, P)
    dev.write(t, 0, text_page(2))
    assert kinds(t) == {0: DEVICE}
    assert len(dev.tier) == 0
    assert dev.read(t, 0, P) == text_page(2)


def test_direct_mode_reads_in_place_and_write_faults_promote():
    dev, t = make(mode="direct", dram=4 * P)
    dev.write(t, 0, text_page(1))
    assert kinds(t) == {0: PROMOTED}, "new data lands in the DRAM tier"
    dev.demote(None)
    assert kinds(t) == {0: DEVICE}
    used = dev.physical_used
    assert dev.read(t, 0, P) == text_page(1)
    assert dev.physical_used == used and kinds(t) == {0: DEVICE}
    assert dev.counters.faults == 0
    dev.write(t, 0, text_page(2))
    assert kinds(t) == {0: PROMOTED} and dev.physical_used == 0
    assert dev.counters.faults == 1
    assert dev.read(t, 0, P) == text_page(2)
    check_accounting(dev, [t])


def test_direct_mode_without_dram_writes_to_device():
    dev, t = make(mode="direct", dram=0)
    dev.write(t, 0, text_page(1))
    assert kinds(t) == {0: DEVICE}


def test_lru_demotion_over_budget():
    dev, t = make(dram=2 * P)
    for i in range(3):
        dev.write(t, i * P, text_page(i))
    for i in range(3):
        dev.read(t, i * P, P)
    # page 0 was promoted first, so it is the one sent back
    assert kinds(t) == {0: DEVICE, 1: PROMOTED, 2: PROMOTED}
    assert dev.counters.demotions == 1 and dev.counters.promotions == 3
    dev.read(t, P, P)                       # touch 1: page 2 is now coldest
    dev.read(t, 0, P)                       # promote 0 again: 2 goes
    assert kinds(t) == {0: PROMOTED, 1: PROMOTED, 2: DEVICE}
    assert dev.read(t, 0, 3 * P) == text_page(0) + text_page(1) + text_page(2)
    check_accounting(dev, [t])


def test_demote_command():
    dev, t = make(dram=8 * P)
    for i in range(4):
        dev.write(t, i * P, text_page(i))
        dev.read(t, i * P, P)
    assert dev.demote(1) == 1
    assert kinds(t)[0] == DEVICE
    assert dev.demote(None) == 3
    assert dev.pages[PROMOTED] == 0 and dev.counters.demotions == 4
    assert dev.demote(5) == 0


def test_dram_knob_shrink_demotes_at_once():
    dev, t = make(dram=8 * P)
    for i in range(4):
        dev.write(t, i * P, text_page(i))
        dev.read(t, i * P, P)
    dev.set("dram", str(P))
    assert dev.pages[PROMOTED] == 1


def test_levels_with_hysteresis():
    dev, t = make(write_control=False)
    seen = []
    dev.on_change(lambda what: seen.append(dev.danger) if what == "danger" else None)
    for i in range(12):                      # 12/16 = 75%
        dev.write(t, i * P, random_page(i))
    assert dev.danger == "warn"
    for i in range(12, 15):                  # 15/16 = 93.75%
        dev.write(t, i * P, random_page(i))
    assert dev.danger == "critical"
    dev.write(t, 15 * P, random_page(15))    # 100%
    assert dev.danger == "full"
    with pytest.raises(DeviceError) as e:
        dev.write(t, 16 * P, random_page(16))
    assert e.value.errno == errno.ENOSPC
    # release with zeros: critical is left only below 90% - 5% = 85%
    dev.write(t, 15 * P, bytes(P))           # 93.75%
    assert dev.danger == "critical"
    dev.write(t, 14 * P, bytes(P))           # 87.5%: still within hysteresis
    assert dev.danger == "critical"
    dev.write(t, 13 * P, bytes(P))           # 81.25% < 85%: warn
    assert dev.danger == "warn"
    for i in (12, 11):
        dev.write(t, i * P, bytes(P))        # 68.75%: warn holds until < 70%
    assert dev.danger == "ok"
    assert seen == ["warn", "critical", "full", "critical", "warn", "ok"]
    assert sum(" level " in line for line in dev.events.text().decode().splitlines()) == 6


def test_write_control_falls_back_to_host():
    dev, t = make()                          # write_control on, fallback host
    for i in range(16):
        dev.write(t, i * P, random_page(i))
    assert dev.danger == "critical"
    assert dev.refusing
    assert dev.pages[FALLBACK] == 1 and dev.counters.reject_write_control == 1
    assert dev.physical_used == 15 * P <= dev.config.physical
    assert dev.stats()["fallback_bytes"] == P
    assert dev.read(t, 15 * P, P) == random_page(15)     # promoted from the fallback
    assert dev.counters.failed_writes == 0
    assert "refused" in dev.events.text().decode()
    check_accounting(dev, [t])


def test_write_control_without_fallback_is_enospc_and_keeps_old_data():
    dev, t = make(fallback="none", dram=0)
    for i in range(15):
        dev.write(t, i * P, random_page(i))
    with pytest.raises(DeviceError) as e:
        dev.write(t, 0, random_page(99))     # an overwrite is refused too
    assert e.value.errno == errno.ENOSPC
    assert dev.read(t, 0, P) == random_page(0)
    assert dev.counters.failed_writes == 1
    assert dev.io_stat() == "0 1 0 0"


def test_short_write_when_device_fills_mid_request():
    dev, t = make(write_control=False)
    data = b"".join(random_page(i) for i in range(20))
    assert dev.write(t, 0, data) == 16 * P
    assert dev.read(t, 0, 16 * P) == data[:16 * P]


@pytest.mark.parametrize("policy", ["poison", "drop"])
def test_overflow_poison_and_drop(policy):
    dev, t = make(write_control=False, overflow=policy, dram=0)
    for i in range(16):
        dev.write(t, i * P, random_page(i))
    assert dev.write(t, 16 * P, random_page(16)) == P       # the writer sees success
    assert dev.danger == "full"
    if policy == "poison":
        assert dev.counters.poisoned_pages == 1
        with pytest.raises(DeviceError) as e:
            dev.read(t, 16 * P, P)
        assert e.value.errno == errno.EIO
        assert dev.counters.failed_reads == 1
        dev.write(t, 16 * P, bytes(P))                       # overwrite heals it
        assert dev.read(t, 16 * P, P) == bytes(P)
    else:
        assert dev.counters.dropped_writes == 1
        assert dev.read(t, 16 * P, P) == bytes(P)
    assert dev.read(t, 0, 16 * P) == b"".join(random_page(i) for i in range(16))
    check_accounting(dev, [t])


def test_discard_releases_whole_pages():
    dev, t = make()
    for i in range(4):
        dev.write(t, i * P, text_page(i))
    assert dev.discard(t, 1, 2) == 2
    assert sorted(kinds(t)) == [0, 3]
    assert dev.counters.discarded_pages == 2 and dev.counters.notify_free == 2
    assert dev.read(t, P, 2 * P) == bytes(2 * P)
    check_accounting(dev, [t])


def test_truncate_drops_tail_pages_and_zeroes_partial_page():
    dev, t = make(dram=0)
    for i in range(3):
        dev.write(t, i * P, text_page(i))
    dev.truncate(t, P + 10)
    assert sorted(kinds(t)) == [0, 1]
    assert dev.read(t, P, P) == text_page(1)[:10] + bytes(P - 10)


def test_truncate_of_a_full_device_is_never_refused():
    """Found by hypothesis: a device at critical refused the rewrite of the partial
    last page after the later pages were already freed, and the file kept its old
    size over zeros where data had been."""
    dev, t = make(physical=8 * P, dram=0, fallback="none")
    n = dev.write(t, 0, b"".join(random_page(i) for i in range(8)))
    assert n > P and dev.refusing
    dev.truncate(t, 1)
    assert dev.read(t, 0, P) == random_page(0)[:1] + bytes(P - 1)
    assert sorted(kinds(t)) == [0]
    check_accounting(dev, [t])


def test_compressor_switch_keeps_old_pages_readable():
    dev, t = make(dram=0)
    dev.write(t, 0, text_page(1))
    dev.set("compressor", "zstd")
    dev.write(t, P, text_page(2))
    assert algo_of(t.get(0)) != algo_of(t.get(1))
    assert dev.read(t, 0, 2 * P) == text_page(1) + text_page(2)
    assert dev.comp_algorithm() == "lzo-rle lzo lz4 [zstd] none"
    dev.set("compressor", "lzo")
    dev.write(t, 2 * P, text_page(3))
    assert len({algo_of(t.get(i)) for i in range(3)}) == 3
    assert dev.read(t, 0, 3 * P) == text_page(1) + text_page(2) + text_page(3)


def test_bad_knob_is_einval_keeps_value_and_logs():
    dev, _ = make()
    for name, value in [("warn_at", "95%"), ("mode", "fast"), ("dram", "lots"),
                        ("write_control", "maybe"), ("physical", "1M")]:
        before = dev.config
        with pytest.raises(DeviceError) as e:
            dev.set(name, value)
        assert e.value.errno == errno.EINVAL
        assert dev.config == before
    assert dev.events.text().decode().count(" rejected ") == 5


def test_inject_ratio_physical_poison_clear():
    dev, t = make(dram=0)
    dev.write(t, 0, random_page(1))
    dev.inject_ratio(4)
    dev.write(t, P, random_page(2))
    assert t.extra[1] == 3 * P and dev.physical_used == 5 * P
    assert t.physical_bytes == 5 * P
    dev.inject_physical(6 * P)
    assert dev.fill == pytest.approx(5 / 6) and dev.danger == "warn"
    dev.write(t, 2 * P, random_page(3))      # no room at 4x: refused, kept in host memory
    assert kind_of(t.get(2)) == FALLBACK
    dev.inject_poison(t, 0)
    with pytest.raises(DeviceError):
        dev.read(t, 0, P)
    assert dev.active_faults() == ["ratio 4", f"physical {6 * P}", "poisoned_pages 1"]
    dev.clear_faults()
    assert dev.active_faults() == ["poisoned_pages 1"]
    assert dev.config.physical == 16 * P
    with pytest.raises(DeviceError):
        dev.inject_ratio(65)
    with pytest.raises(DeviceError):
        dev.inject_poison(t, 99)
    assert kind_of(t.get(0)) == POISONED
    check_accounting(dev, [t])


def test_peak_reset():
    dev, t = make()
    dev.write(t, 0, random_page(1))
    dev.write(t, 0, bytes(P))
    assert dev.mem_used_max == P
    dev.reset_peak()
    assert dev.mem_used_max == 0


def test_ratio_warning():
    dev, t = make(dram=0)
    assert dev.overflow_at_ratio() == 0
    dev.write(t, 0, random_page(1))          # ratio 1, needs 64 (1M / 16K)
    assert dev.overflow_at_ratio() == (1 << 20) - 16 * P


def test_compact_moves_objects_and_keeps_data():
    dev, t = make(physical=1 << 20, dram=0)
    other = dev.table("g")
    for i in range(200):
        dev.write(t if i % 2 else other, i * P, text_page(i))
    used = dev.physical_used
    for i in range(0, 200, 4):                   # leave holes in the zspages
        dev.discard(other, i, 1)
    used = dev.physical_used
    freed = dev.compact()
    assert freed > 0 and dev.physical_used == used - freed * P
    assert dev.counters.pages_compacted == freed
    assert dev.mm_stat().split()[6] == str(freed)
    for i in range(200):
        table = t if i % 2 else other
        want = bytes(P) if i % 4 == 0 else text_page(i)
        assert dev.read(table, i * P, P) == want, i
    check_accounting(dev, [t, other])


@pytest.mark.parametrize("threads", [0, 1, 3])
def test_large_requests_with_codec_threads(threads):
    dev, t = make(physical=1 << 20, comp_threads=threads, dram=0)
    pages = [text_page(i) if i % 3 else random_page(i) for i in range(100)]
    pages[7] = bytes(P)
    data = b"".join(pages)
    assert dev.write(t, 0, data) == len(data)
    assert dev.read(t, 0, len(data)) == data
    assert dev.read(t, 5 * P + 100, 40 * P) == data[5 * P + 100:45 * P + 100]
    check_accounting(dev, [t])


@pytest.mark.parametrize("threads", [0, 2])
def test_short_write_mid_batch_with_codec_threads(threads):
    dev, t = make(write_control=False, comp_threads=threads)
    data = b"".join(random_page(i) for i in range(40))
    assert dev.write(t, 0, data) == 16 * P
    assert dev.read(t, 0, 16 * P) == data[:16 * P]
    assert t.count == 16
    check_accounting(dev, [t])


def test_comp_threads_knob():
    dev, _ = make()
    dev.set("comp_threads", "2")
    assert dev.config.comp_threads == 2
    with pytest.raises(DeviceError) as e:
        dev.set("comp_threads", "-1")
    assert e.value.errno == errno.EINVAL and dev.config.comp_threads == 2


def test_a_partial_page_over_a_poisoned_one_gives_a_short_count():
    """The merge read used to sit outside the error handling: the pages before it were
    stored, yet the whole write failed."""
    dev, t = make(dram=0)
    dev.write(t, 0, text_page(1) * 2)
    dev.inject_poison(t, 1)
    assert dev.write(t, 0, bytes(P + 1)) == P
    assert dev.read(t, 0, P) == bytes(P)
    with pytest.raises(DeviceError) as e:
        dev.write(t, P, b"x")
    assert e.value.errno == errno.EIO


def _counting_encoder(dev: Device) -> list[int]:
    calls = [0]
    real = dev.encode

    def encode(page: bytes) -> Any:
        calls[0] += 1
        return real(page)

    dev.encode = encode
    dev.paths.configure()           # the compiled paths copy it
    return calls


def test_an_unchanged_promoted_page_goes_back_without_compression():
    dev, t = make(dram=8 * P)
    dev.write(t, 0, text_page(1))
    blob = dev.pool.get(t.get(0) >> 6)
    calls = _counting_encoder(dev)
    assert dev.read(t, 0, P) == text_page(1)          # promoted: the pool copy is freed
    assert kind_of(t.get(0)) == PROMOTED and dev.pool.stored_bytes == 0
    assert dev.read(t, 0, P) == text_page(1)          # a hit, served from the tier
    assert dev.demote(None) == 1
    assert calls[0] == 0, "the compressed form the device had goes back as it was"
    assert kind_of(t.get(0)) == DEVICE and dev.pool.get(t.get(0) >> 6) == blob
    check_accounting(dev, [t])


def test_a_changed_page_or_compressor_is_compressed_once_at_demotion():
    dev, t = make(dram=8 * P, mode="direct")
    dev.set("dram", "0")
    dev.write(t, 0, text_page(1))
    dev.write(t, P, text_page(2))
    dev.set("dram", "32K")
    calls = _counting_encoder(dev)
    dev.write(t, 0, text_page(3))                     # a write fault: into DRAM, dirty
    assert calls[0] == 0 and kind_of(t.get(0)) == PROMOTED
    dev.set("mode", "zswap")
    assert dev.read(t, P, P) == text_page(2)           # clean, promoted
    dev.set("compressor", "zstd")
    calls = _counting_encoder(dev)
    assert dev.demote(None) == 2
    assert calls[0] == 2, "the dirty page and the one whose compressor changed"
    assert algo_of(t.get(0)) == algo_of(t.get(1)) == 1
    assert dev.read(t, 0, 2 * P) == text_page(3) + text_page(2)
    check_accounting(dev, [t])


def test_same_filled_pages_of_any_word_cost_no_dict_entry():
    dev, t = make()
    narrow = [bytes(8), b"\xff" * 8, (12345).to_bytes(8, "little"), b"\x01" * 8]
    wide = [bytes.fromhex("deadbeefdeadbeef"), b"\x80" + bytes(7), bytes(7) + b"\x7f"]
    for i, word in enumerate(narrow + wide):
        dev.write(t, i * P, word * (P // 8))
    assert dev.words.live == 3, "only words outside the 57-bit inline form use the store"
    for i, word in enumerate(narrow + wide):
        assert dev.read(t, i * P, P) == word * (P // 8)
        assert kind_of(t.get(i)) == SAME
    dev.discard(t, 0, 64)
    assert dev.words.live == 0
    dev.write(t, 0, wide[0] * (P // 8))
    assert dev.words.metadata_bytes == 24, "freed entries are reused"


def test_pressure_follows_fill_in_steps_of_50_and_wakes_only_on_change():
    dev, t = make(advertised=1 << 22, physical=400 * P, dram=0, fallback="none",
                  hysteresis=0.02)
    seen: list[tuple[str, int]] = []
    dev.on_change(lambda what: seen.append((what, dev.pressure)))
    values = []
    i = 0
    while not dev.refusing:
        dev.write(t, i * P, random_page(i))            # one whole page each
        i += 1
        values.append(dev.pressure)
        check_accounting(dev, [t])
    assert values[0] == 0 and values[-1] == 1000
    assert values == sorted(values) and all(v % 50 == 0 for v in values)
    assert set(values) == set(range(0, 1000, 50)) | {1000}, "every step passed through"
    changes = [v for what, v in seen if what == "pressure"]
    assert changes == sorted(set(values) - {0}), "one wake-up per change, none without"
    # hysteresis: just below critical_at it stays 1000, as write control keeps refusing
    dev.discard(t, 0, 4)
    assert dev.pressure == 1000 and dev.refusing
    dev.discard(t, 0, 60)
    assert dev.pressure < 1000 and not dev.refusing
    check_accounting(dev, [t])
    dev.set("warn_at", "10%")                            # a knob moves it at once
    assert dev.pressure == pressure(dev.levels.level, dev.fill, 0.10, 0.90)


@pytest.mark.parametrize("engine", ["python", "native"])
def test_a_device_no_one_holds_is_freed_at_once(engine):
    """Its parts hold it weakly: no cycle keeps a dropped device (and its pool's
    memory) alive until the cyclic collector happens to run."""
    import gc
    import weakref

    gc.disable()
    try:
        dev = Device(DeviceConfig(engine=engine))
        dev.write(dev.table("f"), 0, bytes(range(256)) * 16)
        gone = weakref.ref(dev)
        del dev
        assert gone() is None
    finally:
        gc.enable()
