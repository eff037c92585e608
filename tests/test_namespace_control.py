"""The filesystem and its control files through their Python API, without a mount."""

from __future__ import annotations

import errno
import json
import stat

import pytest

from cramfs import control
from cramfs.backing import run_inline
from cramfs.config import DeviceConfig
from cramfs.control import ATTRIBUTES, file_xattrs
from cramfs.device import Device, DeviceError
from cramfs.namespace import Namespace
from cramfs.stats import STATS
from cramfs.units import PAGE_SIZE

from .helpers import random_page, text_page

P = PAGE_SIZE


@pytest.fixture
def ns() -> Namespace:
    return Namespace(Device(DeviceConfig(advertised=1 << 20, physical=16 * P)))


def show(ns: Namespace, name: str) -> str:
    attr = ATTRIBUTES[name]
    assert attr.show is not None
    return attr.show(ns)


def store(ns: Namespace, name: str, text: str) -> None:
    """As a write() reaches the adapter: bytes, checked whole; the I/O it needs (a
    backing file opened, a trace made) run inline."""
    run_inline(control.store(ns, ATTRIBUTES[name], text.encode()))


def einval(ns: Namespace, name: str, text: str) -> None:
    before = ns.device.events.count
    with pytest.raises(DeviceError) as e:
        store(ns, name, text)
    assert e.value.errno == errno.EINVAL, (name, text)
    assert ns.device.events.count == before + 1, "a refused write adds an events line"


def test_file_lifecycle(ns):
    f = ns.create("a", 0o640, 1, 2)
    assert f.mode == stat.S_IFREG | 0o640 and (f.uid, f.gid) == (1, 2)
    with pytest.raises(DeviceError) as e:
        ns.create("a", 0o600, 0, 0)
    assert e.value.errno == errno.EEXIST
    with pytest.raises(DeviceError) as e:
        ns.create("x" * 256, 0o600, 0, 0)
    assert e.value.errno == errno.ENAMETOOLONG
    with pytest.raises(DeviceError) as e:
        ns.create(".cram", 0o600, 0, 0)
    assert e.value.errno == errno.EEXIST
    ns.write(f, 0, text_page(1))
    ns.rename("a", "b")
    assert ns.lookup("b") is f and f.table.name == "b"
    g = ns.create("c", 0o600, 0, 0)
    ns.rename("b", "c", exchange=True)
    assert ns.lookup("c") is f and ns.lookup("b") is g
    with pytest.raises(DeviceError):
        ns.rename("b", "c", noreplace=True)
    ns.unlink("c")
    assert ns.device.physical_used == 0, "space returns when the last user is gone"


def test_unlinked_open_file_keeps_data_until_release(ns):
    f = ns.create("a", 0o600, 0, 0)
    ns.opened(f)
    ns.write(f, 0, random_page(1))
    ns.unlink("a")
    assert ns.read(f, 0, P) == random_page(1)
    ns.released(f)
    assert ns.device.physical_used == 0


def test_sizes_bounded_by_advertised(ns):
    f = ns.create("a", 0o600, 0, 0)
    ns.resize(f, 1 << 20)
    with pytest.raises(DeviceError) as e:
        ns.resize(ns.create("b", 0o600, 0, 0), 1)
    assert e.value.errno == errno.ENOSPC
    ns.resize(f, 10)
    assert ns.total_size == 10
    assert ns.read(f, 0, 100) == bytes(10), "reads stop at end of file"


def test_statvfs(ns):
    f = ns.create("a", 0o600, 0, 0)
    for i in range(8):
        ns.write(f, i * P, random_page(i))
    st = ns.statvfs()
    assert st["f_blocks"] == 256
    assert st["f_bfree"] == st["f_bavail"] == 128     # half the physical pages used
    for i in range(8, 15):
        ns.write(f, i * P, random_page(i))
    assert ns.device.refusing and ns.statvfs()["f_bavail"] == 0


def test_read_only_control_files(ns):
    f = ns.create("a", 0o600, 0, 0)
    ns.write(f, 0, text_page(1) + bytes(P))
    status = dict(line.split(": ", 1) for line in show(ns, "status").splitlines())
    for key in ("advertised", "physical", "physical_used", "logical_stored",
                "compressed_bytes", "ratio", "required_ratio", "effective_capacity", "danger",
                "compressor", "files", "same_filled_pages", "compressed_pages"):
        assert key in status
    assert status["files"] == "1" and status["danger"] == "ok"
    assert show(ns, "required_ratio") == "16.00\n"
    assert float(show(ns, "ratio")) == pytest.approx(2 * P / ns.device.physical_used, abs=0.01)
    mm = show(ns, "mm_stat").split()
    assert len(mm) == 9 and mm[0] == str(2 * P) and mm[5] == "1"
    assert show(ns, "io_stat") == "0 0 0 0\n"
    stats = dict(line.split() for line in show(ns, "stat").splitlines())
    assert stats["writes"] == "2" and stats["same_filled_pages"] == "1"
    doc = json.loads(show(ns, "stat.json"))
    assert doc["files"] == 1 and doc["warn_at"] == 0.75 and doc["physical_used"] > 0
    assert doc["write_control"] is True and doc["compressor"] == "lz4"
    assert doc["mm_stat"]["orig_data_size"] == 2 * P and doc["mm_stat"]["same_pages"] == 1
    assert doc["io_stat"] == {"failed_reads": 0, "failed_writes": 0, "invalid_io": 0,
                              "notify_free": 0}
    for st in STATS:                        # one table: every row, typed
        assert st.name in doc and isinstance(doc[st.name], str) == (st.unit == "text")
    assert show(ns, "danger") == "ok\n"
    assert show(ns, "comp_algorithm") == "lzo-rle lzo [lz4] zstd none\n"
    assert int(show(ns, "effective_capacity")) > 16 * P


def test_knobs_round_trip_and_reject(ns):
    for name, good, shown, bad in [
        ("warn_at", "70%", "70%", "95%"), ("critical_at", "95", "95%", "50%"),
        ("hysteresis", "2%", "2%", "90%"), ("write_control", "off", "off", "sometimes"),
        ("fallback", "none", "none", "disk"), ("overflow", "poison", "poison", "explode"),
        ("mode", "direct", "direct", "tiered"), ("dram", "1M", str(1 << 20), "-4"),
        ("compressor", "zstd", "zstd", "lzma"),
    ]:
        store(ns, name, good + "\n")
        assert show(ns, name) == shown + "\n"
        einval(ns, name, bad)
        assert show(ns, name) == shown + "\n", "the old value stays"
    einval(ns, "mem_used_max", "5")
    store(ns, "mem_used_max", "0")
    einval(ns, "reset", "2")
    einval(ns, "demote", "some")
    einval(ns, "demote", "-1")
    einval(ns, "discard", "nofile")
    einval(ns, "discard", "nofile 0 4K")
    for bad in ("ratio 0.5", "ratio 65", "ratio x", "physical 2M", "physical 1",
                "poison nofile 0", "melt", "clear now"):
        einval(ns, "inject", bad)
    assert "rejected inject: unknown command 'melt'" in show(ns, "events")


def test_discard_demote_reset(ns):
    f = ns.create("a b", 0o600, 0, 0)      # names may hold spaces
    for i in range(4):
        ns.write(f, i * P, text_page(i))
    store(ns, "discard", f"a b {P + 1} {2 * P}")   # only page 2 lies wholly inside
    assert [i for i, _ in f.table.items()] == [0, 1, 3]
    store(ns, "discard", "a b 0 16K")
    assert f.table.count == 0
    ns.write(f, 0, text_page(1))
    ns.read(f, 0, P)                            # zswap fault: promoted
    store(ns, "demote", "all")
    assert f.table.promoted_pages == 0 and f.table.stored_pages == 1
    ns.opened(f)
    with pytest.raises(DeviceError) as e:
        store(ns, "reset", "1")
    assert e.value.errno == errno.EBUSY
    ns.released(f)
    store(ns, "reset", "1")
    assert not ns.by_name and ns.device.physical_used == 0
    assert ns.device.counters.writes == 0


def test_inject_show_and_clear(ns):
    f = ns.create("a", 0o600, 0, 0)
    ns.write(f, 0, random_page(1))
    assert show(ns, "inject") == "none\n"
    store(ns, "inject", "ratio 2\nphysical 32K\n")
    store(ns, "inject", "poison a 0")
    assert show(ns, "inject") == "ratio 2\nphysical 32768\npoisoned_pages 1\n"
    store(ns, "inject", "clear")
    assert show(ns, "inject") == "poisoned_pages 1\n"
    with pytest.raises(RuntimeError):
        store(ns, "inject", "bug")


def test_xattrs_charging_models(ns):
    f = ns.create("a", 0o600, 0, 0)
    ns.write(f, 0, text_page(1) + random_page(2))
    x = file_xattrs(ns, f)
    assert x["user.cram.stored_pages"] == "2"
    assert x["user.cram.charge_full"] == str(2 * P)
    assert x["user.cram.charge_compressed"] == x["user.cram.physical_bytes"]
    # the file is charged its objects' size classes; the device also holds the
    # unused rest of the zspages they sit in
    assert P < int(x["user.cram.physical_bytes"]) <= ns.device.physical_used
    assert int(x["user.cram.charge_scaled"]) == min(2 * P, int(2 * P / ns.device.ratio))
    ns.read(f, 0, P)
    assert file_xattrs(ns, f)["user.cram.promoted_pages"] == "1"


def test_charges_add_up_and_scaled_never_exceeds_full(ns):
    files = [ns.create(n, 0o600, 0, 0) for n in "abc"]
    # one object of about 1.5 KiB holds a whole 3-page zspage: ratio below 1
    ns.write(files[0], 0, random_page(7)[:1500] + bytes(P - 1500))
    x = file_xattrs(ns, files[0])
    assert ns.device.ratio < 1
    assert int(x["user.cram.charge_scaled"]) <= int(x["user.cram.charge_full"])
    ns.write(files[1], 0, b"".join(random_page(i) for i in range(3)))
    ns.write(files[2], 0, bytes(P) + b"\x07" * P)             # same-filled: no compressed charge
    charges = [int(file_xattrs(ns, f)["user.cram.charge_compressed"]) for f in files]
    assert charges[2] == 0
    s = ns.stats()
    assert sum(charges) + int(s["unattributed_bytes"]) == ns.device.physical_used
    assert "unattributed_bytes" in show(ns, "status")
    for f in files:
        x = file_xattrs(ns, f)
        assert int(x["user.cram.charge_scaled"]) <= int(x["user.cram.charge_full"])


def test_injected_means_injected(ns):
    dev = Device(DeviceConfig(advertised=1 << 20, physical=8 * P, write_control=False,
                              overflow="poison", dram=0))
    nsp = Namespace(dev)
    f = nsp.create("a", 0o600, 0, 0)
    for i in range(12):                                       # overflow poisons some
        nsp.write(f, i * P, random_page(i))
    assert dev.pages[5] > 0
    assert "injected" not in show(nsp, "status") and show(nsp, "inject") == "none\n"
    g = nsp.create("b", 0o600, 0, 0)
    nsp.write(g, 0, bytes(P - 1) + b"x")
    dev.inject_poison(g.table, 0)
    assert show(nsp, "inject") == "poisoned_pages 1\n"


def test_attribute_modes():
    assert ATTRIBUTES["status"].mode == 0o444
    assert ATTRIBUTES["warn_at"].mode == 0o644
    assert ATTRIBUTES["reset"].mode == 0o200


def test_metrics_exposition(ns):
    from prometheus_client.parser import text_string_to_metric_families

    f = ns.create("a", 0o600, 0, 0)
    ns.write(f, 0, text_page(1))
    text = show(ns, "metrics")
    families = {fam.name: fam for fam in text_string_to_metric_families(text)}
    samples = {s.name: s for fam in families.values() for s in fam.samples}
    assert samples["cramfs_physical_used_bytes"].value == ns.device.physical_used
    assert samples["cramfs_written_pages_total"].value == 1
    assert samples["cramfs_danger_level"].value == 0
    assert samples["cramfs_info"].labels == {"mode": "zswap", "compressor": "lz4",
                                             "engine": ns.device.config.engine, "danger": "ok"}
    for fam in families.values():
        assert fam.documentation and "Current" not in fam.documentation, fam.name
        if fam.type == "counter":
            assert fam.samples[0].name.endswith("_total"), fam.name
        if fam.unit == "" and fam.type == "gauge" and "bytes" in fam.documentation.lower():
            assert fam.name.endswith("_bytes") or "ratio" in fam.name, fam.name
    byte_rows = [st for st in STATS if st.unit == "bytes"]
    assert all(st.metric_name.removesuffix("_total").endswith("_bytes") for st in byte_rows)
    page_counters = [st for st in STATS if st.kind == "counter" and st.unit == "pages"]
    assert all(st.metric_name.endswith("_pages_total") for st in page_counters)
