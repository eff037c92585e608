"""A soak test: every way of using one mount at once, and a count of what went wrong.

    scripts/soak [MINUTES] [--quick] [--json FILE]

One cramfs mount (`overflow=refuse`, so no page may be lost by design) serves,
all at the same time:

- exercisers in the spirit of xfstests' fsx, one buffered and one O_DIRECT,
  each with a byte-exact model of its file: writes, reads, truncates and
  discards at random offsets and sizes, every read compared with the model;
- fio verify jobs (random 4 KiB writes, then every block read back and checked);
- a knob loop that flips compressor, dram, mode, comp_threads, warn_at and
  critical_at, demotes, compacts, marks pages idle and recompresses them,
  writes pages back to the backing file (a sparse file as large as the device
  advertises, so it never fills), switches fallback and reclaim between host
  memory and that file, injects ratio and physical and clears them (never
  poison), sends hostile control input that must be refused, and resets an
  idle second mount;
- where the machine has loop devices, swap and a memory cgroup, a swap workload
  in a cgroup a third of its size, on a loop device over a slot file, checking
  its own data.

It reports operations done, wrong bytes, daemon deaths, unexpected errnos,
peak daemon RSS next to what the device held at that moment (physical_used,
fallback and DRAM-tier bytes), and anything left on the host. Exit
status 0 means all of those were zero.
"""

from __future__ import annotations

import argparse
import errno
import json
import mmap
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..procfs import status_bytes
from ..units import PAGE_SIZE
from .cgroup import CgroupUnavailable, MemoryCgroup, detect
from .child import Daemon, is_mounted
from .swap import active_swaps, loops_backed_by, swap_down, swap_up
from .swap import unavailable as swap_unavailable

P = PAGE_SIZE
CRAMFS = str(Path(sys.executable).parent / "cramfs")
SOAK_OPTIONS = "advertised=4G,physical=256M,overflow=refuse"
BACKING_SIZE = 4 << 30            # advertised: a block for every page there can be


@dataclass
class Report:
    seconds: float = 0.0
    ops: dict[str, int] = field(default_factory=dict)
    wrong_bytes: int = 0
    daemon_deaths: int = 0
    unexpected_errnos: list[str] = field(default_factory=list)
    refused_writes: int = 0            # ENOSPC from write control: allowed, counted
    peak_rss: int = 0
    at_peak: dict[str, int] = field(default_factory=dict)   # what the device held then
    empty_rss: int = 0
    left_on_host: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.wrong_bytes or self.daemon_deaths or self.unexpected_errnos
                    or self.left_on_host)


class Soak:
    def __init__(self, mount: Path, spare: Path, seconds: float, quick: bool) -> None:
        self.mount = mount
        self.spare = spare
        self.deadline = time.monotonic() + seconds
        self.quick = quick
        self.report = Report()
        self._lock = threading.Lock()
        self.stop = threading.Event()

    # ------------------------------------------------------------ bookkeeping

    def count(self, what: str, n: int = 1) -> None:
        with self._lock:
            self.report.ops[what] = self.report.ops.get(what, 0) + n

    def unexpected(self, what: str) -> None:
        with self._lock:
            if len(self.report.unexpected_errnos) < 50:
                self.report.unexpected_errnos.append(what)
            print(f"soak: unexpected: {what}", file=sys.stderr, flush=True)

    def wrong(self, what: str, n: int) -> None:
        with self._lock:
            self.report.wrong_bytes += n
        print(f"soak: WRONG BYTES: {what}", file=sys.stderr, flush=True)

    def running(self) -> bool:
        return not self.stop.is_set() and time.monotonic() < self.deadline

    def ctl(self, name: str, value: str) -> int:
        """Write a control file; 0 or the errno."""
        try:
            with open(self.mount / ".cram" / name, "w") as f:
                f.write(value)
            return 0
        except OSError as e:
            return e.errno or -1

    # ------------------------------------------------------------ exerciser

    def exerciser(self, name: str, direct: bool, seed: int) -> None:
        """fsx-style random operations against a byte-exact model."""
        rng = random.Random(seed)
        limit = (1 if self.quick else 8) << 20
        path = self.mount / name
        model = bytearray()
        flags = os.O_RDWR | os.O_CREAT | (os.O_DIRECT if direct else 0)
        fd = os.open(path, flags, 0o600)
        buf = mmap.mmap(-1, limit)           # page-aligned, as O_DIRECT wants
        try:
            while self.running():
                self._fsx_step(rng, name, fd, model, buf, direct, limit)
            self._verify(name, fd, model, buf, 0, len(model), direct)
        finally:
            os.close(fd)
            buf.close()

    def _fsx_step(self, rng: random.Random, name: str, fd: int, model: bytearray,
                  buf: mmap.mmap, direct: bool, limit: int) -> None:
        op = rng.choices(["write", "read", "truncate", "discard", "verify"],
                         [50, 35, 6, 6, 3])[0]
        if direct:
            off = rng.randrange(limit // P) * P
            length = min(rng.choice([1, 2, 4, 16, 64]) * P, limit - off)
        else:
            off = rng.randrange(limit)
            length = min(rng.choice([1, 17, 100, P - 1, P, P + 1, 3 * P + 5, 64 << 10]),
                         limit - off)
        if op == "write":
            data = _payload(rng, length)
            try:
                if direct:
                    buf[:length] = data
                    n = os.pwritev(fd, [memoryview(buf)[:length]], off)
                else:
                    n = os.pwrite(fd, data, off)
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    self.unexpected(f"{name}: write {off}+{length}: {e}")
                with self._lock:
                    self.report.refused_writes += 1
                n = 0
            if n:
                if off + n > len(model):
                    model.extend(bytes(off + n - len(model)))
                model[off:off + n] = data[:n]
        elif op == "read":
            self._verify(name, fd, model, buf, off, length, direct)
        elif op == "truncate":
            size = rng.randrange(limit // P + 1) * P if direct else rng.randrange(limit + 1)
            try:
                os.ftruncate(fd, size)
            except OSError as e:
                self.unexpected(f"{name}: truncate {size}: {e}")
                return
            if size < len(model):
                del model[size:]
            else:
                model.extend(bytes(size - len(model)))
        elif op == "discard":
            err = self.ctl("discard", f"{name} {off} {length}\n")
            if err:
                self.unexpected(f"{name}: discard {off} {length}: {os.strerror(err)}")
                return
            first, last = -(-off // P) * P, (off + length) // P * P
            hi = min(last, len(model))
            if first < hi:
                model[first:hi] = bytes(hi - first)
        else:
            self._verify(name, fd, model, buf, 0, len(model), direct)
        self.count(f"fsx_{'direct' if direct else 'buffered'}")

    def _verify(self, name: str, fd: int, model: bytearray, buf: mmap.mmap, off: int,
                length: int, direct: bool) -> None:
        for start in range(off, off + length, 1 << 20):
            size = min(1 << 20, off + length - start)
            try:
                if direct:
                    n = os.preadv(fd, [memoryview(buf)[:size]], start)
                    got = bytes(buf[:n])
                else:
                    got = os.pread(fd, size, start)
            except OSError as e:
                self.unexpected(f"{name}: read {start}+{size}: {e}")
                return
            want = bytes(model[start:start + size])
            if got != want:
                bad = sum(a != b for a, b in zip(got, want, strict=False))
                bad += abs(len(got) - len(want))
                self.wrong(f"{name}: {bad} bytes differ in {start}+{size}", bad)

    # ------------------------------------------------------------ fio

    def fio(self) -> None:
        if shutil.which("fio") is None:
            self.report.skipped.append("fio: not installed")
            return
        size = "8M" if self.quick else "64M"
        while self.running():
            r = subprocess.run(
                ["fio", "--name=soak", f"--filename={self.mount}/fio0", f"--size={size}",
                 "--rw=randwrite", "--bs=4k", "--direct=1", "--ioengine=psync",
                 "--verify=crc32c", "--do_verify=1", "--verify_fatal=1",
                 "--verify_state_save=0",      # no *-verify.state left in the cwd
                 "--buffer_compress_percentage=50", "--refill_buffers",
                 f"--randseed={random.randrange(1 << 30)}", "--output-format=terse"],
                capture_output=True, text=True)
            if r.returncode == 0:
                self.count("fio_rounds")
            elif "verify" in r.stderr.lower() or "crc" in r.stderr.lower():
                self.wrong(f"fio: {r.stderr.strip()[:300]}", 1)
            elif "No space left" in r.stderr:
                with self._lock:
                    self.report.refused_writes += 1
            else:
                self.unexpected(f"fio: exit {r.returncode}: {r.stderr.strip()[:300]}")

    # ------------------------------------------------------------ knobs

    def knobs(self, seed: int) -> None:
        rng = random.Random(seed)
        valid = [
            ("compressor", ["lz4", "zstd", "none"]), ("dram", ["0", "1M", "16M", "64M"]),
            ("mode", ["zswap", "direct"]), ("comp_threads", ["0", "1", "2"]),
            ("demote", ["8", "all"]), ("compact", ["1"]),
            ("inject", ["ratio 1.5", "ratio 2", "physical 224M", "physical 128M", "clear",
                        "clear"]),
            ("idle", ["all", "0", "5"]), ("recomp_algorithm", ["algo=zstd", "algo=lz4"]),
            ("recompress", ["type=huge", "type=idle max_pages=64", "type=huge_idle"]),
            ("writeback", ["huge", "idle", "huge_idle", "incompressible"]),
            ("fallback", ["host", "writeback"]), ("reclaim", ["off", "compact", "writeback"]),
        ]
        hostile = [("dram", "٣M"), ("dram", "1_0"), ("warn_at", "१०%"), ("dram", "2^70"),
                   ("inject", "ratio 2\nbogus"), ("inject", "poison"), ("critical_at", "1e1"),
                   ("comp_threads", "+1"), ("dram", "1" * 8192), ("mode", "sideways"),
                   ("writeback", "lukewarm"), ("writeback", "page=nosuchfile"),
                   ("reclaim", "always"), ("writeback_limit_enable", "2"),
                   # sysfs's rule: one value, one optional newline, ASCII around it
                   ("reset", "1\n\n"), ("reset", "1\u00a0"), ("compact", "\u2028 1"),
                   ("demote", "all\u00a0"), ("idle", "1\u00a0"), ("dram", "64M\n\n"),
                   ("compact", "1\0"), ("inject", "clear\n\nclear"),
                   # numbers past a field's range or a file's end
                   ("writeback", "page=soak-swap:9223372036854775808"),
                   ("writeback", "page=soak-swap:1000000000000"),
                   ("inject", "poison soak-swap 99999999999999999999"),
                   ("writeback_limit", "9223372036854775808"),
                   ("trace", "start /tmp/soak\0.trace"), ("trace", "start soak.trace")]
        self.ctl("recomp_algorithm", "algo=zstd\n")     # recompress needs one first
        while self.running():
            roll = rng.random()
            if roll < 0.6:
                name, values = rng.choice(valid)
                err = self.ctl(name, rng.choice(values) + "\n")
                if err:
                    self.unexpected(f"knob {name}: {os.strerror(err)}")
            elif roll < 0.75:
                warn = rng.randrange(50, 80)
                # critical at 95% first, so that every state on the way is valid
                for name, percent in (("critical_at", 95), ("warn_at", warn),
                                      ("critical_at", rng.randrange(warn + 5, 96))):
                    err = self.ctl(name, f"{percent}%\n")
                    if err:
                        self.unexpected(f"knob {name}={percent}%: {os.strerror(err)}")
            elif roll < 0.95:
                name, value = rng.choice(hostile)
                if self.ctl(name, value) != errno.EINVAL:
                    self.unexpected(f"hostile {name}={value[:20]!r} was not EINVAL")
            else:
                self._reset_spare(rng)
            self.count("knob_writes")
            time.sleep(0.01)
        self.ctl("inject", "clear\n")

    def _reset_spare(self, rng: random.Random) -> None:
        (self.spare / "idle").write_bytes(rng.randbytes(64 << 10))
        err = errno.EBUSY
        for _ in range(50):       # the kernel sends RELEASE after close() returns
            try:
                with open(self.spare / ".cram" / "reset", "w") as f:
                    f.write("1\n")
                err = 0
                break
            except OSError as e:
                err = e.errno or -1
                if err != errno.EBUSY:
                    break
                time.sleep(0.02)
        if err or os.listdir(self.spare) != [".cram"]:
            why = os.strerror(err) if err else "files left"
            self.unexpected(f"reset of the spare mount: {why}")
        self.count("resets")

    # ------------------------------------------------------------ swap

    def swap(self) -> None:
        reason = swap_unavailable()
        if reason:
            self.report.skipped.append(f"swap: {reason}")
            return
        size = (96 if self.quick else 256) << 20
        group = None
        try:
            swap_up(self.mount, 2 * size, "soak-swap", echo=lambda _line: None)
            group = MemoryCgroup(f"cramfs-soak-{os.getpid()}", size // 3)
            while self.running():
                proc = subprocess.Popen(
                    [sys.executable, "-m", "cramfs.lab.workload", "--size", str(size),
                     "--passes", "1", "--seed", str(random.randrange(1 << 30))],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                group.add(proc.pid)
                _, err = proc.communicate()
                if proc.returncode == 0:
                    self.count("swap_rounds")
                elif proc.returncode == 3:
                    self.wrong(f"swap workload: {err.strip()[:300]}", 1)
                else:
                    self.unexpected(f"swap workload exit {proc.returncode}: {err[-300:]}")
        except (OSError, RuntimeError, CgroupUnavailable) as e:
            self.unexpected(f"swap set-up: {e}")
        finally:
            if group is not None:
                group.remove()
            swap_down(self.mount, "soak-swap", echo=lambda _line: None)

    # ------------------------------------------------------------ the daemon

    def watch(self, daemon: Daemon) -> None:
        while self.running():
            if daemon.proc.poll() is not None:
                with self._lock:
                    self.report.daemon_deaths += 1
                self.stop.set()
                return
            rss = status_bytes(daemon.proc.pid, "VmRSS")
            if rss > self.report.peak_rss:
                try:
                    doc = json.loads((self.mount / ".cram" / "stat.json").read_text())
                    held = {k: int(doc[k]) for k in ("physical_used", "fallback_bytes",
                                                     "promoted_bytes", "logical_stored")}
                except (OSError, ValueError, KeyError):
                    held = {}
                self.report.peak_rss, self.report.at_peak = rss, held
            time.sleep(0.5)


def _payload(rng: random.Random, length: int) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(length)
    if kind == 1:
        return bytes([rng.randrange(1, 256)]) * length
    if kind == 2:
        words = (b"page ", b"slot ", b"swap ", b"zram ", b"cram ", b"tier ")
        return b"".join(rng.choice(words) for _ in range(length // 5 + 1))[:length]
    return rng.randbytes(length)


def leftovers(mounts: list[Path]) -> list[str]:
    """What the soak made and failed to remove."""
    left = [f"mount {m}" for m in mounts if is_mounted(m)]
    for m in mounts:
        left += [f"loop {loop}" for loop in loops_backed_by(m / "soak-swap")]
    left += [f"swap {s}" for s in active_swaps() if "soak" in s]
    try:
        _, root = detect()
        left += [f"cgroup {p}" for p in root.glob("cramfs-soak-*")]
    except CgroupUnavailable:
        pass
    return left


def run(seconds: float, quick: bool) -> Report:
    base = Path(tempfile.mkdtemp(prefix="cramfs-soak-"))
    main_mp, spare_mp = base / "soak", base / "spare"
    main_mp.mkdir()
    spare_mp.mkdir()
    with open(base / "backing", "wb") as f:
        f.truncate(BACKING_SIZE)
    argv = [CRAMFS, "--foreground", "--log", str(base / "daemon.log"), "-o",
            f"{SOAK_OPTIONS},backing_dev={base / 'backing'}"]
    daemon = spare = None
    t0 = time.monotonic()
    try:
        daemon = Daemon(argv, main_mp)
        spare = Daemon([CRAMFS, "--foreground", "--log", str(base / "spare.log"),
                        "-o", "physical=64M"], spare_mp)
        soak = Soak(main_mp, spare_mp, seconds, quick)
        soak.report.empty_rss = status_bytes(daemon.proc.pid, "VmRSS")
        threads = [threading.Thread(target=fn, args=args, name=fn.__name__) for fn, args in (
            (soak.exerciser, ("fsx-buffered", False, 1)),
            (soak.exerciser, ("fsx-direct", True, 2)),
            (soak.fio, ()), (soak.knobs, (3,)), (soak.swap, ()), (soak.watch, (daemon,)))]
        for t in threads:
            t.start()
        try:
            for t in threads:
                t.join()
        except KeyboardInterrupt:
            soak.stop.set()
            for t in threads:
                t.join()
        report = soak.report
        try:      # the pages that went through the backing file, for the report
            doc = json.loads((main_mp / ".cram" / "stat.json").read_text())
            report.ops.update(bd_writes=doc["bd_writes"], bd_reads=doc["bd_reads"])
        except (OSError, ValueError, KeyError) as e:
            soak.unexpected(f"final stat.json: {e}")
    finally:
        for d in (daemon, spare):
            if d is not None:
                d.close()
    report.seconds = round(time.monotonic() - t0, 1)
    report.left_on_host = leftovers([main_mp, spare_mp])
    if not report.left_on_host:
        shutil.rmtree(base, ignore_errors=True)
    else:
        print(f"soak: logs kept in {base}", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("minutes", nargs="?", type=float, default=10.0,
                   help="how long to run (default 10)")
    p.add_argument("--quick", action="store_true",
                   help="small files and 40 seconds: the test suite's run")
    p.add_argument("--json", type=Path, help="also write the report here")
    args = p.parse_args(argv)
    seconds = 40.0 if args.quick else args.minutes * 60
    report = run(seconds, args.quick)
    doc = {**asdict(report), "ok": report.ok}
    text = json.dumps(doc, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
