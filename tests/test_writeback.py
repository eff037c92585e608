"""Writeback to a backing file: zram's interface, the RFC's further tier, in process.

This kernel's zram is built without CONFIG_ZRAM_WRITEBACK, so these follow the admin
guide and zram_drv.c rather than the kernel itself. The property tests of every
interleaving are in test_writeback_properties.py; the real mount is at the end.
"""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from cramfs import control
from cramfs.backing import run_inline
from cramfs.config import DeviceConfig
from cramfs.device import Device, DeviceError
from cramfs.namespace import Namespace
from cramfs.pagetable import BACKED, DEVICE, FALLBACK, HUGE_BIT, PROMOTED, kind_of

from .conftest import CRAMFS
from .helpers import check_accounting, random_page, text_page

P = 4096


def backing_file(tmp_path: Path, pages: int = 1024) -> str:
    path = tmp_path / "backing"
    with open(path, "wb") as f:
        f.truncate(pages * P)
    return str(path)


def device(tmp_path: Path, pages: int = 1024, **kw: Any) -> Device:
    kw = {"dram": 0, "advertised": 1 << 26, "physical": 1 << 24, **kw}
    return Device(DeviceConfig(backing_dev=backing_file(tmp_path, pages), **kw))


def mixed(n: int) -> list[bytes]:
    """Text, incompressible and same-filled pages, in turn."""
    return [(text_page, random_page, lambda i: bytes([i % 200 + 1]) * P)[i % 3](i)
            for i in range(n)]


def fill(dev: Device, pages: list[bytes]) -> object:
    t = dev.table("f")
    for i, page in enumerate(pages):
        dev.write(t, i * P, page)
    return t


def allocated(dev: Device) -> int:
    assert dev.backing is not None
    return dev.backing.allocated_bytes()


@pytest.fixture(params=["python", "native"])
def engine(request: pytest.FixtureRequest) -> str:
    from cramfs.engine import native_available
    if request.param == "native" and not native_available():
        pytest.skip("the native engine is not built")
    return str(request.param)


def test_written_back_pages_keep_orig_data_size_and_leave_the_pool(tmp_path, engine):
    dev = device(tmp_path, engine=engine)
    pages = mixed(30)
    t = fill(dev, pages)
    before = dev.mm_stat().split()
    assert dev.mark_idle(None) == 20, "same-filled pages are never idle"
    run_inline(dev.writeback("idle"))
    after = dev.mm_stat().split()
    assert after[0] == before[0], "orig_data_size keeps written-back pages"
    assert after[1:3] == ["0", "0"], "they leave compr_data_size and mem_used_total"
    assert after[5] == before[5] == "10", "same-filled pages stay"
    assert after[7] == "0" and after[8] == before[8], "huge_pages drops, huge_pages_since not"
    assert dev.bd_stat().split() == ["20", "0", "20"]
    assert allocated(dev) >= 20 * P
    s = dev.stats()
    assert s["written_back_pages"] == 20 and s["stored_pages"] == 30
    # direct mode, no DRAM: reads are served from the file in place, each a fault
    faults = dev.counters.faults
    assert dev.read(t, 0, 30 * P) == b"".join(pages)
    assert dev.counters.faults == faults + 20 and dev.bd_stat().split() == ["20", "20", "20"]
    check_accounting(dev, [t])
    dev.close()


def test_zswap_mode_promotes_a_written_back_page_and_frees_its_block(tmp_path, engine):
    dev = device(tmp_path, engine=engine, mode="zswap", dram=1 << 20)
    t = fill(dev, [text_page(i) for i in range(8)])
    run_inline(dev.writeback("page", (t, 3)))
    assert kind_of(t.get(3)) == BACKED and dev.counters.bd_writes == 1
    assert dev.read(t, 3 * P, P) == text_page(3)
    assert kind_of(t.get(3)) == PROMOTED and dev.counters.promotions == 1
    assert dev.backing.count == 0 and dev.counters.faults == 1
    dev.settle()
    assert allocated(dev) == 0, "the block's hole is punched"
    dev.close()


def test_each_writeback_type_takes_what_zram_takes(tmp_path):
    dev = device(tmp_path)
    t = fill(dev, [text_page(0), random_page(1), text_page(2), random_page(3), bytes(P)])
    dev.mark_idle(None)
    dev.read(t, 2 * P, 2 * P)                      # pages 2 and 3 accessed: not idle
    run_inline(dev.writeback("huge_idle"))
    assert [kind_of(t.get(i)) for i in range(4)] == [DEVICE, BACKED, DEVICE, DEVICE]
    run_inline(dev.writeback("huge"))
    assert kind_of(t.get(3)) == BACKED
    run_inline(dev.writeback("idle"))
    assert kind_of(t.get(0)) == BACKED and kind_of(t.get(2)) == DEVICE
    # incompressible: huge pages recompression tried without gain
    t2 = fill(dev, [random_page(7), random_page(8)])
    run_inline(dev.writeback("incompressible"))
    assert dev.counters.bd_writes == 3
    dev.set_recomp_algorithm("zstd")
    dev.recompress("huge")
    run_inline(dev.writeback("incompressible"))
    assert [kind_of(t2.get(i)) for i in range(2)] == [BACKED, BACKED]
    assert dev.read(t, 0, 5 * P) == b"".join(
        [text_page(0), random_page(1), text_page(2), random_page(3), bytes(P)])
    dev.close()


def test_a_write_to_a_page_under_writeback_wins(tmp_path, engine):
    dev = device(tmp_path, engine=engine)
    t = fill(dev, [random_page(i) for i in range(4)])
    job = dev.writeback("huge")                   # planned: the pages are under writeback
    assert job is not None and dev.backing.count == 4
    dev.write(t, P, text_page(9))                 # rewritten meanwhile
    dev.discard(t, 2, 1)                          # and discarded
    run_inline(job)                               # the I/O lands
    assert [kind_of(t.get(i)) for i in range(4)] == [BACKED, DEVICE, 0, BACKED]
    assert dev.counters.writeback_dropped == 2 and dev.counters.bd_writes == 2
    assert dev.read(t, 0, 4 * P) == random_page(0) + text_page(9) + bytes(P) + random_page(3)
    dev.settle()
    assert dev.backing.count == 2 and allocated(dev) <= 2 * P + (64 << 10)
    check_accounting(dev, [t])
    dev.close()


def test_writeback_limit_as_zram(tmp_path):
    dev = device(tmp_path)
    t = fill(dev, [random_page(i) for i in range(6)])
    ns = Namespace(dev)
    store = lambda name, text: run_inline(  # noqa: E731
        control.store(ns, control.ATTRIBUTES[name], text.encode()))
    show = lambda name: control.ATTRIBUTES[name].show(ns)  # noqa: E731
    store("writeback_limit_enable", "1")
    store("writeback_limit", "4")
    with pytest.raises(DeviceError) as e:
        store("writeback", "huge")
    assert e.value.errno == errno.EIO, "zram: EIO once the limit is spent"
    assert show("writeback_limit") == "0\n" and dev.counters.bd_writes == 4
    with pytest.raises(DeviceError) as e:
        store("writeback", "huge")
    assert e.value.errno == errno.EIO
    store("writeback_limit_enable", "0")
    store("writeback", "huge")
    assert show("bd_stat") == "       6        0        6\n"
    for name, text in (("writeback_limit_enable", "2"), ("writeback_limit", "-1"),
                       ("writeback", "warm"), ("writeback", "page=f"),
                       ("writeback", "page=nosuch:1"), ("writeback", "page=f:x")):
        with pytest.raises(DeviceError) as e:
            store(name, text)
        assert e.value.errno in (errno.EINVAL, errno.ENOENT), (name, text)
    assert "writeback: expected" in dev.events.text().decode()
    assert [kind_of(t.get(i)) for i in range(6)] == [BACKED] * 6
    dev.close()


def test_a_full_backing_file_is_enospc_and_loses_nothing(tmp_path, engine):
    dev = device(tmp_path, pages=3, engine=engine)
    pages = [random_page(i) for i in range(5)]
    t = fill(dev, pages)
    with pytest.raises(DeviceError) as e:
        run_inline(dev.writeback("huge"))
    assert e.value.errno == errno.ENOSPC
    assert dev.pages[BACKED] == 3 and dev.pages[DEVICE] == 2 and dev.counters.bd_full == 1
    assert dev.read(t, 0, 5 * P) == b"".join(pages)
    assert "3 pages written back, stopped: backing file full" in dev.events.text().decode()
    dev.close()


def test_a_failing_backing_file_is_eio_and_loses_nothing(tmp_path, engine):
    dev = device(tmp_path, engine=engine, fallback="writeback", physical=64 << 10,
                 reclaim="writeback")
    assert dev.backing is not None
    good = dev.backing.fd
    dev.backing.fd = os.open(dev.config.backing_dev, os.O_RDONLY)   # writes now fail
    t = fill(dev, [text_page(i) for i in range(4)])
    with pytest.raises(DeviceError) as e:
        run_inline(dev.writeback("page", (t, 1)))
    assert e.value.errno == errno.EIO and kind_of(t.get(1)) == DEVICE
    # fallback=writeback: the refused write fails, the old page stays
    pages = [random_page(i) for i in range(40)]
    stored = 0
    for i, page in enumerate(pages):
        try:
            dev.write(t, (4 + i) * P, page)
            run_inline(dev.staged_job())
            stored = i + 1
        except DeviceError as e:
            assert e.errno in (errno.EIO, errno.ENOSPC)
        run_inline(dev.flush_job())              # writes behind fail: kept in host memory
    assert dev.counters.bd_failed > 0 and dev.pages[FALLBACK] > 0
    assert dev.read(t, 0, 4 * P) == b"".join(text_page(i) for i in range(4))
    assert stored > 0
    check_accounting(dev, [t])
    os.close(dev.backing.fd)
    dev.backing.fd = good
    dev.close()


def test_fallback_writeback_sends_refused_pages_to_the_file(tmp_path, engine):
    dev = device(tmp_path, engine=engine, physical=64 << 10, fallback="writeback")
    pages = [random_page(i) for i in range(24)]
    t = fill(dev, pages)
    dev.settle()
    c = dev.counters
    assert c.reject_write_control > 0 and c.writeback_fallback == c.reject_write_control
    assert dev.pages[BACKED] == c.writeback_fallback and dev.pages[FALLBACK] == 0
    assert dev.physical_used <= 64 << 10
    assert dev.read(t, 0, 24 * P) == b"".join(pages)
    assert "to the backing file (fallback)" in dev.events.text().decode()
    with pytest.raises(ValueError, match="needs a backing_dev"):
        DeviceConfig(fallback="writeback").check()
    plain = Device(DeviceConfig())
    for name in ("fallback", "reclaim"):
        with pytest.raises(DeviceError) as e:
            plain.set(name, "writeback")
        assert e.value.errno == errno.EINVAL
    dev.close()


@pytest.mark.parametrize("gone", ["truncate", "discard", "drop"])
def test_a_staged_page_into_a_hole_does_not_land_after_its_slot_is_gone(tmp_path, engine,
                                                                         gone):
    # fallback=writeback stages a refused write to a hole: the slot holds no word
    # while the write is in flight, so only the mark says the page is on its way
    dev = device(tmp_path, engine=engine, physical=64 << 10, fallback="writeback")
    t = fill(dev, [random_page(i) for i in range(24)])
    assert dev.wb.staged, "some pages were refused and staged"
    holes = [idx for _, idx, _, _ in dev.wb.staged if not t.get(idx)]
    assert holes, "a staged page went to a hole"
    if gone == "truncate":
        dev.truncate(t, 0)
    elif gone == "discard":
        dev.discard(t, 0, 24)
    else:
        dev.drop(t)
    dev.settle()
    assert not any(dev.pages) and dev.physical_used == 0, "nothing held for a gone slot"
    assert dev.backing is not None and dev.backing.count == 0 and allocated(dev) == 0
    assert dev.counters.writeback_dropped >= len(holes)
    dev.close()


def test_reclaim_compacts_at_most_once_an_interval_then_writes_back(tmp_path, engine):
    clock = [100.0]
    path = backing_file(tmp_path)
    dev = Device(DeviceConfig(advertised=1 << 26, physical=256 << 10, dram=0, engine=engine,
                              backing_dev=path, reclaim="compact", fallback="host"),
                 monotonic=lambda: clock[0])
    t = dev.table("f")
    n = 0
    while not dev.counters.reject_write_control:
        dev.write(t, n * P, text_page(n))
        n += 1
    c = dev.counters
    assert c.reclaim_compactions == 1 and c.reclaim_failed >= 1
    refusals = c.reject_write_control
    dev.write(t, n * P, text_page(n))
    assert c.reclaim_compactions == 1, "at most one compaction per reclaim_interval"
    assert c.reject_write_control == refusals + 1
    clock[0] += 1.0
    dev.set("reclaim", "writeback")
    dev.set("reclaim_pages", "64")
    dev.mark_idle(None)
    dev.read(t, 0, P)                                   # page 0 is hot now
    dev.write(t, (n + 1) * P, text_page(n + 1))
    assert c.reclaim_compactions == 2 and c.reclaim_written == 64 and c.reclaim_rescued == 1
    assert kind_of(t.get(0)) == DEVICE, "the coldest pages go first, idle ones before"
    assert kind_of(t.get(n + 1)) == DEVICE, "the page was stored, not refused"
    assert "64 pages written back; stored" in dev.events.text().decode()
    assert dev.read(t, 0, (n + 2) * P) == b"".join(text_page(i) for i in range(n + 2))
    dev.settle()
    assert not dev.backing.inflight and dev.counters.bd_writes == 64
    check_accounting(dev, [t])
    dev.close()


def test_backing_dev_changes_only_while_empty(tmp_path):
    dev = Device(DeviceConfig())
    ns = Namespace(dev)
    attr = control.ATTRIBUTES["backing_dev"]
    assert attr.show(ns) == "none\n" and attr.mode == 0o600
    with pytest.raises(DeviceError) as e:
        dev.writeback("huge")
    assert e.value.errno == errno.ENODEV, "zram: no backing device"
    for text, err in (("relative/path", errno.EINVAL), (str(tmp_path), errno.EINVAL),
                      (str(tmp_path / "missing"), errno.EINVAL)):
        with pytest.raises(DeviceError) as e:
            run_inline(control.store(ns, attr, text.encode()))
        assert e.value.errno == err, text
    empty = tmp_path / "empty"
    empty.touch()
    with pytest.raises(DeviceError, match="smaller than a page"):
        run_inline(control.store(ns, attr, str(empty).encode()))
    path = backing_file(tmp_path)
    run_inline(control.store(ns, attr, path.encode()))
    assert attr.show(ns) == path + "\n" and dev.backing is not None
    t = dev.table("f")
    dev.write(t, 0, random_page(1))
    with pytest.raises(DeviceError) as e:
        run_inline(control.store(ns, attr, b"none"))
    assert e.value.errno == errno.EBUSY
    dev.set("fallback", "writeback")
    dev.drop(t)
    with pytest.raises(DeviceError) as e:
        run_inline(control.store(ns, attr, b"none"))
    assert e.value.errno == errno.EINVAL, "fallback=writeback still needs it"
    dev.set("fallback", "host")
    dev.settle()
    run_inline(control.store(ns, attr, b"none"))
    assert dev.backing is None and "backing_dev=none" in dev.events.text().decode()
    dev.close()


def test_huge_bit_and_recompression_do_not_follow_a_page_to_the_file(tmp_path):
    dev = device(tmp_path)
    t = fill(dev, [random_page(1)])
    assert t.get(0) & HUGE_BIT and dev.huge_pages == 1
    run_inline(dev.writeback("huge"))
    assert dev.huge_pages == 0 and not t.get(0) & HUGE_BIT
    dev.write(t, 0, text_page(1))                # a rewrite frees the block
    dev.settle()
    assert dev.backing.count == 0 and allocated(dev) == 0
    dev.close()


# ---------------------------------------------------------------- through a mount

def test_through_a_mount_writeback_recompress_read_discard(mounter, tmp_path):
    path = backing_file(tmp_path, pages=4096)
    m = mounter("-o", f"dram=0,mode=direct,backing_dev={path}")
    assert m.ctl("backing_dev") == path + "\n"
    pages = mixed(300) + [bytes([65 + i % 16]) * 2048 + random_page(i)[:2048]
                          for i in range(60)]
    data = b"".join(pages)
    (m.path / "f").write_bytes(data)
    m.set("idle", "all")
    m.set("writeback", "huge")
    s = m.stat()
    assert s["bd_writes"] == 100 and s["written_back_pages"] == 100
    m.set("recomp_algorithm", "algo=zstd")
    m.set("recompress", "type=idle")
    m.set("writeback", "page=f:0")
    assert m.stat()["written_back_pages"] == 101
    m.set("writeback", "idle")
    s = m.stat()
    assert s["written_back_pages"] == 100 + 100 + 60 and s["physical_used"] == 0
    assert m.ctl("bd_stat").split() == ["260", "0", "260"]
    before = os.stat(path).st_blocks
    assert before * 512 >= 260 * P
    assert (m.path / "f").read_bytes() == data, "every page byte-exact through the file"
    assert 260 <= m.stat()["bd_reads"] <= 262, "a page read across two requests counts twice"
    m.set("discard", "f 0 400K")                     # the first 100 pages
    after = os.stat(path).st_blocks
    assert after < before and before - after >= 60 * P // 512, (before, after)
    (m.path / "f").unlink()
    assert os.stat(path).st_blocks * 512 <= 64 << 10, "unlink punches the rest"
    assert m.ctl("bd_stat").split()[0] == "0"
    for name, text, err in (("writeback", "warm", errno.EINVAL),
                            ("backing_dev", str(m.path / "x"), errno.EINVAL),
                            ("backing_dev", "none", 0)):
        if err:
            with pytest.raises(OSError) as e:
                m.set(name, text)
            assert e.value.errno == err
        else:
            m.set(name, text)
    assert m.ctl("backing_dev") == "none\n"
    with pytest.raises(OSError) as e:
        m.set("writeback", "huge")
    assert e.value.errno == errno.ENODEV


def test_backing_dev_on_the_mount_itself_is_refused_without_a_hang(mounter, tmp_path):
    """The daemon must not open a file on its own mount from its request loop: the
    lookup would wait for the very loop that asked. It opens off the loop, then
    refuses what has the mount's st_dev (here through a bind mount, which no path
    check can see)."""
    m = mounter()
    inside = m.path / "inside"
    with open(inside, "wb") as f:
        f.truncate(1 << 20)                       # sized, but no page written
    bind = tmp_path / "bind"
    bind.mkdir()
    subprocess.run(["mount", "--bind", str(m.path), str(bind)], check=True)
    try:
        for path in (inside, bind / "inside"):
            fd = os.open(m.path / ".cram" / "backing_dev", os.O_WRONLY)
            try:
                with pytest.raises(OSError) as e:
                    os.write(fd, f"{path}\n".encode())
                assert e.value.errno == errno.EINVAL
            finally:
                os.close(fd)
    finally:
        subprocess.run(["umount", "-l", str(bind)], check=True)
    assert m.ctl("events").count("is on this cramfs mount") == 2
    assert m.ctl("backing_dev") == "none\n"


def test_fallback_writeback_through_a_mount(mounter, tmp_path):
    path = backing_file(tmp_path, pages=4096)
    m = mounter("-o", f"physical=1M,dram=0,fallback=writeback,reclaim=writeback,"
                f"backing_dev={path}")
    data = b"".join(random_page(i) for i in range(1024))   # 4 MiB into 1 MiB
    (m.path / "f").write_bytes(data)
    s = m.stat()
    assert s["physical_used"] <= 1 << 20
    assert s["writeback_fallback"] + s["reclaim_written"] > 0
    assert s["written_back_pages"] + s["stored_incompressible_pages"] == 1024
    assert (m.path / "f").read_bytes() == data
    assert "reclaim" in m.ctl("events")


@pytest.mark.parametrize("opts, fragment", [
    ("backing_dev=relative", "absolute path"),
    ("backing_dev=/nonexistent/file", "cannot use backing_dev"),
    ("fallback=writeback", "needs a backing_dev"),
    ("reclaim=writeback", "needs a backing_dev"),
    ("reclaim=sometimes", "expected one of off, compact, writeback"),
    ("backing_dev=MNT/inside", "is under the mountpoint"),
])
def test_bad_backing_options_are_one_line_and_exit_2(tmp_path, opts, fragment):
    (tmp_path / "mnt").mkdir()
    opts = opts.replace("MNT", str(tmp_path / "mnt"))
    r = subprocess.run([CRAMFS, "-o", opts, str(tmp_path / "mnt")], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 2 and fragment in r.stderr and len(r.stderr.splitlines()) == 1


def test_a_full_filesystem_under_the_backing_file_through_a_mount(mounter, tmp_path):
    """A real ENOSPC: the backing file is sparse on a 64 KiB tmpfs, so its writes fail
    once 16 pages are in. The writeback fails for those pages only, and every page
    still reads back."""
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)], check=True)
    try:
        path = backing_file(small, pages=1024)              # 4 MiB, sparse, on 64 KiB
        m = mounter("-o", f"dram=0,mode=direct,backing_dev={path}")
        pages = [random_page(i) for i in range(40)]
        (m.path / "f").write_bytes(b"".join(pages))
        with pytest.raises(OSError) as e:
            m.set("writeback", "huge")
        assert e.value.errno in (errno.ENOSPC, errno.EIO)
        s = m.stat()
        assert s["bd_failed"] > 0 and 0 < s["written_back_pages"] <= 16
        assert (m.path / "f").read_bytes() == b"".join(pages)
        assert "backing file write failed" in m.ctl("events")
        (m.path / "f").unlink()
        assert m.stat()["bd_count"] == 0
        m.close()
    finally:
        subprocess.run(["umount", str(small)], check=False)
