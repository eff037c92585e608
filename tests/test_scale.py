"""Scale: a million pages, a 1 TiB sparse file, many files, a huge advertised size."""

from __future__ import annotations

import os
import random

from cramfs.config import DeviceConfig
from cramfs.device import Device
from cramfs.namespace import Namespace
from cramfs.procfs import status_bytes

from .helpers import check_accounting, text_page

P = 4096


def big_namespace() -> Namespace:
    return Namespace(Device(DeviceConfig(advertised=1 << 40, physical=16 << 30, dram=0)))


def test_a_million_pages_cost_at_most_16_bytes_each():
    ns = big_namespace()
    f = ns.create("big", 0o600, 0, 0)
    chunk = b"".join(text_page(i) for i in range(256))      # 1 MiB, 256 distinct pages
    n = 1 << 20
    for i in range(n // 256):
        assert ns.write(f, i << 20, chunk) == 1 << 20
    dev = ns.device
    assert f.table.count == f.table.stored_pages == n
    assert dev.logical_stored == n * P and dev.stats()["stored_pages"] == n
    metadata = f.table.metadata_bytes + dev.pool.metadata_bytes
    assert metadata / n <= 16, f"{metadata / n:.1f} bytes of metadata per stored page"
    check_accounting(dev, [f.table])
    rng = random.Random(3)
    for idx in rng.sample(range(n), 500):
        assert ns.read(f, idx * P, P) == text_page(idx % 256)
    ns.unlink("big")
    assert dev.physical_used == 0 and dev.pool.stored_bytes == 0


def test_a_sparse_terabyte_costs_nothing_for_its_holes():
    ns = big_namespace()
    f = ns.create("sparse", 0o600, 0, 0)
    ns.resize(f, 1 << 40)
    for off in (0, 1 << 39, (1 << 40) - P):
        ns.write(f, off, text_page(off % 97))
    assert f.table.count == 3
    assert f.table.metadata_bytes <= 3 * 8 * 512      # one 4 KiB chunk per written page
    assert ns.read(f, 1 << 30, 3 * P) == bytes(3 * P)
    assert ns.read(f, (1 << 40) - P, P) == text_page(((1 << 40) - P) % 97)
    assert ns.statvfs()["f_blocks"] == (1 << 40) // P


def test_many_files_keep_exact_accounting():
    ns = big_namespace()
    files = [ns.create(f"f{i}", 0o600, 0, 0) for i in range(5000)]
    for i, f in enumerate(files):
        ns.write(f, (i % 7) * P, text_page(i))
    check_accounting(ns.device, [f.table for f in files])
    for i in range(0, 5000, 2):
        ns.unlink(f"f{i}")
    left = files[1::2]
    check_accounting(ns.device, [f.table for f in left])
    assert ns.device.stats()["stored_pages"] == 2500
    used = ns.device.physical_used
    freed = ns.device.compact()        # half the objects are gone: zspages are sparse
    assert freed > 0 and ns.device.physical_used == used - freed * P
    for i, f in enumerate(left):
        assert ns.read(f, (2 * i + 1) % 7 * P, P) == text_page(2 * i + 1)


def _rss(pid: int) -> int:
    return status_bytes(pid, "VmRSS")


def test_a_terabyte_mount_starts_small_and_holes_stay_free(mounter):
    small = mounter()
    big = mounter("-o", "advertised=1T,physical=16G")
    # nothing is allocated up front: the 1T/16G device is no bigger than an 8G/1G one
    assert _rss(big.proc.pid) <= _rss(small.proc.pid) + (4 << 20)
    path = big.path / "sparse"
    path.write_bytes(b"")
    os.truncate(path, 1 << 40)
    before = _rss(big.proc.pid)
    fd = os.open(path, os.O_WRONLY)
    try:
        for off in (0, 1 << 39, (1 << 40) - P):
            os.pwrite(fd, text_page(7), off)
    finally:
        os.close(fd)
    assert _rss(big.proc.pid) - before < 1 << 20
    assert os.statvfs(big.path).f_blocks == (1 << 40) // P
