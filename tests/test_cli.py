"""The `cramfs` command as a user runs it: bad input, daemon mode, signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cramfs.cli import UsageError, parse

from .conftest import CRAMFS, is_mounted, unmount

needs_mount = pytest.mark.mount      # root and /dev/fuse; conftest skips where absent


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CRAMFS, *args], capture_output=True, text=True, timeout=60, env=env)


def assert_usage_error(r: subprocess.CompletedProcess[str], fragment: str) -> None:
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("cramfs: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in r.stderr


def test_parse_both_option_spellings():
    a = parse(["--advertised", "16G", "--physical", "2G", "--write-control", "off", "/m"])
    b = parse(["cram", "/m", "-o", "advertised=16G,physical=2G,write_control=off,rw,nosuid"])
    assert a.config == b.config
    assert a.config.advertised == 16 << 30 and a.config.write_control is False
    assert b.mountpoint == "/m"
    c = parse(["-o", "allow_other,fsname=mycram,debug", "-o", "dram=0", "/m"])
    assert c.allow_other and c.debug and c.fsname == "mycram" and c.config.dram == 0
    assert "allow_other" in c.fuse_options() and "fsname=mycram" in c.fuse_options()
    for bad in (["-o", "colour=blue", "/m"], ["--physical", "lots", "/m"], ["a", "b", "c"],
                ["-o", "physical", "/m"]):
        with pytest.raises(UsageError):
            parse(bad)


@pytest.mark.parametrize(("args", "fragment"), [
    (["-o", "colour=blue", "{mp}"], "unknown mount option 'colour=blue'"),
    (["--frobnicate", "{mp}"], "unrecognized arguments"),
    (["--physical", "12Q", "{mp}"], "physical: not a size"),
    (["--advertised", "1G", "--physical", "2G", "{mp}"], "must not exceed advertised"),
    (["--compressor", "lzma", "{mp}"], "compressor: expected one of lzo-rle, lzo, lz4, zstd, none"),
    (["-o", "engine=fast", "{mp}"], "engine: expected one of native, python"),
    (["{mp}/missing"], "does not exist"),
    ([], "the following arguments are required"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, fragment):
    r = run_cli(*(a.format(mp=tmp_path) for a in args))
    assert_usage_error(r, fragment)


def test_missing_fusermount3_is_a_usage_error(tmp_path):
    r = run_cli(str(tmp_path), env={"PATH": str(tmp_path)})
    assert_usage_error(r, "fusermount3 not found")


@needs_mount
def test_missing_dev_fuse_is_a_usage_error(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    # A private mount namespace with an empty /dev: /dev/fuse is gone for this process only.
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                        f"mount -t tmpfs none /dev && exec {CRAMFS} {tmp_path}"],
                       capture_output=True, text=True, timeout=60)
    assert_usage_error(r, "/dev/fuse is missing")


@needs_mount
def test_mountpoint_in_use(mnt):
    assert_usage_error(run_cli(str(mnt.path)), "already in use")


@needs_mount
def test_daemon_mode_returns_once_live_and_umount_ends_it(tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    r = run_cli("--log", str(tmp_path / "log"), "cram", str(mp), "-o", "physical=256M")
    try:
        assert r.returncode == 0, r.stderr
        assert is_mounted(mp), "cramfs must return only once the mount is live"
        assert (mp / ".cram" / "physical").read_text() == f"{256 << 20}\n"
        pid = _daemon_pid(mp)
        assert pid is not None
        subprocess.run(["umount", str(mp)], check=True)
        assert _wait_gone(pid), "the daemon must exit after umount"
    finally:
        unmount(mp)


@needs_mount
def test_sigterm_and_sigint_unmount_cleanly(tmp_path):
    from .conftest import start_mount

    for sig in (signal.SIGTERM, signal.SIGINT):
        m = start_mount(tmp_path / f"mnt{sig}")
        try:
            (m.path / "f").write_bytes(b"data")
            m.proc.send_signal(sig)
            assert m.proc.wait(timeout=15) == 0
            assert not is_mounted(m.path)
            assert "unmounted" in m.log.read_text()
        finally:
            m.close()


@needs_mount
@pytest.mark.skipif(shutil.which("losetup") is None or not Path("/dev/loop-control").exists(),
                    reason="no loop devices here")
def test_sigterm_while_a_loop_device_is_attached_keeps_serving(mnt):
    """A stray SIGTERM used to detach the mount lazily and exit: the loop device
    (and any swap on it) then read EIO. Now the daemon stays until umount."""
    data = os.urandom(1 << 20)
    (mnt.path / "disk").write_bytes(data)
    loop = subprocess.run(["losetup", "-f", "--show", "--direct-io=on", str(mnt.path / "disk")],
                          capture_output=True, text=True, check=True).stdout.strip()
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGTERM):
            mnt.proc.send_signal(sig)
            time.sleep(0.3)
            assert mnt.proc.poll() is None, "the daemon must keep serving a busy mount"
            assert is_mounted(mnt.path)
            with open(loop, "rb") as f:
                assert f.read() == data
        assert mnt.log.read_text().count("is busy") == 1, "said once, not per signal"
    finally:
        subprocess.run(["losetup", "-d", loop], check=False)
    # released: the next signal unmounts and the daemon exits
    deadline = time.monotonic() + 10
    while mnt.proc.poll() is None and time.monotonic() < deadline:
        mnt.proc.send_signal(signal.SIGTERM)      # losetup -d lets go asynchronously
        time.sleep(0.3)
    assert mnt.proc.wait(timeout=15) == 0
    assert not is_mounted(mnt.path)


@needs_mount
def test_fusermount_u_ends_the_daemon(mnt):
    subprocess.run(["fusermount3", "-u", str(mnt.path)], check=True)
    assert mnt.proc.wait(timeout=15) == 0


def _daemon_pid(mp: Path) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if str(mp).encode() in cmd and any(b"cramfs" in c for c in cmd[:2]):
            return int(entry)
    return None


def _wait_gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except OSError:
            return True
        if state == "Z":          # exited; only its reaper is missing
            return True
        time.sleep(0.05)
    return False
