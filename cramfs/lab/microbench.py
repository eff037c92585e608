"""The benchmark's in-process measurements: no mount, no fio, no FUSE.

scripts/bench puts these beside its fio rows, to say where the time of a request goes:
single-threaded lz4 on the same pages (the bound for one compressor thread), each page
compressor's cost, what a second thread gains, what one write and one swap-in cost in
cramfs's own code, what recording a trace adds, and the bookkeeping bytes per stored
page. The real page data they run on, this machine's files, is gathered here too.
"""

from __future__ import annotations

import os
import time
from contextlib import suppress
from typing import Any

import lz4.block

from ..procfs import status_bytes
from ..units import PAGE_SIZE


def gather_real_pages(limit: int) -> bytes:
    """Real page data from this machine: binaries, libraries and text, page-aligned."""
    chunks, total = [], 0
    roots = ["/usr/bin", "/usr/lib/x86_64-linux-gnu", "/usr/lib", "/usr/share/doc",
             "/usr/share/man", "/usr/include"]
    for root in roots:
        for dirpath, _, files in os.walk(root):
            for name in sorted(files):
                path = os.path.join(dirpath, name)
                if os.path.islink(path) or not os.path.isfile(path):
                    continue
                with suppress(OSError), open(path, "rb") as f:
                    data = f.read(limit - total)
                    data = data[: len(data) // PAGE_SIZE * PAGE_SIZE]
                    chunks.append(data)
                    total += len(data)
                if total >= limit:
                    return b"".join(chunks)
    return b"".join(chunks)


def lz4_rates(data: bytes) -> dict[str, float]:
    """Single-threaded lz4.block on 4 KiB pages of `data`, in MB/s."""
    pages = [data[i:i + PAGE_SIZE] for i in range(0, len(data), PAGE_SIZE)]
    t0 = time.perf_counter()
    blobs = [lz4.block.compress(p, store_size=False) for p in pages]
    t1 = time.perf_counter()
    for b in blobs:
        lz4.block.decompress(b, uncompressed_size=PAGE_SIZE)
    t2 = time.perf_counter()
    n = len(pages) * PAGE_SIZE / 1e6
    return {"compress_mbps": round(n / (t1 - t0), 1), "decompress_mbps": round(n / (t2 - t1), 1),
            "ratio": round(len(pages) * PAGE_SIZE / sum(len(b) for b in blobs), 2)}


def compressor_costs(data: bytes, rounds: int = 5) -> dict[str, dict[str, float]]:
    """Each page compressor's cost per 4 KiB page of `data` (the best of `rounds`), next
    to liblz4's one-shot LZ4_compress_fast and python-lz4's block API, with the bytes each
    gives; `vs_liblz4` is the time against liblz4's."""
    from .. import compressors

    pages = [data[i:i + PAGE_SIZE] for i in range(0, len(data), PAGE_SIZE)][:2000]
    fns = {name: c.compress for name, c in compressors.COMPRESSORS.items() if name != "none"}
    fns["liblz4 LZ4_compress_fast"] = compressors._liblz4_compress_fast()
    fns["python-lz4 block"] = lambda p: lz4.block.compress(p, store_size=False)
    out: dict[str, dict[str, float]] = {}
    for name, fn in fns.items():
        best = float("inf")
        for _ in range(rounds):
            t0 = time.perf_counter()
            blobs = [fn(p) for p in pages]
            best = min(best, time.perf_counter() - t0)
        out[name] = {"us_per_page": round(best / len(pages) * 1e6, 2),
                     "bytes": sum(map(len, blobs))}
    base = out["liblz4 LZ4_compress_fast"]["us_per_page"]
    for row in out.values():
        row["vs_liblz4"] = round(row["us_per_page"] / base, 2)
    return out


def thread_scaling(data: bytes) -> dict[str, float]:
    """How much a second thread helps here: raw lz4 on 1 MiB blocks in two threads,
    and the device's per-page encoder split over threads for a 256-page request."""
    import threading

    from .. import parallel
    from ..config import DeviceConfig
    from ..device import encoder

    def best(fn: Any) -> float:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times)

    block = data[: 1 << 20]

    def lz4_blocks(n: int) -> None:
        for _ in range(n):
            lz4.block.compress(block)

    def two_threads() -> None:
        ts = [threading.Thread(target=lz4_blocks, args=(4,)) for _ in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()

    pages = [data[i:i + PAGE_SIZE] for i in range(0, 256 * PAGE_SIZE, PAGE_SIZE)]
    enc = encoder("lz4", DeviceConfig().huge_threshold)
    serial = best(lambda: [enc(p) for p in pages])
    split = best(lambda: parallel.map_pages(enc, pages, 1))
    one = best(lambda: lz4_blocks(8))
    return {"lz4_1mib_blocks_two_threads": round(one / best(two_threads), 2),
            "encode_256_pages_split": round(serial / split, 2)}


def write_cost(data: bytes, writes: int) -> dict[str, float]:
    """What cramfs itself spends on one 4 KiB write, without FUSE: the namespace and
    device path on random pages of a 256 MiB file, against lz4 alone on the same pages.
    The difference is the Python bookkeeping a FUSE write pays on top of the transport."""
    import random

    from ..compressors import COMPRESSORS
    from ..config import DeviceConfig
    from ..device import Device
    from ..namespace import Namespace

    pages = [data[i:i + PAGE_SIZE] for i in range(0, min(len(data), 256 * PAGE_SIZE),
                                                  PAGE_SIZE)]
    ns = Namespace(Device(DeviceConfig(advertised=1 << 40, physical=1 << 36, dram=0)))
    f = ns.create("cost", 0o600, 0, 0)
    rng = random.Random(1)
    offsets = [rng.randrange(65536) * PAGE_SIZE for _ in range(writes)]
    compress = COMPRESSORS["lz4"].compress
    write_us, lz4_us = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        for i, off in enumerate(offsets):
            ns.write(f, off, pages[i % len(pages)])
        t1 = time.perf_counter()
        for i in range(writes):
            compress(pages[i % len(pages)])
        t2 = time.perf_counter()
        write_us.append((t1 - t0) / writes * 1e6)
        lz4_us.append((t2 - t1) / writes * 1e6)
    ns.unlink("cost")
    w, z = min(write_us), min(lz4_us)
    return {"write_us": round(w, 2), "lz4_us": round(z, 2), "bookkeeping_us": round(w - z, 2),
            **trace_cost(pages, offsets[:50_000])}


def trace_cost(pages: list[bytes], offsets: list[int]) -> dict[str, float]:
    """write_cost without `.cram/trace` recording, with it, and with it keeping zstd's
    blocks too (`compressors=zstd`): the fastest of five alternating rounds of each, as
    the differences are a few percent on a noisy machine."""
    import tempfile

    from .. import control
    from ..config import DeviceConfig
    from ..device import Device
    from ..namespace import Namespace

    plain: list[float] = []
    traced: list[float] = []
    also: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-trace-", dir="/var/tmp") as tmp:
        for n in range(5):
            for out, start in ((plain, None), (traced, f"start {tmp}/{n}.trace"),
                               (also, f"start {tmp}/{n}z.trace compressors=zstd")):
                ns = Namespace(Device(DeviceConfig(advertised=1 << 40, physical=1 << 36,
                                                   dram=0)))
                if start is not None:
                    control.store(ns, control.ATTRIBUTES["trace"], start.encode())
                f = ns.create("cost", 0o600, 0, 0)
                t0 = time.perf_counter()
                for i, off in enumerate(offsets):
                    ns.write(f, off, pages[i % len(pages)])
                out.append((time.perf_counter() - t0) / len(offsets) * 1e6)
                rec = ns.recorder
                if rec is not None:
                    if rec.active:
                        control.store(ns, control.ATTRIBUTES["trace"], b"stop")
                    rec.join()
                ns.device.close()
    a, b, c = min(plain), min(traced), min(also)
    return {"write_us_untraced": round(a, 2), "write_us_traced": round(b, 2),
            "trace_overhead": round(b / a - 1, 3), "write_us_traced_zstd": round(c, 2),
            "trace_zstd_overhead": round(c / a - 1, 3)}


def read_cost(data: bytes, reads: int) -> dict[str, float]:
    """What serving a swap-in costs in process, without FUSE: 8-page reads of a 256 MiB
    file with the default options, so every page faults, is promoted and makes the
    DRAM tier demote another; on each engine, against lz4 decompression alone."""
    import random

    from ..compressors import COMPRESSORS
    from ..config import DeviceConfig
    from ..device import Device

    pages = [data[i:i + PAGE_SIZE] for i in range(0, min(len(data), 256 * PAGE_SIZE),
                                                  PAGE_SIZE)]
    count = 65536
    rng = random.Random(1)
    offsets = [rng.randrange(count // 8) * 8 * PAGE_SIZE for _ in range(reads)]
    out: dict[str, float] = {}
    for name in ("native", "python"):
        dev = Device(DeviceConfig(advertised=1 << 40, physical=1 << 36, engine=name))
        table = dev.table("cost")
        for i in range(count):
            dev.write(table, i * PAGE_SIZE, pages[i % len(pages)])
        t0 = time.perf_counter()
        for off in offsets:
            dev.read(table, off, 8 * PAGE_SIZE)
        out[f"{name}_us"] = round((time.perf_counter() - t0) / (8 * reads) * 1e6, 2)
        dev.close()
    lz4 = COMPRESSORS["lz4"]
    blobs = [lz4.compress(p) for p in pages]
    t0 = time.perf_counter()
    for i in range(8 * reads):
        lz4.decompress(blobs[i % len(blobs)])
    out["lz4_us"] = round((time.perf_counter() - t0) / (8 * reads) * 1e6, 2)
    return out


def metadata_per_page(pages: int) -> dict[str, float]:
    """Bytes of daemon bookkeeping per stored page, with `pages` pages stored.

    Counted two ways in a fresh device: the tables' own size (page-table chunks
    and per-zspage arrays), and the growth of this process's anonymous RSS."""
    from ..config import DeviceConfig
    from ..device import Device
    from ..namespace import Namespace

    def rss_anon() -> int:
        return status_bytes("self", "RssAnon")

    chunk = gather_real_pages(1 << 20)
    ns = Namespace(Device(DeviceConfig(advertised=1 << 42, physical=1 << 40, dram=0)))
    f = ns.create("meta", 0o600, 0, 0)
    before = rss_anon()
    for i in range(pages // (len(chunk) // PAGE_SIZE)):
        ns.write(f, i * len(chunk), chunk)
    stored = f.table.stored_pages
    grown = rss_anon() - before
    counted = f.table.metadata_bytes + getattr(ns.device.pool, "metadata_bytes", 0)
    ns.unlink("meta")
    return {"pages": stored, "counted_bytes_per_page": round(counted / stored, 2),
            "rss_bytes_per_page": round(grown / stored, 2)}
