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

from ..procfs import status_bytes
from ..units import format_size
from . import zram
from .benchreport import table
from .child import Daemon
from .microbench import (
    compressor_costs,
    gather_real_pages,
    lz4_rates,
    read_cost,
    thread_scaling,
    write_cost,
)
from .microbench import metadata_per_page as metadata_per_page  # moved; importable here

# This module runs the mounts, fio, dd and the swap row; the in-process figures beside
# them (no FUSE) are measured in microbench.py, and benchreport.py prints the results.


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
    from .experiment import run_target
    from .swap import unavailable
    from .targets import CramTarget, NullTarget, Target, ZramTarget

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
        code = ("import json; from cramfs.lab.microbench import metadata_per_page as m; "
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
