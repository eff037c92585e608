"""Hostile input and lost-page paths, without a mount: each case once let bad input
through, applied part of a rejected write, or lost a page."""

from __future__ import annotations

import errno
import gc
import os
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cramfs.config import DeviceConfig
from cramfs.device import Device, DeviceError
from cramfs.events import LINE_MAX, EventLog
from cramfs.namespace import Namespace
from cramfs.units import PAGE_SIZE, parse_decimal, parse_int, parse_percent, parse_size

from .helpers import check_accounting, random_page, text_page
from .test_namespace_control import einval, show, store

P = PAGE_SIZE


@pytest.fixture
def ns() -> Namespace:
    return Namespace(Device(DeviceConfig(advertised=1 << 20, physical=16 * P)))


# ------------------------------------------------------------ the number grammar

@pytest.mark.parametrize("text", [
    "٣", "３", "𝟙", "١٠", "1_0", "+1", "-0", "-1", "1e3", "1e-308", "2^70", "0x10", " ", "",
    "99999999999999999999999T", f"{(1 << 60) + 1}", "2000P",
])
def test_sizes_are_ascii_and_bounded(text):
    with pytest.raises(ValueError):
        parse_size(text)


def test_size_bound_is_one_exbibyte():
    assert parse_size(str(1 << 60)) == 1 << 60
    assert parse_size("1048576T") == 1 << 60


@pytest.mark.parametrize("text", ["१०%", "٣", "1_0", "+1", "-0", "1e1", "50.001%", "100.5",
                                  "nan", "inf", "1e-308"])
def test_percentages_are_ascii_two_decimals_0_to_100(text):
    with pytest.raises(ValueError):
        parse_percent(text)


def test_percentages_accept_two_decimals():
    assert parse_percent("62.25%") == 0.6225
    assert parse_percent("0") == 0 and parse_percent("100") == 1


@pytest.mark.parametrize("text", ["٣", "1_0", "+1", "-0", "1.0", "1e2", ""])
def test_integers_and_decimals_are_ascii(text):
    with pytest.raises(ValueError):
        parse_int(text)
    if text not in ("1.0",):
        with pytest.raises(ValueError):
            parse_decimal(text)


def test_dram_and_fallback_limit_at_most_advertised(ns):
    einval(ns, "dram", "2M")
    einval(ns, "fallback_limit", "2M")
    einval(ns, "comp_threads", "65")
    store(ns, "fallback_limit", "1M")
    assert show(ns, "fallback_limit") == f"{1 << 20}\n"
    assert DeviceConfig(physical=1 << 20, advertised=1 << 21).fallback_limit == 1 << 20
    assert DeviceConfig(advertised=1 << 20, physical=1 << 20).dram == 1 << 20


# ------------------------------------------------------------ whole or nothing

def test_inject_applies_all_lines_or_none(ns):
    f = ns.create("a", 0o600, 0, 0)
    ns.write(f, 0, random_page(1))
    for text in ("ratio 2\nbogus", "physical 32K\nnope", "ratio 2\nphysical 2M",
                 "physical 32K\npoison a 7", "clear\nratio 99"):
        einval(ns, "inject", text)
        assert show(ns, "inject") == "none\n", text
    assert ns.device.config.physical == 16 * P and ns.device.inflate == 1
    store(ns, "inject", "ratio 2\nphysical 32K\npoison a 0")
    assert show(ns, "inject") == "ratio 2\nphysical 32768\npoisoned_pages 1\n"


def test_discard_applies_all_lines_or_none(ns):
    f = ns.create("a", 0o600, 0, 0)
    for i in range(4):
        ns.write(f, i * P, text_page(i))
    einval(ns, "discard", "a 0 4K\nmissing 0 4K")
    einval(ns, "discard", "a 0 4K\na 0 lots")
    assert f.table.count == 4
    store(ns, "discard", "a 0 4K\na 8K 4K\n")
    assert [i for i, _ in f.table.items()] == [1, 3]


def test_input_over_a_page_changes_nothing(ns):
    einval(ns, "dram", "1" * (P + 1))
    einval(ns, "warn_at", "7" * 300_000)
    assert ns.device.config.warn_at == 0.75


def test_non_utf8_control_input_is_einval(ns):
    from cramfs import control
    from cramfs.control import ATTRIBUTES
    with pytest.raises(DeviceError) as e:
        control.store(ns, ATTRIBUTES["dram"], b"\xff1M")
    assert e.value.errno == errno.EINVAL


# ------------------------------------------------------------ the events log

def test_a_huge_rejected_write_cannot_empty_the_events_log(ns):
    store(ns, "warn_at", "70%")
    store(ns, "inject", "physical 32K")
    before = show(ns, "events")
    einval(ns, "warn_at", "7" * 300_000)
    einval(ns, "compressor", "x" * 4000)
    after = show(ns, "events")
    assert after.startswith(before), "earlier lines, level changes included, stay"
    for line in after.splitlines():
        assert len(line.encode()) < LINE_MAX


def test_a_name_cannot_forge_an_event_line(ns):
    f = ns.create("evil\n2026-01-01T00:00:00.000000Z level ok -> full", 0o600, 0, 0)
    ns.write(f, 0, random_page(1))
    ns.device.inject_poison(f.table, 0)
    lines = show(ns, "events").splitlines()
    assert not any(line.startswith("2026-01-01") for line in lines)
    assert any("evil\\n2026" in line for line in lines)


def test_trimming_drops_only_the_oldest_lines():
    log = EventLog(limit_bytes=8192, clock=lambda: 0.0)
    for i in range(400):
        log.add("knob", f"line {i}")
    text = log.text().decode().splitlines()
    assert text[-1].endswith("line 399")
    assert 8192 * 3 // 4 <= log.size <= 8192
    numbers = [int(line.rsplit(maxsplit=1)[1]) for line in text]
    assert numbers == list(range(numbers[0], 400)), "contiguous: only the oldest dropped"


# ------------------------------------------------------------ host memory bounds

def test_fallback_is_bounded_by_fallback_limit():
    dev = Device(DeviceConfig(advertised=1 << 20, physical=8 * P, fallback_limit=4 * P,
                              dram=0))
    t = dev.table("f")
    written = 0
    with pytest.raises(DeviceError) as e:
        for i in range(64):
            written += dev.write(t, i * P, random_page(i))
    assert e.value.errno == errno.ENOSPC
    assert dev.fallback.used_bytes <= 4 * P
    assert dev.counters.fallback_limit_hit == 1
    assert dev.stats()["fallback_limit_hit"] == 1
    for i in range(written // P):
        assert dev.read(t, i * P, P) == random_page(i)
    check_accounting(dev, [t])


@pytest.mark.parametrize("mode", ["zswap", "direct"])
def test_a_tier_that_cannot_demote_stops_promoting(mode):
    dev = Device(DeviceConfig(advertised=1 << 20, physical=64 * P, dram=2 * P, mode=mode,
                              fallback="none"))
    t = dev.table("f")
    for i in range(12):
        dev.write(t, i * P, text_page(i) if mode == "zswap" else random_page(i))
    dev.inject_physical(4 * P)          # now critical: write control refuses every demotion
    assert dev.refusing
    for i in range(12):
        if mode == "zswap":
            assert dev.read(t, i * P, P) == text_page(i)
        else:
            try:
                dev.write(t, i * P, random_page(100 + i))
            except DeviceError as e:
                assert e.errno == errno.ENOSPC
        assert len(dev.tier) <= 2, "the tier never grows past its budget"
    assert dev.counters.promotions_skipped > 0
    check_accounting(dev, [t])


# ------------------------------------------------------------ lifetime

def _pool_fds() -> int:
    return sum("cramfs-pool" in os.readlink(f"/proc/self/fd/{fd}")
               for fd in os.listdir("/proc/self/fd") if os.path.exists(f"/proc/self/fd/{fd}"))


def test_a_device_can_be_closed():
    gc.collect()
    before = _pool_fds()
    for _ in range(5):
        dev = Device(DeviceConfig(advertised=1 << 20, physical=16 * P))
        dev.write(dev.table("f"), 0, random_page(1))
        assert _pool_fds() > before
        dev.close()
        dev.close()
        assert _pool_fds() == before, "close gives the memfd back"
    dev = Device(DeviceConfig(advertised=1 << 20, physical=16 * P))
    del dev
    gc.collect()
    assert _pool_fds() == before, "so does a device that is dropped unclosed"


def test_names_reset_removed_are_stale_and_the_kernel_is_told(ns):
    told: list[list[str]] = []
    ns.on_names_dropped.append(told.append)
    f = ns.create("slot0", 0o600, 0, 0)
    f.nlookup = 1                       # the kernel caches the name
    ns.write(f, 0, text_page(1))
    store(ns, "reset", "1")
    assert told == [["slot0"]]
    with pytest.raises(DeviceError) as e:
        ns.live(f.ino)
    assert e.value.errno == errno.ESTALE
    ns.forget(f.ino, 1)
    with pytest.raises(DeviceError) as e:
        ns.live(f.ino)
    assert e.value.errno == errno.ENOENT


def test_non_utf8_names_are_kept_as_bytes(ns):
    name = os.fsdecode(b"caf\xe9\xff")
    f = ns.create(name, 0o600, 0, 0)
    assert os.fsencode(f.name) == b"caf\xe9\xff"
    ns.write(f, 0, text_page(1))
    ns.device.inject_poison(f.table, 0)
    assert "caf\\udce9\\udcff" in show(ns, "events")
    with pytest.raises(DeviceError) as e:
        ns.create(os.fsdecode(b"\xff" * 256), 0o600, 0, 0)
    assert e.value.errno == errno.ENAMETOOLONG


# ------------------------------------------------------------ one input rule, every file

# A value each writable control file accepts, on the device `rule_ns` builds. A new
# writable file without an entry here fails test_every_writable_file_has_a_case.
ACCEPTED = {
    "mem_used_max": "0", "reset": "1", "discard": "f 0 4096", "demote": "all",
    "compact": "1", "idle": "all", "recomp_algorithm": "algo=zstd",
    "recompress": "type=idle max_pages=1", "backing_dev": "none",
    "writeback": "page=f:0", "writeback_limit_enable": "0", "writeback_limit": "5",
    "inject": "clear", "trace": "stop",
}


def _accepted(ns: Namespace, name: str) -> str:
    return ACCEPTED.get(name) or ns.device.config.show(name)


def _writable() -> list[str]:
    from cramfs.control import ATTRIBUTES
    return sorted(a.name for a in ATTRIBUTES.values() if a.store)


def test_every_writable_file_has_a_case():
    from cramfs.config import SETTINGS
    assert {n for n in _writable() if n not in SETTINGS or not SETTINGS[n].runtime} \
        == set(ACCEPTED)


def rule_ns(tmp: str) -> Namespace:
    path = os.path.join(tmp, "backing")
    with open(path, "wb") as fh:
        fh.truncate(64 * P)
    ns = Namespace(Device(DeviceConfig(advertised=1 << 20, physical=16 * P,
                                       backing_dev=path)))
    f = ns.create("f", 0o600, 0, 0)
    for i in range(4):
        ns.write(f, i * P, text_page(i))
    return ns


@pytest.mark.parametrize("newline", ["", "\n"])
def test_each_accepted_value_is_accepted_with_one_newline(tmp_path, newline):
    """The baseline the mutations below start from: each value, alone and with its one
    newline, is taken (trace's stop after a start; backing_dev and reset last, as they
    empty the device)."""
    ns = rule_ns(str(tmp_path))
    store(ns, "recomp_algorithm", "algo=zstd")
    store(ns, "trace", f"start {tmp_path}/t.trace")
    rec = ns.recorder
    last = ("reset", "backing_dev")
    for name in [n for n in _writable() if n not in last] + list(last):
        store(ns, name, _accepted(ns, name) + newline)
    assert rec is not None and ns.recorder is None and ns.device.backing is None
    rec.join(10)


# what the audits sent: more than one newline, blanks around a value, whitespace
# that is not ASCII, a NUL, a second line to a file that takes one
_NOT_ASCII_SPACE = st.sampled_from(["\u00a0", "\u2028", "\u2029", "\u3000", "\u200b",
                                    "\x85", "\u1680", "\ufeff", "\x1c"])
mutation = st.one_of(
    st.builds(lambda nl: ("", "\n" * nl), st.integers(2, 4)),
    st.builds(lambda b: (b, ""), st.sampled_from([" ", "\t", "\r", "\n"])),
    st.builds(lambda b: ("", b), st.sampled_from([" ", "\t", "\r", " \n", "\r\n", "\0",
                                                   "\0\n"])),
    st.builds(lambda c, at_end: ("", c) if at_end else (c, ""), _NOT_ASCII_SPACE,
              st.booleans()),
    st.builds(lambda c: (c + " ", ""), _NOT_ASCII_SPACE),
)


@given(name=st.sampled_from(_writable()), around=mutation)
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_anything_around_a_value_is_einval_and_changes_nothing(rule_tmp, name, around):
    ns = rule_tmp
    before, text = ns.device.mm_stat(), ns.device.config
    head, tail = around
    einval(ns, name, head + _accepted(ns, name) + tail)
    assert ns.device.mm_stat() == before and ns.device.config == text
    assert ns.recorder is None and ns.device.backing is not None


@pytest.fixture(scope="module")
def rule_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Namespace]:
    ns = rule_ns(str(tmp_path_factory.mktemp("rule")))
    store(ns, "recomp_algorithm", "algo=zstd")
    yield ns
    ns.device.close()


@pytest.mark.parametrize("name, text", [
    ("writeback", "page=f:9223372036854775808"), ("writeback", "page=f:4"),
    ("writeback", "page=f:99999999999999999999"), ("inject", "poison f 9223372036854775808"),
    ("inject", "poison f 4"), ("writeback_limit", "9223372036854775808"),
    ("discard", "f 0 4K\n\nf 4K 4K"), ("demote", "9223372036854775808"),
    ("idle", "99999999999999999999"), ("recompress", "type=idle max_pages=9223372036854775808"),
])
def test_numbers_past_a_field_or_a_file_are_einval(rule_tmp, name, text):
    before = rule_tmp.device.mm_stat()
    einval(rule_tmp, name, text)
    assert rule_tmp.device.mm_stat() == before
