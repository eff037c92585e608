"""Idle marking and recompression, zram's interface on cramfs's device."""

from __future__ import annotations

import errno
import random

import pytest

from cramfs.config import DeviceConfig
from cramfs.device import Device, DeviceError
from cramfs.pagetable import HUGE_BIT, TRIED, algo_of, kind_of

from .helpers import FakeClock, check_accounting, random_page, text_page

P = 4096


def small_alphabet_page(seed: int) -> bytes:
    """lz4 has no entropy coder: sixteen letters at random stay at 4 KiB (huge), while
    zstd's Huffman stage takes them to about half."""
    rng = random.Random(seed)
    return bytes(rng.choice(b"ABCDEFGHIJKLMNOP") for _ in range(P))


def make(clock: FakeClock | None = None) -> tuple[Device, object]:
    dev = Device(DeviceConfig(advertised=1 << 24, physical=1 << 22, dram=0),
                 monotonic=clock or FakeClock())
    return dev, dev.table("f")


def test_idle_all_then_an_access_clears_the_mark():
    dev, t = make()
    for i in range(4):
        dev.write(t, i * P, text_page(i))
    dev.write(t, 4 * P, bytes(P))                      # same-filled: never idle
    assert dev.mark_idle(None) == 4
    assert [t.age(i) for i in range(4)] == [0, 0, 0, 0]
    assert dev.read(t, P, P) == text_page(1)           # an access
    assert t.age(1) > 0 and t.age(0) == 0
    dev.write(t, 2 * P, text_page(9))                  # a write is an access too
    assert t.age(2) > 0
    assert dev.mark_idle(None) == 2, "already idle pages are not counted again"
    check_accounting(dev, [t])


def test_idle_by_age():
    clock = FakeClock()
    dev, t = make(clock)
    dev.write(t, 0, text_page(1))
    dev.mark_idle(None)                                # starts tracking
    dev.read(t, 0, P)
    clock.advance(100)                                 # 100 seconds pass
    dev.write(t, P, text_page(2))
    assert dev.mark_idle(50) == 1, "only the page not accessed for 50 s"
    assert t.age(0) == 0 and t.age(1) > 0


def test_recompress_huge_keeps_only_what_shrinks_a_class():
    dev, t = make()
    pages = [small_alphabet_page(i) for i in range(4)] + [random_page(i) for i in range(3)]
    pages += [small_alphabet_page(i) for i in range(100, 140)]
    for i, page in enumerate(pages):
        dev.write(t, i * P, page)
    assert all(t.get(i) & HUGE_BIT for i in range(len(pages))), "all huge with lz4"
    with pytest.raises(DeviceError) as e:
        dev.recompress("huge")
    assert e.value.errno == errno.EINVAL, "no secondary algorithm yet"
    dev.set_recomp_algorithm("zstd")
    used = dev.physical_used
    assert dev.recompress("huge") == 44
    c = dev.counters
    assert (c.recompressed_pages, c.recompress_skipped_pages) == (44, 3)
    assert c.recompress_saved_bytes > 44 * 1500
    assert dev.physical_used < used * 0.7, "44 pages in zspages instead of 44 whole pages"
    assert [algo_of(t.get(i)) for i in range(4)] == [1] * 4
    assert all(t.age(i) & TRIED for i in range(4, 7))
    assert dev.read(t, 0, len(pages) * P) == b"".join(pages), "each decompresses as written"
    assert dev.recompress("huge") == 0 and c.recompress_skipped_pages == 3, "not retried"
    dev.write(t, 4 * P, small_alphabet_page(9))        # a rewrite clears the mark
    assert not t.age(4) & TRIED and dev.recompress("huge") == 1
    check_accounting(dev, [t])


def test_recompress_idle_max_pages_and_threshold():
    dev, t = make()
    for i in range(6):
        dev.write(t, i * P, small_alphabet_page(i))
    dev.set_recomp_algorithm("zstd")
    dev.mark_idle(None)
    dev.read(t, 0, P)                                  # page 0 is no longer idle
    assert dev.recompress("huge_idle", max_pages=2) == 2
    assert dev.recompress("idle", threshold=P + 1) == 0, "all objects are smaller"
    assert dev.recompress("idle") == 3
    assert algo_of(t.get(0)) != 1, "the accessed page was left alone"
    assert all(t.age(i) == 0 for i in range(1, 6)), "recompression is no access"
    check_accounting(dev, [t])


def test_the_control_files(tmp_path):
    from cramfs import control
    from cramfs.control import ATTRIBUTES
    from cramfs.namespace import Namespace

    ns = Namespace(Device(DeviceConfig(advertised=1 << 24, physical=1 << 22, dram=0)))

    def store(name: str, text: str) -> None:
        control.store(ns, ATTRIBUTES[name], text.encode())

    f = ns.create("f", 0o600, 0, 0)
    ns.write(f, 0, small_alphabet_page(1) + small_alphabet_page(2))
    for name, bad in (("recomp_algorithm", "algo=brotli"), ("recomp_algorithm", "zstd"),
                      ("recomp_algorithm", "algo=zstd priority=2"), ("idle", "soon"),
                      ("recompress", "type=huge"), ("idle", "-1")):
        with pytest.raises(DeviceError) as e:
            store(name, bad)
        assert e.value.errno == errno.EINVAL, (name, bad)
    assert ATTRIBUTES["recomp_algorithm"].show(ns) == "#1: lzo-rle lzo lz4 zstd\n", "none chosen"
    store("recomp_algorithm", "algo=zstd priority=1")
    assert ATTRIBUTES["recomp_algorithm"].show(ns) == "#1: lzo-rle lzo lz4 [zstd]\n"
    for bad in ("type=cold", "type=huge max_pages=x", "type=huge bogus=1",
                "type=huge type=idle"):
        with pytest.raises(DeviceError):
            store("recompress", bad)
    store("idle", "all")
    store("recompress", "type=huge_idle max_pages=1")
    assert ns.stats()["recompressed_pages"] == 1
    assert kind_of(f.table.get(0)) == 2


@pytest.mark.mount
def test_through_a_mount(mounter):
    m = mounter("-o", "dram=0")
    pages = [small_alphabet_page(i) for i in range(32)] + [random_page(i) for i in range(4)]
    (m.path / "f").write_bytes(b"".join(pages))
    before = m.stat()
    m.set("recomp_algorithm", "algo=zstd")
    assert m.ctl("recomp_algorithm") == "#1: lzo-rle lzo lz4 [zstd]\n"
    m.set("idle", "all")
    (m.path / "f").open("rb").close()                    # opening reads nothing
    with open(m.path / "f", "rb") as f:                  # one page accessed: not idle
        f.seek(5 * P)
        f.read(P)
    m.set("recompress", "type=huge_idle")
    s = m.stat()
    assert s["recompressed_pages"] == 31 and s["recompress_skipped_pages"] == 4
    assert s["physical_used"] < before["physical_used"]
    assert (m.path / "f").read_bytes() == b"".join(pages)
    assert "recompress type=huge_idle: 35 pages tried, 31 recompressed with zstd" in \
        m.ctl("events")
    with pytest.raises(OSError) as e:
        m.set("recompress", "type=warm")
    assert e.value.errno == errno.EINVAL
