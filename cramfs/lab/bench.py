"""The benchmark: cramfs side by side with a do-nothing pyfuse3 filesystem and zram.

    scripts/bench                 # full run, about 7 minutes; table on stdout, JSON file
    scripts/bench --quick         # a few seconds: proves the benchmark works, no thresholds

Every figure is a ratio measured in the same invocation on the same data: the
baseline (cramfs.lab.nullfs) bounds what any pyfuse3 filesystem can do here, and
single-threaded lz4 on the same pages bounds what a single-threaded compressor
can do. fio runs with direct I/O on a file on each mount (and on /dev/zram0
directly); data is fio's half-compressible buffers, then real files of this
machine written with dd.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lz4.block

from ..procfs import status_bytes
from ..units import PAGE_SIZE, format_size
from . import zram
from .child import Daemon


@dataclass(frozen=True)
class Job:
    name: str
    rw: str
    bs: str
    depth: int = 1
    loop: bool = False
    threads: int = 0        # cramfs's comp_threads for this job
    latency: int = 0        # cramfs's read_latency for this job, µs a page
    dram: str = "0"         # cramfs's dram for this job: "64M" is the default's DRAM tier

    @property
    def engine(self) -> str:
        return "libaio" if self.depth > 1 else "psync"

    @property
    def reads(self) -> bool:
        return "read" in self.rw


JOBS = (
    Job("4k randwrite QD1", "randwrite", "4k"),
    Job("4k randread QD1", "randread", "4k"),
    Job("4k randwrite QD16", "randwrite", "4k", 16),
    Job("128k write", "write", "128k"),
    Job("128k read", "read", "128k"),
    Job("1m write", "write", "1m"),
    Job("1m read", "read", "1m"),
    Job("1m write, comp_threads=1", "write", "1m", threads=1),
    Job("1m read, comp_threads=1", "read", "1m", threads=1),
    # the default options' DRAM tier: every random read promotes a page and demotes another
    Job("4k randwrite QD1, dram=64M", "randwrite", "4k", dram="64M"),
    Job("4k randread QD1, dram=64M", "randread", "4k", dram="64M"),
    Job("loop 4k randwrite QD1", "randwrite", "4k", loop=True),
    Job("loop 4k randread QD1", "randread", "4k", loop=True),
    Job("4k randread QD1, read_latency=100", "randread", "4k", latency=100),
    Job("4k randread QD1, read_latency=2000", "randread", "4k", latency=2000),
)
QUICK = ("4k randwrite QD1", "4k randread QD1", "128k write", "loop 4k randwrite QD1",
         "4k randread QD1, read_latency=2000")


def say(msg: str) -> None:
    print(f"bench: {msg}", file=sys.stderr, flush=True)


def _median_run(runs: list[dict[str, float]]) -> dict[str, float]:
    return {"iops": round(statistics.median(r["iops"] for r in runs)),
            "mbps": round(statistics.median(r["mbps"] for r in runs), 1),
            "lat_us": round(statistics.median(r["lat_us"] for r in runs), 1)}


def fio(filename: str, job: Job, size: int, runtime: float) -> dict[str, float]:
    cmd = ["fio", "--name=bench", f"--filename={filename}", f"--rw={job.rw}", f"--bs={job.bs}",
           f"--iodepth={job.depth}", f"--ioengine={job.engine}", "--direct=1",
           f"--size={size}", f"--runtime={runtime}", "--time_based", "--randrepeat=1",
           "--buffer_compress_percentage=50", "--refill_buffers", "--output-format=json"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)}: {r.stderr.strip()[-500:]}")
    side = json.loads(r.stdout)["jobs"][0]["read" if job.reads else "write"]
    return {"iops": round(side["iops"]), "mbps": round(side["bw_bytes"] / 1e6, 1),
            "lat_us": round(side["clat_ns"]["mean"] / 1e3, 1)}


class Mounted:
    """A filesystem daemon on a temp dir, reaped and unmounted on close."""

    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.dir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        try:
            self.daemon = Daemon(argv, self.dir)
        except RuntimeError:
            self.dir.rmdir()
            raise

    def peak_rss(self) -> int:
        return status_bytes(self.daemon.proc.pid, "VmHWM")

    def rss(self) -> int:
        return status_bytes(self.daemon.proc.pid, "VmRSS")

    def set(self, knob: str, value: object) -> None:
        (self.dir / ".cram" / knob).write_text(f"{value}\n")

    def stats(self) -> dict[str, Any]:
        path = self.dir / ".cram" / "stat.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def close(self) -> None:
        self.daemon.close()
        with suppress(OSError):
            self.dir.rmdir()


@contextmanager
def loop_device(path: Path) -> Iterator[str]:
    dev = subprocess.run(["losetup", "--direct-io=on", "--show", "-f", str(path)],
                         capture_output=True, text=True, check=True).stdout.strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True)


@contextmanager
def zram_device(size: int) -> Iterator[str | None]:
    why = zram.unavailable("lz4")
    if why:
        say(f"no zram column: {why}")
        yield None
        return
    with zram.borrowed(size, "lz4") as dev:
        yield dev


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


def dd_pass(target: Path, data_file: Path) -> dict[str, float]:
    """Write then read the real data with dd, 1 MiB direct I/O, timed here."""
    size = data_file.stat().st_size
    t0 = time.perf_counter()
    subprocess.run(["dd", f"if={data_file}", f"of={target}", "bs=1M", "oflag=direct",
                    "status=none"], check=True)
    t1 = time.perf_counter()
    subprocess.run(["dd", f"if={target}", "of=/dev/null", "bs=1M", "iflag=direct",
                    "status=none"], check=True)
    t2 = time.perf_counter()
    return {"write_mbps": round(size / 1e6 / (t1 - t0), 1),
            "read_mbps": round(size / 1e6 / (t2 - t1), 1)}


def swap_row(quick: bool, rounds: int) -> dict[str, Any]:
    """The row that matters most: the built-in workload in a memory-limited cgroup,
    swapping through a direct-I/O loop device on the baseline's file, on cramfs with
    default options, and on zram, in alternating rounds."""
    from .experiment import CramTarget, NullTarget, Target, ZramTarget, run_target
    from .swap import unavailable

    why = unavailable()
    if why:
        say(f"no swap row: {why}")
        return {"skipped": why}
    size = (64 << 20) if quick else (256 << 20)
    limit = (24 << 20) if quick else (96 << 20)
    command = [sys.executable, "-m", "cramfs.lab.workload", "--size", str(size), "--passes", "2"]
    targets: list[Target] = [NullTarget(2 * size), CramTarget([], None, 2 * size)]
    if ZramTarget.unavailable("lz4") is None:
        targets.append(ZramTarget("lz4", 2 * size))
    runs: dict[str, list[dict[str, Any]]] = {t.name: [] for t in targets}
    for _ in range(rounds):
        for t in targets:
            _, summary = run_target(t, command, limit, 0.2)
            if summary["workload_exit_status"] != 0:
                raise RuntimeError(f"swap row: the workload failed on {t.name}: {summary}")
            runs[t.name].append(summary)
    row: dict[str, Any] = {"workload": f"{format_size(size)} in a {format_size(limit)} cgroup, "
                           "2 passes", "rounds": rounds}
    for name, rs in runs.items():
        walls = [r["wall_time_s"] for r in rs]
        peaks = [r["ratio_at_peak"] for r in rs if r["ratio_at_peak"] not in (None, float("inf"))]
        row[name] = {"wall_s": round(statistics.median(walls), 2),
                     "wall_range": [min(walls), max(walls)],
                     "ratio_at_peak": round(statistics.median(peaks), 2) if peaks else None,
                     "peak_rss": max(r["peak_rss"] for r in rs)}
        overheads = [r["peak_daemon_overhead"] for r in rs
                     if r.get("peak_daemon_overhead") is not None]
        if overheads:
            # the bound: RSS <= empty mount + physical_used + DRAM tier + fallback
            # + metadata + 32 MiB; this is the worst sample's excess over the first four
            row[name]["daemon_overhead_max"] = max(overheads)
            row[name]["peak_daemon_rss"] = max(r["peak_daemon_rss"] for r in rs)

    def paired(a: str, b: str, key: str) -> dict[str, Any]:
        xs = [x[key] / y[key] for x, y in zip(runs[a], runs[b], strict=True)
              if x[key] and y[key] and y[key] != float("inf")]
        return {"median": round(statistics.median(xs), 2),
                "range": [round(min(xs), 2), round(max(xs), 2)]} if xs else {}

    row["cramfs_vs_baseline"] = paired("cramfs", "baseline", "wall_time_s")
    if "zram" in runs:
        row["cramfs_vs_zram"] = paired("cramfs", "zram", "wall_time_s")
        row["ratio_vs_zram"] = paired("cramfs", "zram", "ratio_at_peak")
    say(f"swap: cramfs {row['cramfs']['wall_s']} s, baseline {row['baseline']['wall_s']} s "
        f"({row['cramfs_vs_baseline'].get('median')}x)")
    return row


def run(quick: bool, out: Path, only: list[str] | None = None) -> dict[str, Any]:
    size = (32 << 20) if quick else (256 << 20)
    runtime = 1.0 if quick else 2.0
    rounds = 1 if quick else 5
    jobs = [j for j in JOBS if (not quick or j.name in QUICK)
            and (not only or any(o in j.name for o in only))]
    if only and not jobs:                       # `--only swap`: the swap row alone
        result = {"quick": quick, "rounds": rounds, "swap": swap_row(quick, rounds)}
        out.write_text(json.dumps(result, indent=1) + "\n")
        return result
    py = sys.executable
    cramfs = str(Path(py).parent / "cramfs")
    # dram=0: reads are served in place, so the read figures measure the store itself
    cram_opts = ["--foreground", "-o", "advertised=64G,physical=16G,dram=0"]
    results: dict[str, Any] = {"quick": quick, "size": size, "runtime_s": runtime,
                               "rounds": rounds,
                               "cramfs_options": "advertised=64G,physical=16G,dram=0",
                               "jobs": {}, "real_data": {}}
    mounts: list[Mounted] = []
    try:
        # one at a time, so a failure to mount the second still closes the first
        mounts.append(Mounted("baseline", [py, "-m", "cramfs.lab.nullfs"]))
        mounts.append(Mounted("cramfs", [cramfs, *cram_opts]))
        with zram_device(4 * size) as zram:
            for job in jobs:
                # Alternate the two in short rounds and keep medians: the machine's own
                # speed drifts by tens of percent over a minute, and a ratio of two runs
                # taken far apart would measure that drift.
                runs: dict[str, list[dict[str, float]]] = {m.name: [] for m in mounts}
                mounts[1].set("comp_threads", job.threads)
                mounts[1].set("read_latency", job.latency)
                mounts[1].set("dram", job.dram)
                for _ in range(rounds):
                    for m in mounts:
                        path = m.dir / "fio.dat"
                        if job.loop:
                            with loop_device(path) as dev:
                                runs[m.name].append(fio(dev, job, size, runtime))
                        else:
                            runs[m.name].append(fio(str(path), job, size, runtime))
                row: dict[str, Any] = {name: _median_run(r) for name, r in runs.items()}
                ratios = [c["iops"] / b["iops"] for c, b in zip(runs["cramfs"], runs["baseline"],
                                                                  strict=True)]
                row["vs_baseline"] = round(statistics.median(ratios), 2)
                row["vs_baseline_range"] = [round(min(ratios), 2), round(max(ratios), 2)]
                row["rounds"] = rounds
                if zram and not job.loop and not quick:
                    row["zram"] = fio(zram, job, size, runtime)
                results["jobs"][job.name] = row
                say(f"{job.name}: cramfs {row['cramfs']['iops']} IOPS, baseline "
                    f"{row['baseline']['iops']} ({row['vs_baseline']}x)")
        mounts[1].set("comp_threads", 0)
        mounts[1].set("read_latency", 0)
        mounts[1].set("dram", "0")
        base = results["jobs"].get("4k randread QD1")
        for job in jobs:
            if job.latency and base:
                # what the knob added to a read, against the same job without it
                row = results["jobs"][job.name]
                row["asked_us"] = job.latency
                row["added_us"] = round(row["cramfs"]["lat_us"] - base["cramfs"]["lat_us"], 1)
        stats = mounts[1].stats()
        results["fio_data"] = {"ratio": stats.get("ratio"),
                               "physical_used": stats.get("physical_used")}
        sample = (mounts[0].dir / "fio.dat").read_bytes()[: 64 << 20]
        lz4_fio = results["lz4_fio_data"] = lz4_rates(sample)
        results["write_cost"] = write_cost(sample, 20_000 if quick else 200_000)
        results["read_cost"] = read_cost(sample, 2_000 if quick else 20_000)
        for job in jobs:
            if job.bs != "4k":
                # large requests are held to single-threaded lz4 on the same data
                rate = lz4_fio["decompress_mbps" if job.reads else "compress_mbps"]
                row = results["jobs"][job.name]
                row["vs_lz4"] = round(row["cramfs"]["mbps"] / rate, 2)

        results["cramfs_peak_rss"] = mounts[1].peak_rss()
        results["baseline_peak_rss"] = mounts[0].peak_rss()
        # the real data goes to a fresh cramfs, so ratio and pool overhead are not
        # blurred by the holes fio's overwrites left in the first one's zspages
        mounts[1].close()
        mounts[1] = Mounted("cramfs", [cramfs, *cram_opts])
        real = gather_real_pages(size // 2 if quick else 128 << 20)
        with tempfile.NamedTemporaryFile(prefix="bench-real-") as f:
            f.write(real)
            f.flush()
            with suppress(OSError):
                (mounts[0].dir / "fio.dat").unlink()
            for m in mounts:
                results["real_data"][m.name] = dd_pass(m.dir / "real.dat", Path(f.name))
        stats = mounts[1].stats()
        rd = results["real_data"]
        rd["bytes"] = len(real)
        rd["ratio"] = stats.get("ratio")
        rd["physical_used"] = stats.get("physical_used")
        rd["pool_overhead"] = round(stats["physical_used"] / stats["compressed_bytes"], 3) \
            if stats.get("compressed_bytes") else None
        rd["daemon_rss"] = mounts[1].rss()
        results["lz4_real_data"] = lz4_rates(real)
        results["compressors"] = compressor_costs(real)
        results["thread_scaling"] = thread_scaling(real)
        # in a fresh process, so memory freed earlier in this one cannot hide growth
        code = ("import json; from cramfs.lab.bench import metadata_per_page as m; "
                f"print(json.dumps(m({1 << 16 if quick else 1 << 20})))")
        results["metadata"] = json.loads(subprocess.run(
            [py, "-c", code], capture_output=True, text=True, check=True).stdout)
    finally:
        for m in mounts:
            m.close()
    if not only or any("swap" in o for o in only):
        results["swap"] = swap_row(quick, rounds)
    out.write_text(json.dumps(results, indent=1) + "\n")
    return results


def swap_table(sw: dict[str, Any]) -> list[str]:
    if "skipped" in sw:
        return [f"swap row skipped: {sw['skipped']}"]
    lines = [f"swap row ({sw['workload']}, median of {sw['rounds']} alternating rounds, "
             "range in brackets):", "",
             "| target | wall time s | ratio at peak | peak workload RSS |", "|---|---|---|---|"]
    for name in ("baseline", "cramfs", "zram"):
        if name in sw:
            t = sw[name]
            lo, hi = t["wall_range"]
            lines.append(f"| {name} | {t['wall_s']} ({lo}-{hi}) | {t['ratio_at_peak'] or '-'} | "
                         f"{format_size(t['peak_rss'])} |")
    cram = sw.get("cramfs", {})
    if "daemon_overhead_max" in cram:
        lines.append(f"cramfs daemon: peak RSS {format_size(cram['peak_daemon_rss'])}; at most "
                     f"{format_size(max(0, cram['daemon_overhead_max']))} beyond an empty "
                     "mount + physical_used + promoted + fallback bytes")
    for key in ("cramfs_vs_baseline", "cramfs_vs_zram", "ratio_vs_zram"):
        v = sw.get(key)
        if v:
            lines.append(f"{key.replace('_', ' ')}: {v['median']} ({v['range'][0]}-"
                         f"{v['range'][1]})")
    return lines


def jobs_table(jobs: dict[str, Any]) -> list[str]:
    """The fio jobs as a markdown table (docs/performance.md shows the same)."""
    lines = ["| workload | cramfs IOPS | cramfs MB/s | baseline IOPS | vs baseline (range) |"
             " vs 1-thread lz4 | zram IOPS |", "|---|---|---|---|---|---|---|"]
    for name, row in jobs.items():
        z = row.get("zram", {}).get("iops", "-")
        lo, hi = row["vs_baseline_range"]
        lines.append(f"| {name} | {row['cramfs']['iops']} | {row['cramfs']['mbps']} | "
                     f"{row['baseline']['iops']} | {row['vs_baseline']} ({lo}-{hi}) | "
                     f"{row.get('vs_lz4', '-')} | {z} |")
    return lines


def table(r: dict[str, Any]) -> str:
    if "jobs" not in r:
        return "\n".join(swap_table(r["swap"])) + "\n"
    lines = jobs_table(r["jobs"])
    for name, row in r["jobs"].items():
        if "added_us" in row:
            lines.append(f"{name}: asked {row['asked_us']} µs a page, added "
                         f"{row['added_us']} µs (mean completion latency "
                         f"{row['cramfs']['lat_us']} µs)")
    rd = r["real_data"]
    lines.append("")
    lines.append(f"real data ({format_size(rd['bytes'])} of this machine's files, dd 1 MiB "
                 f"direct): cramfs write {rd['cramfs']['write_mbps']} MB/s, read "
                 f"{rd['cramfs']['read_mbps']} MB/s; baseline write "
                 f"{rd['baseline']['write_mbps']}, read {rd['baseline']['read_mbps']}")
    fd = r["fio_data"]
    lines.append(f"ratio reached: fio data {fd['ratio']} ({format_size(fd['physical_used'])} "
                 f"physical_used), real data {rd['ratio']} ({format_size(rd['physical_used'])}); "
                 f"pool overhead (mem_used_total / compr_data_size) {rd['pool_overhead']}")
    for key in ("lz4_fio_data", "lz4_real_data"):
        z = r[key]
        lines.append(f"single-threaded lz4 on {key[4:].replace('_', ' ')}: compress "
                     f"{z['compress_mbps']} MB/s, decompress {z['decompress_mbps']} MB/s, "
                     f"ratio {z['ratio']}")
    if "compressors" in r:
        lines += ["", "page compressors on real data (µs per 4 KiB page, best of 5; the "
                  "Python call included):", "",
                  "| compressor | µs / page | against liblz4 | bytes |", "|---|---|---|---|"]
        for name, c in r["compressors"].items():
            lines.append(f"| {name} | {c['us_per_page']} | {c['vs_liblz4']}x | "
                         f"{c['bytes']:,} |")
        lines.append("")
    ts = r["thread_scaling"]
    lines.append(f"a second thread: lz4 on 1 MiB blocks {ts['lz4_1mib_blocks_two_threads']}x, "
                 f"the page encoder on a 256-page request {ts['encode_256_pages_split']}x")
    wc = r["write_cost"]
    lines.append(f"one 4 KiB write in process, no FUSE (fio data, random slots of 256 MiB): "
                 f"{wc['write_us']} µs, of which lz4 {wc['lz4_us']} µs and bookkeeping "
                 f"{wc['bookkeeping_us']} µs; recording a trace: {wc['write_us_untraced']} "
                 f"-> {wc['write_us_traced']} µs (+{wc['trace_overhead']:.1%}), keeping zstd's "
                 f"blocks too {wc['write_us_traced_zstd']} µs "
                 f"(+{wc['trace_zstd_overhead']:.1%})")
    rc = r["read_cost"]
    lines.append(f"one page of an 8-page swap-in in process (fault, promotion, demotion): "
                 f"{rc['native_us']} µs native, {rc['python_us']} µs python; lz4 "
                 f"decompression alone {rc['lz4_us']} µs")
    md = r["metadata"]
    lines.append(f"metadata with {md['pages']} pages stored: {md['counted_bytes_per_page']} "
                 f"bytes/page counted, {md['rss_bytes_per_page']} bytes/page of RSS growth")
    lines.append(f"peak RSS during fio: cramfs {format_size(r['cramfs_peak_rss'])}, baseline "
                 f"{format_size(r['baseline_peak_rss'])}; cramfs RSS holding the real data "
                 f"{format_size(rd['daemon_rss'])} for {format_size(rd['physical_used'])} "
                 "physical_used")
    if "swap" in r:
        lines += ["", *swap_table(r["swap"])]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few seconds, for the test suite")
    p.add_argument("--out", type=Path, default=Path("bench-results.json"), help="JSON file")
    p.add_argument("--only", action="append", metavar="TEXT",
                   help="run only the jobs whose name contains TEXT (repeatable); "
                   "`--only swap` runs the swap row alone")
    args = p.parse_args(argv)
    names = [j.name for j in JOBS] + ["swap"]
    if args.only and not any(o in n for n in names for o in args.only):
        p.error(f"no job matches {args.only}; jobs: {', '.join(names)}")
    try:
        results = run(args.quick, args.out, args.only)
    except (RuntimeError, OSError, subprocess.CalledProcessError) as e:
        print(f"bench: {e}", file=sys.stderr)
        return 1
    sys.stdout.write(table(results))
    say(f"JSON in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
