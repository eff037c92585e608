"""cramctl against real mounts: the zramctl-like table, its flags and grammar, `set`'s
errors, and the Prometheus exporter over real HTTP."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from cramfs.cramctl import COLUMNS, DEFAULT_COLUMNS
from cramfs.procfs import mounts

from .test_metrics import shape, values

pytestmark = pytest.mark.mount
CRAMCTL = str(Path(sys.executable).parent / "cramctl")


def ctl(*args: str, user: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["setpriv", "--reuid", user, "--regid", user, "--clear-groups"] if user else []
    return subprocess.run([*prefix, CRAMCTL, *args], capture_output=True, text=True,
                          timeout=60)


def test_list_grammar_and_flags(mounter):
    a = mounter("-o", "physical=64M")
    b = mounter("-o", "physical=32M")
    (a.path / "f").write_bytes(b"x" * 10000)
    r = ctl()
    lines = r.stdout.splitlines()
    assert r.returncode == 0 and lines[0].split() == list(DEFAULT_COLUMNS)
    assert {ln.split()[0] for ln in lines[1:]} >= {str(a.path), str(b.path)}
    # a first word that is no command is a mountpoint: `cramctl [list] [MOUNTPOINT]`
    for argv in ((str(a.path),), ("list", str(a.path))):
        rows = ctl(*argv, "-n", "-o", "MOUNTPOINT,MEM-LIMIT").stdout.splitlines()
        assert rows == [f"{a.path} 64M"] or [r.split() for r in rows] == [[str(a.path), "64M"]]
    rows = ctl(str(b.path), "-b", "--raw", "-n", "-o", "mem-limit,data").stdout.splitlines()
    assert rows == [f"{32 << 20} 0"]
    every = ctl(str(a.path), "--output-all").stdout.splitlines()[0].split()
    assert every == list(COLUMNS)
    doc = json.loads(ctl(str(a.path), "-J", "-b", "--output-all").stdout)
    row = doc["cramfs"][0]
    assert row["mountpoint"] == str(a.path) and row["mem-limit"] == 64 << 20
    assert row["data"] == 3 * 4096 and isinstance(row["comp-ratio"], float)
    doc = json.loads(ctl(str(a.path), "-J", "-o", "mem-limit").stdout)
    assert doc == {"cramfs": [{"mem-limit": "64M"}]}


def test_list_errors_are_one_line(mnt, tmp_path):
    for argv, fragment, code in (((str(tmp_path),), "is not a cramfs mount", 1),
                                 (("-o", "BOGUS"), "unknown column 'BOGUS'", 1),
                                 (("--frobnicate",), "unrecognized arguments", 2)):
        r = ctl(*argv)
        assert r.returncode == code and fragment in r.stderr
        assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


def test_set_says_what_is_wrong(mnt):
    cases = [(("dram", "4X"), "invalid value for dram: not a size: '4X' (use bytes"),
             (("warn_at", "95%"), "invalid value for warn_at: need 0% < warn_at < critical_at"),
             (("colour", "blue"), "unknown knob 'colour'; knobs: compressor"),
             (("chain_size", "4"), "chain_size is fixed for the life of the mount")]
    for (key, value), fragment in cases:
        r = ctl("set", str(mnt.path), key, value)
        assert r.returncode == 1 and fragment in r.stderr, r.stderr
    assert ctl("set", str(mnt.path), "dram", "1M").returncode == 0
    assert mnt.ctl("dram") == f"{1 << 20}\n"


def test_name_column_is_the_fsname_else_the_mountpoint(mounter):
    named, plain = mounter("-o", "fsname=cram-a"), mounter()
    rows = ctl("-n", "--raw", "-o", "NAME,MOUNTPOINT").stdout.splitlines()
    assert f"cram-a {named.path}" in rows and f"{plain.path} {plain.path}" in rows
    # zramctl's default columns: NAME first, MOUNTPOINT last
    head = ctl(str(named.path)).stdout.splitlines()[0].split()
    assert head[0] == "NAME" and head[-1] == "MOUNTPOINT"
    assert json.loads(ctl(str(named.path), "-J", "-o", "name").stdout) == \
        {"cramfs": [{"name": "cram-a"}]}


def test_reset_empties_the_device_and_explains_ebusy(mounter):
    a, b = mounter(), mounter()
    for m in (a, b):
        (m.path / "f").write_bytes(b"z" * 3 * 4096)
    assert ctl("-r", str(a.path), str(b.path)).returncode == 0
    for m in (a, b):
        assert not (m.path / "f").exists() and m.stat()["writes"] == 0
    (a.path / "g").write_bytes(b"z" * 4096)
    with open(a.path / "g", "rb"):
        r = ctl("--reset", str(a.path))
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
        assert f"cramctl: {a.path}: cannot reset: a file on it is open (EBUSY)" in r.stderr
        assert "swapoff" in r.stderr
    assert (a.path / "g").exists(), "a refused reset leaves the device as it was"
    for argv, fragment in ((("-r",), "--reset needs a MOUNTPOINT"),
                           (("-r", "-o", "NAME", str(a.path)), "--reset takes no listing"),
                           (("-r", "/nonexistent"), "is not a cramfs mount")):
        r = ctl(*argv)
        assert r.returncode == 1 and fragment in r.stderr, r.stderr
    assert (a.path / "g").exists()


def test_set_takes_every_knob_of_the_control_directory(mnt):
    """Every 0644 control file but inject and trace (commands) is a knob `set` takes."""
    from cramfs.config import SETTINGS, WHILE_EMPTY
    from cramfs.control import ATTRIBUTES
    from cramfs.cramctl import knobs

    rw = {n for n, a in ATTRIBUTES.items() if a.show and a.store} - {"inject", "trace"}
    assert set(knobs()) == rw
    assert set(knobs()) - set(SETTINGS) - set(WHILE_EMPTY)
    for key, value, shown in (("writeback_limit_enable", "1", "1\n"),
                              ("writeback_limit", "100", "100\n"),
                              ("recomp_algorithm", "algo=zstd", "#1: lzo-rle lzo lz4 [zstd]\n"),
                              ("mem_used_max", "0", "0\n")):
        r = ctl("set", str(mnt.path), key, value)
        assert r.returncode == 0, r.stderr
        assert mnt.ctl(key) == shown, key
    # the daemon judges these values, and cramctl gives its reason
    for key, value, fragment in (
            ("writeback_limit", "lots", "invalid value for writeback_limit: not a whole "
             "number: 'lots'; expected a page count"),
            ("writeback_limit_enable", "2", "invalid value for writeback_limit_enable: "
             "expected 0 or 1, got '2'"),
            ("recomp_algorithm", "zstd", "invalid value for recomp_algorithm: expected "
             "algo=... priority=..., got 'zstd'")):
        r = ctl("set", str(mnt.path), key, value)
        assert r.returncode == 1 and fragment in r.stderr, r.stderr
        assert len(r.stderr.splitlines()) == 1
    r = ctl("set", str(mnt.path), "physical", "512M")
    assert r.returncode == 1, r.stderr
    assert f"echo 'physical 512M' > {mnt.path}/.cram/inject" in r.stderr
    with open(mnt.path / ".cram" / "inject", "w") as f:        # and that command works
        f.write("physical 512M\n")
    assert mnt.ctl("physical") == f"{512 << 20}\n"


def test_set_by_another_user_is_not_permitted():
    """With allow_other another user reads the device but may not turn its knobs."""
    from .conftest import start_mount

    base = Path(tempfile.mkdtemp(prefix="cramctl-"))
    base.chmod(0o755)
    m = start_mount(base / "mnt", "-o", "allow_other")
    try:
        assert ctl(str(m.path), "-n", "-o", "danger", user="65534").stdout == "ok\n"
        r = ctl("set", str(m.path), "dram", "1M", user="65534")
        assert r.returncode == 1 and "dram: not permitted" in r.stderr, r.stderr
    finally:
        m.close()
        shutil.rmtree(base, ignore_errors=True)


def test_mountinfo_is_unescaped(tmp_path):
    fake = tmp_path / "mountinfo"
    fake.write_text("36 35 0:32 / /mnt/with\\040space rw - fuse.cramfs cram\\040x rw\n")
    (entry,) = mounts(str(fake))
    assert entry.mountpoint == "/mnt/with space" and entry.source == "cram x"
    assert entry.fstype == "fuse.cramfs"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_exporter_serves_every_mount(mounter):
    from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
    from prometheus_client.parser import text_string_to_metric_families as text

    a, b = mounter(), mounter("-o", "compressor=zstd")
    (a.path / "f").write_bytes(b"y" * 5000)
    port = _free_port()
    proc = subprocess.Popen([CRAMCTL, "exporter", "--listen", f"127.0.0.1:{port}"],
                            stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        deadline = time.monotonic() + 20
        while True:
            try:
                plain = urllib.request.urlopen(url, timeout=5).read().decode()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        fams = {f.name: f for f in text(plain)}
        used = {s.labels["mountpoint"]: s.value
                for s in fams["cramfs_physical_used_bytes"].samples}
        assert used[str(a.path)] > 0 and used[str(b.path)] == 0
        written = {s.labels["mountpoint"]: s.value for s in fams["cramfs_written_pages"].samples
                   if s.name.endswith("_total")}
        assert written[str(a.path)] == 2
        info = {s.labels["mountpoint"]: s.labels for s in fams["cramfs_info"].samples}
        assert info[str(b.path)]["compressor"] == "zstd"
        # a mount's own file: the same families, labels and values, less `mountpoint`
        own = a.ctl("metrics")
        assert shape(own) == shape(plain, drop="mountpoint")
        assert values(own) == {(name, labels - {("mountpoint", str(a.path))}): v
                               for (name, labels), v in values(plain).items()
                               if ("mountpoint", str(a.path)) in labels}
        req = urllib.request.Request(url, headers={
            "Accept": "application/openmetrics-text; version=1.0.0; charset=utf-8"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert "openmetrics" in resp.headers["Content-Type"]
            body = resp.read().decode()
        assert body.rstrip().endswith("# EOF")
        om_fams = {f.name: f for f in om(body)}
        assert om_fams["cramfs_written_pages"].type == "counter"
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0
