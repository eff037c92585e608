"""Run a swap experiment end to end and leave a results folder.

    scripts/experiment --out results/run1                 # built-in 256M workload
    scripts/experiment -o physical=256M --compare zram    # and the same on zram
    scripts/experiment --compare zram --compare zswap     # and on kernel zswap
    scripts/experiment --trace /var/tmp/run.trace         # record it for what-if
    scripts/experiment --limit 512M -- stress-ng --vm 1 --vm-bytes 1G -t 30
    scripts/experiment --at 2s inject='ratio 4' --at 6s inject=clear

It mounts a fresh cramfs (or uses --mount), swaps on a slot file through a
direct-I/O loop device, runs the workload in a fresh memory-limited cgroup,
samples the device several times a second, and tears everything down again,
also on Ctrl-C or failure. The folder gets timeline.csv, summary.json and
plot.png.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import trace
from ..config import DeviceConfig
from ..control import ATTRIBUTES
from ..levels import LEVELS
from ..units import format_size, parse_decimal, parse_size
from . import zswap
from .cgroup import CgroupUnavailable, MemoryCgroup
from .swap import swap_used
from .targets import SAMPLED, CramTarget, Target, ZramTarget, ZswapTarget, say
from .targets import NullTarget as NullTarget  # the targets moved; still importable here
from .workload import EXIT_MISMATCH

# This module runs the workload on each target (targets.py: cramfs and its peers, set up
# and sampled) and writes the results. The columns of timeline.csv:
FIELDS = ("target", "time", "running", *SAMPLED, "device_held", "warn_at", "critical_at",
          "swap_used",
          "pswpin", "pswpout", "rss", "daemon_rss", "daemon_overhead")
# After the workload exits, the device counts as settled once it holds no more than this
# beyond the kernel's swap Used. The kernel discards a cluster of 512 slots (2 MiB) only
# once all of it is free, so each cluster that keeps one used slot keeps up to 2 MiB of
# freed pages on the device: four such clusters' worth.
SETTLED_SLACK = 8 << 20


def vmstat() -> tuple[int, int]:
    """Pages swapped in and out so far. A page zswap keeps never reaches the swap device,
    so it counts in zswpin/zswpout rather than pswpin/pswpout: both are added."""
    values = dict(line.split() for line in Path("/proc/vmstat").read_text().splitlines())
    return (int(values["pswpin"]) + int(values.get("zswpin", 0)),
            int(values["pswpout"]) + int(values.get("zswpout", 0)))


@contextmanager
def _interrupts_as_exceptions() -> Iterator[None]:
    """SIGTERM tears down like Ctrl-C does."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@dataclass(frozen=True)
class Scheduled:
    """`--at WHEN FILE=VALUE`: write VALUE to .cram/FILE WHEN seconds into the workload."""

    at: float
    file: str
    value: str

    @property
    def label(self) -> str:
        return f"{self.file}={self.value}"


def parse_at(when: str, assignment: str) -> Scheduled:
    """Check a schedule entry fully before anything runs; ValueError says what is wrong."""
    text = when.strip().removesuffix("s")
    try:
        at = parse_decimal(text)
    except ValueError:
        raise ValueError(f"--at wants seconds such as 10s or 2.5, got {when!r}") from None
    name, eq, value = assignment.partition("=")
    attr = ATTRIBUTES.get(name)
    if not eq or attr is None or attr.store is None:
        writable = ", ".join(n for n, a in ATTRIBUTES.items() if a.store)
        raise ValueError(f"--at wants FILE=VALUE with a writable .cram file ({writable}), "
                         f"got {assignment!r}")
    return Scheduled(at, name, value)


def _apply(mount: Path, entry: Scheduled, now: float) -> dict[str, Any]:
    try:
        with open(mount / ".cram" / entry.file, "w") as f:
            f.write(entry.value + "\n")
        result = "ok"
    except OSError as e:
        result = os.strerror(e.errno or 0)
    say(f"+ {now:.1f}s: echo {shlex.quote(entry.value)} > .cram/{entry.file}: {result}")
    return {"at": entry.at, "applied_at": round(now, 3), "file": entry.file,
            "value": entry.value, "result": result}


def run_target(target: Target, command: list[str], limit: int, interval: float,
               schedule: tuple[Scheduled, ...] = (), settle: float = 0.0,
               timeout: float | None = None,
               ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Run the workload on one target, sampling it; a cramfs target also gets the
    schedule's control writes, each as soon as its time has come. After the workload
    exits, sampling goes on for up to `settle` seconds, until the device holds no more
    than SETTLED_SLACK beyond the kernel's swap Used: the kernel frees the exited
    workload's swap, and how soon the device hears of it is what discard is for."""
    rows: list[dict[str, Any]] = []
    applied: list[dict[str, Any]] = []
    pending = sorted(schedule, key=lambda e: e.at) if isinstance(target, CramTarget) else []
    cgroup = None
    proc: subprocess.Popen[bytes] | None = None
    try:
        target.setup()
        cgroup = MemoryCgroup(f"cramfs-exp-{os.getpid()}-{target.name}", limit)
        say(f"{target.name}: running {' '.join(command)} in {cgroup.path} "
            f"(limit {format_size(limit)}, cgroup v{cgroup.version})")
        in0, out0 = vmstat()
        t0 = time.monotonic()
        group = cgroup
        # in the child before exec, so not one page of the workload is charged elsewhere
        proc = subprocess.Popen(command, preexec_fn=lambda: group.add(os.getpid()))
        last_report = t0
        exited: float | None = None
        timed_out = False
        while True:
            done = proc.poll() is not None
            now = time.monotonic()
            if not done and timeout is not None and now - t0 > timeout:
                # a device that refuses writes under its cap can leave the kernel
                # retrying swap-out for ever (zram's "hangs"): that is the result
                say(f"{target.name}: the workload ran past {timeout:.0f} s; killing it")
                for pid in cgroup.pids():         # its children too (stress-ng's workers)
                    with suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                proc.kill()
                proc.wait(timeout=30)
                timed_out, done = True, True
            if done and exited is None:
                exited = now
            while pending and not done and pending[0].at <= now - t0:
                assert isinstance(target, CramTarget) and target.mount is not None
                applied.append(_apply(target.mount, pending.pop(0), now - t0))
            pin, pout = vmstat()
            row = {"target": target.name, "time": round(now - t0, 3), "running": not done,
                   **target.sample(), "swap_used": swap_used(target.swap_device),
                   "pswpin": pin - in0, "pswpout": pout - out0, "rss": cgroup.rss()}
            if not done and proc.poll() is not None:
                # it exited while we sampled: the kernel may have freed its swap already,
                # so this row is not one of the run's
                row["running"] = False
                done, exited = True, now
            rows.append(row)
            if now - last_report >= 2 or done:
                last_report = now
                say(f"{target.name} {now - t0:6.1f}s  swapped out "
                    f"{format_size(row['pswpout'] * 4096)}, in "
                    f"{format_size(row['pswpin'] * 4096)}  ratio {row['ratio']}  "
                    f"danger {row['danger'] or '-'}")
            if done and exited is not None and (
                    now - exited >= settle
                    or row["device_held"] <= row["swap_used"] + SETTLED_SLACK):
                break
            time.sleep(interval)
        assert exited is not None
        wall = exited - t0
        status = proc.returncode
        proc = None
        result = summarize(rows, wall, status)
        result["timed_out"] = timed_out
        if schedule and isinstance(target, CramTarget):
            result["schedule"] = applied + [
                {"at": e.at, "file": e.file, "value": e.value,
                 "result": "not reached: the workload ended first"} for e in pending]
        return rows, result
    finally:
        try:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
            if cgroup is not None:
                cgroup.remove()
        finally:
            target.teardown()     # whatever the cgroup did: swap, loop, mount, zram


def summarize(rows: list[dict[str, Any]], wall: float, status: int) -> dict[str, Any]:
    """Figures comparable across targets: ratios are taken while the workload runs (after
    it exits, the kernel frees its swap and only zram hears of it)."""
    running = [r for r in rows if r["running"]] or rows
    exit_row = next((r for r in rows if not r["running"]), rows[-1] if rows else {})
    first_discard = next((r for r in rows if r["discards"] > rows[0]["discards"]), None)
    before_discard = [r for r in running if first_discard is None
                      or r["time"] < first_discard["time"]] or running
    # ratios while the workload's swap is whole: its exit frees the swap, and the device
    # empties one object at a time (zram at once, cramfs as the clusters' discards come)
    # while the workload may still count as running; so the run's last ratio is taken
    # before the device fell below half what it held
    half = max((r["device_held"] for r in running), default=0) / 2
    whole = [r for r in before_discard if r["device_held"] >= half] or before_discard
    stored = [r for r in whole if r["physical_used"] > 0]
    times = [r["time"] for r in rows]
    spans = [b - a for a, b in itertools.pairwise(times)] + [0.0]
    time_in: dict[str, float] = {}
    for r, span in zip(rows, spans, strict=True):
        if r["danger"]:
            time_in[r["danger"]] = time_in.get(r["danger"], 0.0) + span
    last = rows[-1] if rows else {}
    return {
        "wall_time_s": round(wall, 2),
        "workload_exit_status": status,
        "data_loss": status == EXIT_MISMATCH,
        "peak_physical_used": max((r["physical_used"] for r in rows), default=0),
        "peak_logical_stored": max((r["logical_stored"] for r in rows), default=0),
        "peak_rss": max((r["rss"] for r in rows), default=0),
        "peak_daemon_rss": max((r["daemon_rss"] for r in rows if r.get("daemon_rss")),
                               default=None),
        "peak_daemon_overhead": max((r["daemon_overhead"] for r in rows
                                     if r.get("daemon_overhead") is not None), default=None),
        "peak_fallback_pages": max((r["fallback_pages"] for r in rows), default=0),
        "peak_dram_tier_pages": max((r["promoted_pages"] for r in rows), default=0),
        "peak_swap_used": max((r["swap_used"] for r in rows), default=0),
        # the ratio at the last sample while the workload ran, and when the device held
        # the most (comparable across targets); after the exit the device empties as the
        # kernel frees the workload's swap, so that ratio is named for what it is
        "ratio_last_while_running": stored[-1]["ratio"] if stored else None,
        "ratio_at_peak": max(stored, key=lambda r: r["logical_stored"])["ratio"]
        if stored else None,
        "ratio_after_exit": last.get("ratio") if last.get("physical_used") else None,
        # the memory the device may use (cramfs physical, zram mem_limit, zswap's pool)
        "physical_limit": max((r["physical"] or 0 for r in rows), default=0) or None,
        "failed_writes": last.get("failed_writes", 0),
        "swapped_out_bytes": last.get("pswpout", 0) * 4096,
        "swapped_in_bytes": last.get("pswpin", 0) * 4096,
        "promotions": last.get("promotions", 0),
        "demotions": last.get("demotions", 0),
        "refusals": last.get("reject_write_control", 0),
        "peak_written_back_pages": max((r["written_back_pages"] for r in rows), default=0),
        "bd_reads": last.get("bd_reads", 0),
        "bd_writes": last.get("bd_writes", 0),
        "reclaim_written": last.get("reclaim_written", 0),
        "seconds_per_level": {lv: round(time_in.get(lv, 0.0), 2) for lv in LEVELS}
        if time_in else {},
        # what the device holds for swap against what the kernel still uses: freed slots
        # reach the device only as discards (swapon --discard), zram's at once
        "peak_device_held": max((r["device_held"] for r in rows), default=0),
        "device_held_after_exit": last.get("device_held", 0),
        "kernel_swap_used_after_exit": last.get("swap_used", 0),
        "settled_after_exit_s": round(last["time"] - exit_row["time"], 2)
        if last and last["device_held"] <= last["swap_used"] + SETTLED_SLACK else None,
        # when the kernel's discards came (the first, at swapon, is the whole area's):
        # it discards a cluster of slots only once all of it is free
        "first_swap_discard_at_s": first_discard["time"] if first_discard else None,
        "peak_device_held_beyond_swap_used_before_it": max(
            (r["device_held"] - r["swap_used"] for r in before_discard), default=0),
        "discarded_pages": last.get("notify_free", 0),
        "discard_requests": last.get("discards", 0),
    }


def write_results(out: Path, rows: list[dict[str, Any]], summary: dict[str, Any],
                  limit: int) -> None:
    marks = [(e["applied_at"], f"{e['file']}={e['value']}")
             for e in summary.get("cramfs", {}).get("schedule", []) if "applied_at" in e]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "timeline.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    from .plot import plot_timeline

    notes = {}
    for name, r in summary.items():
        if isinstance(r, dict) and "workload_exit_status" in r:
            what = [f"{r['failed_writes']} failed writes"] if r.get("failed_writes") else []
            if r.get("timed_out"):
                what.append("workload killed after the peer timeout")
            elif r["workload_exit_status"] != 0:
                what.append(f"workload exit {r['workload_exit_status']}")
            if r.get("data_loss"):
                what.append("DATA LOSS")
            if what:
                notes[name] = ", ".join(what)
    plot_timeline(rows, out / "plot.png", limit, marks, notes)


def _cramfs_settings(opts: str, mount: Path | None) -> dict[str, Any]:
    """The compressor and physical size cramfs runs with: the given mount's, or the
    defaults with these options applied."""
    if mount is not None:
        s = json.loads((mount / ".cram" / "stat.json").read_text())
        return {"compressor": s["compressor"], "physical": s["physical"]}
    config = DeviceConfig()
    for item in filter(None, opts.split(",")):
        name, _, value = item.partition("=")
        if name in ("compressor", "physical"):
            config = config.with_value(name, value)
    return {"compressor": config.compressor, "physical": config.physical}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", dest="options", action="append", default=[],
                   help="cramfs mount options for the fresh mount (k=v,...)")
    p.add_argument("--mount", type=Path, help="use this existing cramfs mount instead")
    p.add_argument("--mount-dir", type=Path, metavar="DIR",
                   help="mount the fresh cramfs here (created if missing; default: a "
                   "temporary directory)")
    p.add_argument("--size", type=parse_size, default=256 << 20,
                   help="built-in workload size (256M)")
    p.add_argument("--limit", type=parse_size, help="cgroup memory limit (a third of --size)")
    p.add_argument("--swap-size", type=parse_size, default=1 << 30, help="swap file size (1G)")
    p.add_argument("--compare", choices=["zram", "zswap"], action="append", default=[],
                   help="run the same on kernel zram, or on kernel zswap in front of a swap "
                   "file on the host's disk (repeatable)")
    p.add_argument("--interval", type=float, default=0.2, help="sampling period in seconds")
    p.add_argument("--no-discard", dest="discard", action="store_false",
                   help="swapon without --discard: the kernel's freed swap slots then stay "
                   "on the device until overwritten (zram hears of them regardless)")
    p.add_argument("--peer-timeout", type=float, metavar="SECONDS",
                   help="kill a peer's workload that runs longer than this, and report it "
                   "(default: 3 times cramfs's run and 60 s more)")
    p.add_argument("--settle", type=float, default=20.0, metavar="SECONDS",
                   help="after the workload exits, sample until the device holds at most "
                   "8 MiB beyond the kernel's swap Used, or this long (20)")
    p.add_argument("--at", nargs=2, action="append", default=[], metavar=("WHEN", "FILE=VALUE"),
                   help="at WHEN seconds into the workload (10s, 2.5), write VALUE to "
                   ".cram/FILE, e.g. --at 10s inject='ratio 4' (repeatable)")
    p.add_argument("--trace", type=Path, metavar="FILE",
                   help="record the cramfs run into FILE (.cram/trace), for cramfs-trace "
                   "replay and whatif")
    p.add_argument("--trace-compressors", default="", metavar="ALGO,...",
                   help="also keep each traced page as these compressors encode it "
                   "(zstd, lzo), so a what-if with one of them compresses nothing again")
    p.add_argument("--out", type=Path, help="results folder (results/DATE-TIME)")
    p.add_argument("command", nargs=argparse.REMAINDER,
                   help="workload command after --; default: the built-in workload")
    args = p.parse_args(argv)
    if args.mount and args.mount_dir:
        p.error("--mount uses an existing mount, --mount-dir makes one: give one of them")
    try:
        schedule = tuple(parse_at(when, what) for when, what in args.at)
    except ValueError as e:
        p.error(str(e))
    command = [c for c in args.command if c != "--"] or [
        sys.executable, "-m", "cramfs.lab.workload", "--size", str(args.size)]
    limit = args.limit or args.size // 3
    out = args.out or Path("results") / time.strftime("%Y%m%d-%H%M%S")
    opts = ",".join(args.options)
    try:
        settings = _cramfs_settings(opts, args.mount)
    except (ValueError, OSError) as e:
        p.error(f"cannot tell cramfs's compressor and physical size: {e}")
    algorithm = settings["compressor"]
    if args.trace_compressors:
        try:
            trace.keepable(args.trace_compressors)
        except ValueError as e:
            p.error(f"--trace-compressors: {e}")
    if args.trace_compressors and args.trace is None:
        p.error("--trace-compressors needs --trace")

    targets: list[Target] = [CramTarget(args.options, args.mount, args.swap_size, args.trace,
                                        args.trace_compressors, args.discard, args.mount_dir)]
    zram_target = None
    if "zram" in args.compare:
        why = ZramTarget.unavailable(algorithm)
        if why:
            say(f"skipping the zram comparison: {why}")
        else:
            # held to cramfs's physical: a peer with more memory is no comparison
            zram_target = ZramTarget(algorithm, args.swap_size, int(settings["physical"]))
            targets.append(zram_target)
    zswap_target = None
    if "zswap" in args.compare:
        kernel_algorithm = zswap.closest_compressor(algorithm)
        why = ZswapTarget.unavailable(kernel_algorithm)
        if why:
            say(f"skipping the zswap comparison: {why}")
        else:
            zswap_target = ZswapTarget(kernel_algorithm, int(settings["physical"]),
                                       args.swap_size)
            targets.append(zswap_target)

    all_rows: list[dict[str, Any]] = []
    summary: dict[str, Any] = {"command": command, "limit": limit,
                               "swap_size": args.swap_size, "cramfs_options": opts}
    if zram_target is not None:
        summary["zram_setup"] = zram_target.describe()
    if zswap_target is not None:
        summary["zswap_setup"] = {**zswap_target.describe(), "cramfs_compressor": algorithm}
    try:
        with _interrupts_as_exceptions():
            for target in targets:
                timeout = None if target is targets[0] else args.peer_timeout or (
                    3 * summary["cramfs"]["wall_time_s"] + 60)
                rows, result = run_target(target, command, limit, args.interval, schedule,
                                          args.settle, timeout)
                all_rows += rows
                summary[target.name] = result
                if target is zram_target:
                    result["mem_limit"] = zram_target.mem_limit
                elif target is zswap_target:
                    result["max_pool_bytes"] = zswap_target.max_pool_bytes
    except KeyboardInterrupt:
        say("interrupted; everything was torn down")
        return 130
    except (RuntimeError, OSError, CgroupUnavailable) as e:
        say(f"failed: {e}; everything was torn down")
        return 1
    if len(targets) > 1:
        summary["compare"] = {key: {t.name: summary[t.name][key] for t in targets}
                              for key in ("ratio_at_peak", "wall_time_s", "swapped_out_bytes")}
    write_results(out, all_rows, summary, limit)
    for name in (t.name for t in targets):
        r = summary[name]
        limit_note = f", {r['failed_writes']} failed writes" if r["failed_writes"] else ""
        say(f"{name}: {r['wall_time_s']}s, swapped out {format_size(r['swapped_out_bytes'])}, "
            f"ratio at peak {r['ratio_at_peak']} (last while running "
            f"{r['ratio_last_while_running']}), workload exit {r['workload_exit_status']}"
            f"{limit_note}")
        settled = r["settled_after_exit_s"]
        say(f"{name}: after exit the device held {format_size(r['device_held_after_exit'])} "
            f"against the kernel's swap Used {format_size(r['kernel_swap_used_after_exit'])}"
            + (f" (settled {settled}s after exit)" if settled is not None else
               f" (not settled within {args.settle:g}s)"))
    say(f"results in {out}/ (timeline.csv, summary.json, plot.png)")
    # A peer that refused writes under its cap, or whose workload was killed, is a
    # result (summary.json and the plot say so); the exit status is cramfs's run's:
    # 3 when its workload found corrupted memory, 1 when it failed otherwise (killed:
    # a SIGBUS is a page the device could not give back), 0 when it passed.
    for name in (t.name for t in targets[1:]):
        if summary[name]["data_loss"]:
            say(f"{name}: the workload found corrupted memory (a result, not this run's "
                "failure)")
    cram = summary["cramfs"]
    if cram["data_loss"]:
        say("DATA LOSS: the workload found corrupted memory on cramfs")
        return EXIT_MISMATCH
    if cram["workload_exit_status"] != 0:
        say(f"cramfs: the workload failed (exit status {cram['workload_exit_status']})")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
