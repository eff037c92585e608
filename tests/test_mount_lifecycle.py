"""Lost-page paths and hostile input through a real mount (each once lost data,
leaked memory or let bad input through)."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import time

import pytest

from cramfs.procfs import status_bytes

from .conftest import CRAMFS, unmount
from .helpers import random_page, text_page

P = 4096
pytestmark = pytest.mark.mount


def test_a_write_by_a_name_reset_removed_is_never_lost(mnt):
    slot = mnt.path / "slot0"
    slot.write_bytes(text_page(1))
    assert slot.read_bytes() == text_page(1)
    os.stat(slot)               # a fresh lookup: the kernel caches the name for a second
    mnt.set("reset", "1")
    with open(slot, "w") as f:                       # `echo new > M/slot0`
        f.write("new\n")
    assert slot.read_text() == "new\n"
    time.sleep(1.2)                                  # past the entry timeout
    assert slot.read_text() == "new\n", "the data outlives the kernel's cached name"
    assert os.listdir(mnt.path) == ["slot0"] or sorted(os.listdir(mnt.path)) == [
        ".cram", "slot0"]


def test_non_utf8_names_work_end_to_end(mnt):
    name = b"caf\xe9\xff\x01"
    path = os.path.join(os.fsencode(mnt.path), name)
    with open(path, "wb") as f:
        f.write(text_page(2))
    assert name in os.listdir(os.fsencode(mnt.path))
    with open(path, "rb") as f:
        assert f.read() == text_page(2)
    os.rename(path, path + b"2")
    os.unlink(path + b"2")
    assert "Traceback" not in mnt.log.read_text()


def test_control_files_read_from_any_offset(mnt):
    for name in ("status", "mm_stat", "stat.json", "metrics", "comp_algorithm"):
        whole = mnt.ctl(name)
        fd = os.open(mnt.path / ".cram" / name, os.O_RDONLY)
        try:
            # the first read of an open file may start anywhere
            assert os.pread(fd, 64, 5) == whole.encode()[5:69], name
            assert os.pread(fd, 1 << 16, 0).decode() == whole, name
        finally:
            os.close(fd)


def test_a_control_write_over_a_page_is_einval_and_changes_nothing(mnt):
    before = mnt.ctl("dram")
    with pytest.raises(OSError) as e:
        mnt.set("dram", "1" * (10 << 20))
    assert e.value.errno == errno.EINVAL
    assert mnt.ctl("dram") == before
    with pytest.raises(OSError) as e:
        mnt.set("warn_at", "٣0%")
    assert e.value.errno == errno.EINVAL


def test_events_are_root_only(mnt):
    mode = stat.S_IMODE((mnt.path / ".cram" / "events").stat().st_mode)
    assert mode == 0o400, "events names every user's files"
    r = subprocess.run(["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups",
                        "cat", str(mnt.path / ".cram" / "events")], capture_output=True)
    assert r.returncode != 0


def _rss_kib(pid: int) -> int:
    return status_bytes(pid, "VmRSS") // 1024


def test_memory_comes_back_after_delete_and_compact(mounter):
    empty = mounter("-o", "dram=16M")
    base = _rss_kib(empty.proc.pid)
    m = mounter("-o", "dram=16M")
    data = b"".join(text_page(i) if i % 3 else random_page(i) for i in range(256)) * 64
    fd = os.open(m.path / "f", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    try:
        import mmap
        buf = mmap.mmap(-1, len(data))
        buf[:] = data
        assert os.pwritev(fd, [buf], 0) == len(data)
        assert os.preadv(fd, [buf], 0) == len(data)     # promotes pages into the tier
    finally:
        os.close(fd)
    assert _rss_kib(m.proc.pid) > base + 32 * 1024
    (m.path / "f").unlink()
    m.set("compact", "1")
    assert _rss_kib(m.proc.pid) <= base + 16 * 1024


@pytest.mark.parametrize(("args", "fragment"), [
    (["--log", "/nonexistent/dir/log"], "cannot write the log"),
    (["-o", "fsname=" + "x" * 5000], "fsname must be"),
    (["--fsname", "a,b"], "fsname must be"),      # a "," would split the mount options
    (["--physical", "３G"], "not a size"),
    (["-o", "dram=2^70"], "not a size"),
    (["--warn-at", "७५%"], "not a percentage"),
    (["--advertised", "99999999999999999999999T"], "not a size"),
    (["--dram", "16G"], "must not exceed advertised"),
    (["--comp-threads", "+1"], "not a whole number"),
])
def test_cli_refuses_in_one_line(tmp_path, args, fragment):
    from .test_cli import assert_usage_error, run_cli
    mp = tmp_path / "mnt"
    mp.mkdir()
    try:
        assert_usage_error(run_cli(*args, str(mp)), fragment)
    finally:
        unmount(mp)          # should the input wrongly be taken, leave no mount behind


def test_cli_help_and_a_non_empty_mountpoint(tmp_path):
    from .test_cli import assert_usage_error, run_cli
    for flag in ("--help", "-h"):
        r = run_cli(flag)
        assert r.returncode == 0 and "usage: cramfs" in r.stdout and not r.stderr
    mp = tmp_path / "mnt"
    mp.mkdir()
    (mp / "keep").write_text("x")
    try:
        assert_usage_error(run_cli(str(mp)), "is not empty")
    finally:
        unmount(mp)
    r = run_cli("-o", "nonempty", "--log", str(tmp_path / "log"), str(mp))
    try:
        assert r.returncode == 0, r.stderr
        assert (mp / ".cram").is_dir()
    finally:
        unmount(mp)
    assert (mp / "keep").read_text() == "x"


def test_no_access_to_dev_fuse_is_one_line(tmp_path):
    """An empty /dev in a private mount namespace, with a /dev/fuse nobody may open."""
    script = ("mount -t tmpfs none /dev && mknod /dev/fuse c 10 229 && chmod 000 /dev/fuse "
              f"&& exec setpriv --reuid 65534 --regid 65534 --clear-groups {CRAMFS} "
              f"{tmp_path}")
    r = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                       capture_output=True, text=True, timeout=60)
    from .test_cli import assert_usage_error
    assert_usage_error(r, "cannot open /dev/fuse")
