"""What the swap experiment runs on: cramfs and its peers, each behind one interface.

A target sets up a swap device (cramfs, or the same loop swap on the do-nothing
baseline filesystem, kernel zram0, or kernel zswap in front of a file), samples what
its device holds while the workload runs, and tears it all down again. The experiment
(cramfs.lab.experiment) and the benchmark's swap row (cramfs.lab.bench) run the same
workload on each through the experiment's run_target.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from contextlib import suppress
from pathlib import Path
from typing import Any, Protocol

from ..procfs import status_bytes
from ..stats import BY_NAME
from . import zram, zswap
from .child import Daemon
from .swap import active_swaps, run, swap_down, swap_up, top_priority

# The device statistics sampled, by their names in the statistics table (stats.py).
SAMPLED = ("physical", "physical_used", "logical_stored", "ratio", "danger", "promotions",
           "demotions", "reject_write_control", "fallback_pages", "fallback_bytes",
           "promoted_pages", "promoted_bytes", "stored_pages", "written_back_pages",
           "bd_reads", "bd_writes", "reclaim_written", "notify_free", "discards",
           "failed_writes")
assert all(name in BY_NAME for name in SAMPLED)


def _idle_sample() -> dict[str, Any]:
    """What a target with no device statistics (the baseline; zram for most) reports."""
    out: dict[str, Any] = dict.fromkeys(SAMPLED, 0)
    out.update(ratio=float("inf"), danger="", warn_at=None, critical_at=None, daemon_rss=None,
               daemon_overhead=None, device_held=0)
    return out


def say(msg: str) -> None:
    print(f"experiment: {msg}", file=sys.stderr, flush=True)


class Target(Protocol):
    name: str
    swap_device: str         # the swap device, to read the kernel's Used from /proc/swaps

    def setup(self) -> None: ...

    def sample(self) -> dict[str, Any]: ...

    def teardown(self) -> None: ...


class CramTarget:
    """A cramfs mount (ours or the user's) with a loop swap on it."""

    name = "cramfs"

    def __init__(self, options: list[str], mount: Path | None, swap_size: int,
                 trace: Path | None = None, trace_also: str = "", discard: bool = True,
                 mount_dir: Path | None = None) -> None:
        self.options = options
        self.mount_dir = mount_dir    # where a fresh mount goes (a temporary one if None)
        self.discard = discard        # swapon --discard: freed swap reaches the device
        self.trace = trace            # record the run into this file (.cram/trace)
        self.trace_also = trace_also  # other compressors whose blocks the trace keeps
        self.given = mount            # the user's mount; None: a fresh one per setup()
        self.mount = mount
        self.swap_size = swap_size
        self._daemon: Daemon | None = None
        self._tmp: str | None = None
        self.swap_device = ""
        self.empty_rss = 0            # our daemon's RSS as mounted, before any page

    def setup(self) -> None:
        self.mount = self.given
        if self.mount is None and self.mount_dir is not None:
            self.mount_dir.mkdir(parents=True, exist_ok=True)
            self.mount = self.mount_dir
        elif self.mount is None:
            self._tmp = tempfile.mkdtemp(prefix="cramfs-exp-")
            self.mount = Path(self._tmp)
        if self.given is None:
            cramfs = Path(sys.executable).parent / "cramfs"
            opts = [a for o in self.options for a in ("-o", o)]
            say(f"mounting cramfs at {self.mount} {' '.join(opts)}")
            self._daemon = Daemon([str(cramfs), "--foreground", *opts], self.mount)
            self.empty_rss = status_bytes(self._daemon.proc.pid, "VmRSS")
        if self.trace is not None:
            # from before the swap file exists, so a replay starts from the same empty device
            if self.trace.exists():          # the file the user asked for: a new run's
                say(f"+ rm {self.trace}")
                self.trace.unlink()
            start = f"start {self.trace.resolve()}" + (
                f" compressors={self.trace_also}" if self.trace_also else "")
            say(f"+ echo {start} > {self.mount}/.cram/trace")
            (self.mount / ".cram" / "trace").write_text(start + "\n")
        self.swap_device = swap_up(self.mount, self.swap_size,
                                   echo=lambda line: say(f"+ {line}"), discard=self.discard)

    def sample(self) -> dict[str, Any]:
        assert self.mount is not None
        s = json.loads((self.mount / ".cram" / "stat.json").read_text())
        out = {name: s[name] for name in SAMPLED}
        if out["ratio"] is None:
            out["ratio"] = float("inf")
        out.update(warn_at=s["warn_at"], critical_at=s["critical_at"], daemon_rss=None,
                   daemon_overhead=None,
                   # every page the device keeps for a swap slot, wherever it keeps it
                   device_held=(s["stored_pages"] + s["promoted_pages"] + s["fallback_pages"])
                   * 4096)
        if self._daemon is not None:
            # what the daemon holds beyond the memory the device model accounts for:
            # its empty self, the pool, the promoted pages and the fallback pages
            rss = status_bytes(self._daemon.proc.pid, "VmRSS")
            out["daemon_rss"] = rss
            out["daemon_overhead"] = rss - self.empty_rss - s["physical_used"] - \
                s["promoted_bytes"] - s["fallback_bytes"]
        return out

    def teardown(self) -> None:
        if self.mount is not None and (self.mount / ".cram").is_dir():
            if self.trace is not None:
                # before swapoff reads every swapped page back: the trace is the workload's
                with suppress(OSError):
                    say(f"+ echo stop > {self.mount}/.cram/trace")
                    (self.mount / ".cram" / "trace").write_text("stop\n")
            swap_down(self.mount, echo=lambda line: say(f"+ {line}"))
        if self._daemon is not None:
            self._daemon.close()
            self._daemon = None
        if self._tmp is not None:
            with suppress(OSError):
                os.rmdir(self._tmp)
            self._tmp = None


class NullTarget:
    """The benchmark's do-nothing pyfuse3 filesystem with the same loop swap on it:
    the same stack without cramfs."""

    name = "baseline"

    def __init__(self, swap_size: int, discard: bool = True) -> None:
        self.swap_size = swap_size
        self.discard = discard        # as cramfs's, so the stacks differ only by cramfs
        self._daemon: Daemon | None = None
        self._tmp: Path | None = None
        self.swap_device = ""

    def setup(self) -> None:
        self._tmp = Path(tempfile.mkdtemp(prefix="cramfs-null-"))
        self._daemon = Daemon([sys.executable, "-m", "cramfs.lab.nullfs"], self._tmp)
        self.swap_device = swap_up(self._tmp, self.swap_size,
                                   echo=lambda line: say(f"+ {line}"), any_fs=True,
                                   discard=self.discard)

    def sample(self) -> dict[str, Any]:
        return _idle_sample()

    def teardown(self) -> None:
        if self._tmp is not None:
            swap_down(self._tmp, echo=lambda line: say(f"+ {line}"))
        if self._daemon is not None:
            self._daemon.close()
            self._daemon = None
        if self._tmp is not None:
            with suppress(OSError):
                self._tmp.rmdir()
            self._tmp = None


class ZramTarget:
    """The kernel's zram0 as swap, same algorithm and size; reset afterwards."""

    name = "zram"
    swap_device = zram.DEVICE

    def __init__(self, algorithm: str, swap_size: int, mem_limit: int = 0) -> None:
        self.algorithm = algorithm
        self.swap_size = swap_size
        self.mem_limit = mem_limit    # cramfs's physical: both devices get the same memory
        self._ours = False
        self._lock = zram.Lock()

    @staticmethod
    def unavailable(algorithm: str) -> str | None:
        return zram.unavailable(algorithm) or (
            "zram0 is already in use; not touching it" if zram.DEVICE in active_swaps()
            else None)

    def setup(self) -> None:
        echo = lambda line: say(f"+ {line}")  # noqa: E731
        self._lock.acquire()                  # held until teardown
        why = zram.unavailable(self.algorithm)
        if why:
            self._lock.release()
            raise RuntimeError(f"zram: {why}")
        self._ours = True
        echo(f"echo {self.algorithm} > {zram.ZRAM}/comp_algorithm")
        echo(f"echo {self.swap_size} > {zram.ZRAM}/disksize")
        if self.mem_limit:
            echo(f"echo {self.mem_limit} > {zram.ZRAM}/mem_limit")
        zram.set_up(self.swap_size, self.algorithm, self.mem_limit)
        run(["mkswap", zram.DEVICE], echo)
        run(["swapon", "-p", str(top_priority()), zram.DEVICE], echo)

    def sample(self) -> dict[str, Any]:
        mm = zram.mm_stat()
        orig, used = mm["orig_data_size"], mm["mem_used_total"]
        out = _idle_sample()
        out.update(physical_used=used, logical_stored=orig, stored_pages=orig // 4096,
                   ratio=round(orig / used, 4) if used else float("inf"), device_held=orig,
                   physical=self.mem_limit or None,
                   failed_writes=zram.io_stat()["failed_writes"])
        return out

    def describe(self) -> dict[str, Any]:
        """What summary.json says about this peer's set-up."""
        return {"algorithm": self.algorithm, "disksize": self.swap_size,
                "mem_limit": self.mem_limit}

    def teardown(self) -> None:
        if not self._ours:
            return
        try:
            if zram.DEVICE in active_swaps():
                run(["swapoff", zram.DEVICE], lambda line: say(f"+ {line}"))
            say(f"+ echo 1 > {zram.ZRAM}/reset")
            zram.reset()
        finally:
            self._ours = False
            self._lock.release()


class ZswapTarget:
    """The kernel's zswap in front of a swap file on the host's disk (through a direct-I/O
    loop device, as on cramfs), with the kernel algorithm closest to cramfs's and the pool
    limit nearest to cramfs's physical size; every zswap parameter is restored after."""

    name = "zswap"

    def __init__(self, compressor: str, physical: int, swap_size: int) -> None:
        self.compressor = compressor
        self.swap_size = swap_size
        self.physical = physical
        self.percent = zswap.pool_percent(physical, zswap.mem_total())
        # the pool's own cap: a whole percent of RAM, and at least 1% (cgroup v1 has no
        # memory.zswap.max), so as near cramfs's physical as zswap goes
        self.max_pool_bytes = zswap.mem_total() * self.percent // 100
        self._lock = zram.Lock()           # zswap is shared as zram0 is: one user at a time
        self._saved: dict[str, str] | None = None
        self._tmp: Path | None = None
        self.swap_device = ""

    @staticmethod
    def unavailable(compressor: str) -> str | None:
        return zswap.unavailable(compressor)

    def describe(self) -> dict[str, Any]:
        """What summary.json says about the comparison's set-up."""
        total = zswap.mem_total()
        return {"compressor": self.compressor, "max_pool_percent": self.percent,
                "pool_limit_bytes": total * self.percent // 100,
                "cramfs_physical_bytes": self.physical, "mem_total_bytes": total,
                "swap": "a file on the host's disk through a direct-I/O loop device"}

    def setup(self) -> None:
        echo = lambda line: say(f"+ {line}")  # noqa: E731
        self._lock.acquire()                  # held until teardown
        self._tmp = Path(tempfile.mkdtemp(prefix="cramfs-zswap-", dir="/var/tmp"))
        self._saved = zswap.save()
        for name, value in (("compressor", self.compressor),
                            ("max_pool_percent", str(self.percent)), ("enabled", "Y")):
            echo(f"echo {value} > {zswap.PARAMS}/{name}")
            zswap.apply({name: value})
        self.swap_device = swap_up(self._tmp, self.swap_size, echo=echo, any_fs=True)

    def sample(self) -> dict[str, Any]:
        pool, stored = zswap.held()
        out = _idle_sample()
        out.update(physical_used=pool, logical_stored=stored, stored_pages=stored // 4096,
                   ratio=round(stored / pool, 4) if pool else float("inf"), device_held=stored,
                   physical=self.max_pool_bytes)
        return out

    def teardown(self) -> None:
        echo = lambda line: say(f"+ {line}")  # noqa: E731
        try:
            if self._tmp is not None:
                swap_down(self._tmp, echo=echo)
        finally:
            try:
                if self._saved is not None:
                    echo(f"restoring {zswap.PARAMS}: " + " ".join(
                        f"{k}={v}" for k, v in sorted(self._saved.items())))
                    differ = zswap.restore(self._saved)
                    if differ:
                        say(f"WARNING: zswap parameters not restored: {', '.join(differ)}")
                    self._saved = None
                if self._tmp is not None:
                    with suppress(OSError):
                        self._tmp.rmdir()
                    self._tmp = None
            finally:
                self._lock.release()
