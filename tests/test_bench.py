"""The benchmark's quick mode: proves the benchmark works. No speed thresholds here;
speed goals live in the benchmark's own report, since these machines are shared."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from cramfs.procfs import mounts


@pytest.mark.mount
@pytest.mark.skipif(shutil.which("fio") is None, reason="fio is not installed")
def test_quick_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run([sys.executable, "-m", "cramfs.lab.bench", "--quick", "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["quick"] is True
    for name in ("4k randwrite QD1", "4k randread QD1", "128k write", "loop 4k randwrite QD1"):
        row = doc["jobs"][name]
        assert row["cramfs"]["iops"] > 0 and row["baseline"]["iops"] > 0
        assert row["vs_baseline"] == round(row["cramfs"]["iops"] / row["baseline"]["iops"], 2)
        assert row["vs_baseline_range"] == [row["vs_baseline"]] * 2      # one round
    big = doc["jobs"]["128k write"]
    assert big["vs_lz4"] == round(big["cramfs"]["mbps"] / doc["lz4_fio_data"]["compress_mbps"], 2)
    rd = doc["real_data"]
    assert rd["ratio"] > 1 and rd["physical_used"] > 0 and rd["pool_overhead"] >= 1
    assert doc["lz4_real_data"]["compress_mbps"] > 0
    wc = doc["write_cost"]
    assert wc["write_us"] > wc["lz4_us"] > 0
    rc = doc["read_cost"]
    assert rc["native_us"] > rc["lz4_us"] > 0 and rc["python_us"] > 0
    assert doc["metadata"]["pages"] >= 1 << 15
    assert doc["metadata"]["counted_bytes_per_page"] <= 16
    assert "| 4k randwrite QD1 |" in r.stdout
    # nothing left behind: the temp mounts are gone
    left = [m.mountpoint for m in mounts() if "bench-cramfs-" in m.mountpoint
            or "bench-baseline-" in m.mountpoint]
    assert not left
