"""The emulated media's latency and bandwidth: the device's arithmetic, and through a
mount, that a delayed request holds up no other. Speed figures live in the benchmark
(`scripts/bench --only read_latency`); these only check lower bounds and overlap."""

from __future__ import annotations

import errno
import os
import threading
import time

import pytest
import trio

from cramfs.config import DeviceConfig
from cramfs.device import Device, DeviceError
from cramfs.timer import sleep_precise

from .helpers import FakeClock

P = 4096


def test_latency_is_per_page_and_bandwidth_is_shared():
    dev = Device(DeviceConfig(advertised=1 << 30, read_latency=100, write_latency=300))
    assert dev.media_delay(False, P, 0.0) == pytest.approx(100e-6)
    assert dev.media_delay(False, 3 * P, 0.0) == pytest.approx(300e-6)
    assert dev.media_delay(True, 2 * P, 0.0) == pytest.approx(600e-6)
    assert dev.media_delay(False, 0, 0.0) == 0
    dev.set("read_latency", "0")
    dev.set("bandwidth", "100")                    # 100 MB/s: 1 MB takes 10 ms
    assert dev.media_delay(False, 1_000_000, 5.0) == pytest.approx(0.010)
    # a second request at the same moment waits for the first one's transfer
    assert dev.media_delay(False, 1_000_000, 5.0) == pytest.approx(0.020)
    # one that comes when the link is idle again does not
    assert dev.media_delay(False, 1_000_000, 9.0) == pytest.approx(0.010)


def test_knobs_are_bounded():
    dev = Device(DeviceConfig(advertised=1 << 30))
    for name, bad in (("read_latency", "-1"), ("read_latency", "99999999"),
                      ("bandwidth", "1e3"), ("write_latency", "1.5")):
        with pytest.raises(DeviceError) as e:
            dev.set(name, bad)
        assert e.value.errno == errno.EINVAL


async def test_precise_sleep_sleeps_at_least_nearly_what_is_asked():
    for asked in (300e-6, 3e-3):
        start = time.perf_counter()
        await sleep_precise(asked)
        assert time.perf_counter() - start >= asked * 0.5


async def test_sleeps_overlap():
    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(sleep_precise, 0.05)
    assert time.perf_counter() - start < 0.5, "twenty 50 ms sleeps run side by side"


@pytest.mark.mount
def test_a_slow_read_holds_up_no_other(mounter):
    m = mounter("-o", "read_latency=100000,dram=0")          # 100 ms a page
    path = m.path / "f"
    path.write_bytes(os.urandom(4 * P))
    fd = os.open(path, os.O_RDONLY)
    try:
        start = time.perf_counter()
        assert len(os.pread(fd, P, 0)) == P
        assert time.perf_counter() - start >= 0.09, "the asked latency is added"
        times: list[float] = []

        def read(i: int) -> None:
            t = time.perf_counter()
            os.pread(fd, P, i * P)
            times.append(time.perf_counter() - t)

        threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
        start = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert time.perf_counter() - start < 0.35, "four 100 ms reads overlap, not queue"
        assert m.ctl("read_latency") == "100000\n"
        m.set("read_latency", "0")
        start = time.perf_counter()
        os.pread(fd, P, 0)
        assert time.perf_counter() - start < 0.09
    finally:
        os.close(fd)


def test_release_delay_keeps_freed_pages_charged_until_it_passes():
    from .helpers import check_accounting, random_page, text_page

    dev = Device(DeviceConfig(advertised=1 << 30, physical=1 << 24, dram=0,
                              release_delay=60_000))
    t = dev.table("f")
    for i in range(40):
        dev.write(t, i * P, text_page(i) if i % 2 else random_page(i))
    used = dev.physical_used
    dev.discard(t, 0, 20)
    s = dev.stats()
    assert s["pending_release_pages"] == 20 and s["pending_release_bytes"] > 0
    assert dev.physical_used == used, "still charged"
    assert dev.charged + s["unattributed_bytes"] == dev.physical_used
    check_accounting(dev, [t])
    dev.compact()                                   # pending objects move like the rest
    check_accounting(dev, [t])
    assert dev.read(t, 20 * P, 20 * P) == b"".join(
        text_page(i) if i % 2 else random_page(i) for i in range(20, 40))
    dev.release_pending(float("inf"))
    assert dev.stats()["pending_release_pages"] == 0 and dev.physical_used < used
    dev.drop(t)
    dev.release_pending(float("inf"))
    assert dev.physical_used == 0 and dev.pool.stored_bytes == 0


def test_a_pending_release_completes_by_itself():
    clock = FakeClock()
    dev = Device(DeviceConfig(advertised=1 << 30, physical=1 << 24, dram=0,
                              release_delay=20), monotonic=clock)
    t = dev.table("f")
    dev.write(t, 0, os.urandom(P))
    dev.discard(t, 0, 1)
    assert dev.physical_used == P
    clock.advance(0.019)
    assert dev.tick() == 0 and dev.physical_used == P, "not yet due"
    clock.advance(0.002)
    assert dev.tick() == 1                          # what the daemon calls every 10 ms
    assert dev.physical_used == 0


@pytest.mark.mount
def test_release_delay_through_a_mount(mounter):
    m = mounter("-o", "release_delay=300,dram=0")
    (m.path / "f").write_bytes(os.urandom(8 * P))
    (m.path / "f").unlink()
    s = m.stat()
    assert s["pending_release_pages"] == 8 and s["physical_used"] == 8 * P
    assert "pending_release_pages: 8" in m.ctl("status")
    # no request needed: the daemon ticks (polled, not slept for: a loaded machine
    # may tick late, never early)
    deadline = time.monotonic() + 30
    while (s := m.stat())["pending_release_pages"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert s["pending_release_pages"] == 0 and s["physical_used"] == 0


@pytest.mark.parametrize("engine", ["python", "native"])
def test_the_peak_never_counts_frees_already_due(engine):
    """mem_used_max is sampled after the delayed frees now due are given back, as zram
    would never have held them: two pages freed long ago and a new one stored make a
    peak of two pages, not three."""
    from .helpers import random_page

    clock = FakeClock()
    dev = Device(DeviceConfig(advertised=1 << 30, physical=1 << 24, dram=0, engine=engine,
                              release_delay=20), monotonic=clock)
    t = dev.table("f")
    dev.write(t, 0, random_page(1) + random_page(2))        # two huge pages: 8 KiB
    dev.discard(t, 0, 2)
    clock.advance(1)                                         # long due, no tick between
    dev.write(t, 2 * P, random_page(3))
    assert dev.mem_used_max == 2 * P and dev.physical_used == P
