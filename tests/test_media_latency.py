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
