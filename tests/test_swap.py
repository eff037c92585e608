"""Real swap through cramfs: loop device, swapon, a memory-limited cgroup, teardown.

These change host state (swap, loop devices, cgroups), so each one checks
afterwards that nothing it made is left, and cleans up in a finalizer even
when an assertion fails.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cramfs.lab import zswap
from cramfs.lab.cgroup import detect
from cramfs.lab.swap import active_swaps, loops_backed_by, swap_down, swap_up
from cramfs.lab.swap import unavailable as swap_unavailable
from cramfs.procfs import mounts

from .conftest import mount_unavailable


def _swap_unavailable() -> str | None:
    return mount_unavailable() or swap_unavailable()


pytestmark = [pytest.mark.mount, pytest.mark.skipif(_swap_unavailable() is not None,
                                                    reason=_swap_unavailable() or "")]


def host_state() -> tuple[set[str], set[str], set[str], set[str], set[str]]:
    swaps = set(active_swaps())
    loops = set(subprocess.run(["losetup", "-a"], capture_output=True, text=True)
                .stdout.splitlines())
    cram = {m.mountpoint for m in mounts() if m.fstype == "fuse.cramfs"}
    _, root = detect()
    groups = {p.name for p in root.iterdir() if p.name.startswith("cramfs-exp-")}
    params = {f"{k}={v}" for k, v in zswap.save().items()} if zswap.PARAMS.exists() else set()
    return swaps, loops, cram, groups, params


@pytest.fixture
def clean_host():
    before = host_state()
    yield
    after = host_state()
    assert after == before, f"left behind: {[a - b for a, b in zip(after, before, strict=True)]}"


def test_swap_experiment_end_to_end(tmp_path, clean_host):
    out = tmp_path / "results"
    size = 256 << 20
    cmd = [sys.executable, "-m", "cramfs.lab.experiment", "--size", str(size),
           "--limit", str(size // 3), "--swap-size", "768M", "--interval", "0.2",
           "--out", str(out), "--compare", "zram", "--compare", "zswap",
           "--at", "0.5s", "inject=ratio 2", "--at", "1s", "inject=clear",
           "--at", "999s", "dram=1M"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    cram = summary["cramfs"]
    assert cram["workload_exit_status"] == 0 and not cram["data_loss"]
    assert cram["swapped_out_bytes"] >= 64 << 20, "the workload must really swap"
    with open(out / "timeline.csv") as f:
        rows = [row for row in csv.DictReader(f) if row["target"] == "cramfs"]
    assert len(rows) > 5
    # the device saw the traffic: it held tens of MiB, and swap-ins faulted pages back
    assert max(int(row["logical_stored"]) for row in rows) >= 32 << 20
    assert cram["promotions"] > 0
    assert cram["ratio_last_while_running"] > 1 and cram["ratio_at_peak"] > 1
    assert cram["physical_limit"] == 1 << 30
    assert (out / "plot.png").stat().st_size > 10_000
    if zswap.unavailable() is None:
        # the kernel's zswap ran the same workload, with lzo (its nearest to lz4) and the
        # pool limit nearest to cramfs's 1 GiB physical; clean_host checks the parameters
        # came back as they were
        zs, setup = summary["zswap"], summary["zswap_setup"]
        assert zs["workload_exit_status"] == 0 and not zs["data_loss"]
        assert zs["peak_physical_used"] > 0 and zs["peak_logical_stored"] > zs[
            "peak_physical_used"], "zswap held compressed pages"
        assert setup["compressor"] == "lzo" and setup["cramfs_compressor"] == "lz4"
        assert setup["max_pool_percent"] == zswap.pool_percent(1 << 30, zswap.mem_total())
        assert zs["max_pool_bytes"] == setup["pool_limit_bytes"] == zs["physical_limit"]
        assert set(summary["compare"]["wall_time_s"]) == {"cramfs", "zram", "zswap"}
    sched = cram["schedule"]
    assert [(e["file"], e["value"], e["result"]) for e in sched] == [
        ("inject", "ratio 2", "ok"), ("inject", "clear", "ok"),
        ("dram", "1M", "not reached: the workload ended first")]
    assert 0.5 <= sched[0]["applied_at"] < 2 and "schedule" not in summary.get("zram", {})
    assert "swapped out" in r.stderr and "danger" in r.stderr      # progress lines
    if Path("/sys/block/zram0").exists() and "skipping the zram comparison" not in r.stderr:
        zr = summary["zram"]
        assert zr["workload_exit_status"] == 0
        # held to cramfs's physical, and under it
        assert zr["mem_limit"] == summary["zram_setup"]["mem_limit"] == cram["physical_limit"]
        assert zr["peak_physical_used"] <= zr["mem_limit"]
        assert {"cramfs", "zram"} <= set(summary["compare"]["ratio_at_peak"])
        assert Path("/sys/block/zram0/disksize").read_text().strip() == "0", "zram reset"


def test_interrupted_experiment_tears_down(tmp_path, clean_host):
    proc = subprocess.Popen([sys.executable, "-m", "cramfs.lab.experiment", "--size", "512M",
                             "--out", str(tmp_path / "r")], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not any(s.startswith("/dev/loop") for s in active_swaps()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)
        time.sleep(1)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=120) == 130
        assert "interrupted; everything was torn down" in (proc.stderr.read() if proc.stderr
                                                           else "")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_swap_down_is_idempotent_and_only_touches_its_own(mnt, tmp_path, clean_host):
    lines: list[str] = []
    other_file = tmp_path / "other.img"
    other_file.write_bytes(bytes(1 << 20))
    other = subprocess.run(["losetup", "--show", "-f", str(other_file)], capture_output=True,
                           text=True, check=True).stdout.strip()
    try:
        loop = swap_up(mnt.path, 64 << 20, echo=lines.append)
        assert lines[:3] == [f"truncate -s {64 << 20} {mnt.path}/swap0",
                             f"losetup --direct-io=on --show -f {mnt.path}/swap0",
                             f"mkswap {loop}"]
        assert lines[3].startswith("swapon --discard -p ") and lines[3].endswith(loop)
        assert loop in active_swaps()
        assert Path(f"/sys/block/{Path(loop).name}/loop/dio").read_text().strip() == "1"
        lines.clear()
        swap_down(mnt.path, echo=lines.append)
        assert lines == [f"swapoff {loop}", f"losetup -d {loop}", f"rm -f {mnt.path}/swap0"]
        lines.clear()
        swap_down(mnt.path, echo=lines.append)
        assert lines == [], "a second teardown has nothing to do"
        # half-finished: a file and a loop device, but no swapon
        (mnt.path / "swap0").write_bytes(b"")
        os.truncate(mnt.path / "swap0", 1 << 20)
        subprocess.run(["losetup", "-f", str(mnt.path / "swap0")], check=True)
        assert loops_backed_by(mnt.path / "swap0")
        swap_down(mnt.path, echo=lines.append)
        assert not loops_backed_by(mnt.path / "swap0") and not (mnt.path / "swap0").exists()
        assert other in subprocess.run(["losetup", "-a"], capture_output=True,
                                       text=True).stdout, "someone else's loop was touched"
    finally:
        swap_down(mnt.path, echo=lines.append)
        subprocess.run(["losetup", "-d", other], capture_output=True)



def test_swap_through_a_backing_file_loses_nothing(tmp_path, clean_host):
    """Real swap into an 8 MiB device that writes back: reclaim moves cold pages to the
    backing file before write control refuses, refused pages go there too, swap-ins
    fault them back, and every page the workload checks is right."""
    backing = tmp_path / "backing"
    with open(backing, "wb") as f:
        f.truncate(512 << 20)
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "cramfs.lab.experiment", "--size", "128M", "--limit", "48M",
           "--swap-size", "384M", "--interval", "0.2", "--out", str(out), "-o",
           f"physical=8M,dram=0,fallback=writeback,reclaim=writeback,backing_dev={backing}"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    cram = json.loads((out / "summary.json").read_text())["cramfs"]
    assert cram["workload_exit_status"] == 0 and not cram["data_loss"]
    assert cram["swapped_out_bytes"] >= 64 << 20, "the workload must really swap"
    assert cram["reclaim_written"] > 1000 and cram["peak_written_back_pages"] > 1000
    assert cram["bd_reads"] > 0, "swap-ins faulted pages back from the file"
    assert cram["bd_writes"] >= cram["reclaim_written"]
    assert os.stat(backing).st_blocks == 0, "the unmount punched every block out"


def test_swap_with_discard_gives_freed_slots_back(tmp_path, clean_host):
    """swapon --discard through the loop device: once the workload exits and the kernel
    frees its swap, the clusters' discards reach the device, which then holds at most
    8 MiB more than the kernel's swap Used, within 20 s."""
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "cramfs.lab.experiment", "--size", "192M", "--limit", "64M",
           "--swap-size", "512M", "--interval", "0.2", "--settle", "20", "--out", str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stderr[-3000:]
    cram = json.loads((out / "summary.json").read_text())["cramfs"]
    assert cram["workload_exit_status"] == 0 and not cram["data_loss"]
    assert cram["swapped_out_bytes"] >= 64 << 20, "the workload must really swap"
    assert cram["peak_device_held"] >= 64 << 20
    assert cram["discard_requests"] > 1, "swapon's discard of the area, then clusters"
    held, used = cram["device_held_after_exit"], cram["kernel_swap_used_after_exit"]
    assert held <= used + (8 << 20), (held, used)
    assert cram["settled_after_exit_s"] is not None and cram["settled_after_exit_s"] <= 20
    with open(out / "timeline.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows[-1]["running"] == "False" and int(rows[-1]["device_held"]) == held
