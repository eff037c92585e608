"""The soak test's quick run: everything at once on one mount, nothing lost or left."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.mount
SOAK = Path(__file__).resolve().parent.parent / "scripts" / "soak"


def test_quick_soak_loses_nothing_and_leaves_nothing(tmp_path):
    out = tmp_path / "soak.json"
    r = subprocess.run([str(SOAK), "--quick", "--json", str(out)], capture_output=True,
                       text=True, timeout=600)
    report = json.loads(out.read_text())
    assert r.returncode == 0, (report, r.stderr[-2000:])
    assert report["wrong_bytes"] == 0 and report["daemon_deaths"] == 0
    assert report["unexpected_errnos"] == [] and report["left_on_host"] == []
    ops = report["ops"]
    for kind in ("fsx_buffered", "fsx_direct", "knob_writes", "resets", "bd_writes"):
        assert ops.get(kind, 0) > 0, kind
    skipped = " ".join(report["skipped"])
    assert ops.get("fio_rounds", 0) > 0 or "fio" in skipped
    assert ops.get("swap_rounds", 0) > 0 or "swap" in skipped
