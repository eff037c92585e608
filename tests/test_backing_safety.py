"""The backing file and the trace file through real mounts: never shared, never reached
through a symlink, never shown to other users; and the edges of requests and knobs.

Each case here was found by an audit as a way to corrupt data or write into a file
the user did not name."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cramfs import backing

from .conftest import CRAMFS, Mount, start_mount
from .helpers import random_page, text_page

P = 4096
NOBODY = 65534


def sized(path: Path, pages: int = 1024) -> Path:
    with open(path, "wb") as f:
        f.truncate(pages * P)
    return path


def refused_mount(mountpoint: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """`cramfs` run as a user runs it; it must refuse with one line and exit 2."""
    mountpoint.mkdir(exist_ok=True)
    r = subprocess.run([CRAMFS, "-o", ",".join(options), str(mountpoint)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr, r.stderr
    assert not os.path.ismount(mountpoint)
    return r


def data_pages(n: int) -> bytes:
    return b"".join(random_page(i) if i % 2 else text_page(i) for i in range(n))


def write_ctl(m: Mount, name: str, data: bytes) -> int:
    """One write() of raw bytes; 0 or the errno."""
    fd = os.open(m.path / ".cram" / name, os.O_WRONLY)
    try:
        os.write(fd, data)
        return 0
    except OSError as e:
        return e.errno or -1
    finally:
        os.close(fd)


# ---------------------------------------------------------------- one holder

def test_two_mounts_never_share_a_backing_file(mounter, tmp_path):
    back = sized(tmp_path / "back")
    m = mounter("-o", f"dram=0,backing_dev={back}")
    r = refused_mount(tmp_path / "second", "dram=0", f"backing_dev={back}")
    assert "in use" in r.stderr
    # a knob naming the held file: EBUSY and an events line, nothing changes
    other = mounter("-o", "dram=0")
    assert write_ctl(other, "backing_dev", f"{back}\n".encode()) == errno.EBUSY
    assert other.ctl("backing_dev") == "none\n" and "in use" in other.ctl("events")
    # and the holder's data goes through the file intact
    data = data_pages(256)
    (m.path / "f").write_bytes(data)
    m.set("writeback", "huge")
    assert m.stat()["written_back_pages"] > 0
    assert (m.path / "f").read_bytes() == data


def test_a_mount_right_after_an_unmount_waits_for_the_old_daemon(tmp_path):
    """The old daemon punches out its blocks and closes the file after umount returns;
    the new one waits for its lock, so it never shares the file with it."""
    back = sized(tmp_path / "back")
    data = data_pages(512)
    first = start_mount(tmp_path / "a", "-o", f"dram=0,backing_dev={back}")
    try:
        (first.path / "f").write_bytes(data)
        first.set("writeback", "huge")
        assert first.stat()["written_back_pages"] > 0
    finally:
        first.close()       # umount, then reap: no wait between the two mounts' lives
    second = start_mount(tmp_path / "b", "-o", f"dram=0,backing_dev={back}")
    try:
        (second.path / "g").write_bytes(data)
        second.set("writeback", "huge")
        assert (second.path / "g").read_bytes() == data
    finally:
        second.close()
    assert os.stat(back).st_blocks == 0, "the last daemon punched out every block"


def test_the_lock_holds_against_any_process(tmp_path):
    """The OFD lock conflicts with any fcntl lock: a file another process holds is
    refused, also a second open in the same process, and closing the holder frees it."""
    back = sized(tmp_path / "back")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'r+b'); "
         "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(60)",
         str(back)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(OSError) as e:
            backing.open_file(str(back))
        assert e.value.errno == errno.EBUSY
    finally:
        holder.kill()
        holder.wait()
    fd, blocks = backing.open_file(str(back))
    assert blocks == 1024
    try:
        with pytest.raises(OSError) as e:
            backing.open_file(str(back))
        assert e.value.errno == errno.EBUSY
    finally:
        os.close(fd)
    os.close(backing.open_file(str(back))[0])


# ---------------------------------------------------------------- reached safely

def test_a_planted_symlink_is_never_followed(mounter, tmp_path):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious" * 131072)           # 1 MiB the root owns
    udir = tmp_path / "udir"
    udir.mkdir()
    (udir / "back").symlink_to(victim)                  # at the last component
    (tmp_path / "dirlink").symlink_to(tmp_path)         # at a middle component
    cases = [udir / "back", tmp_path / "dirlink" / "victim"]
    for path in cases:
        r = refused_mount(tmp_path / "m", "dram=0", f"backing_dev={path}")
        assert "symlink" in r.stderr
    m = mounter("-o", "dram=0")
    for path in cases:
        assert write_ctl(m, "backing_dev", f"{path}\n".encode()) == errno.EINVAL
    assert m.ctl("events").count("symlink in its path") == len(cases), m.ctl("events")
    assert m.ctl("backing_dev") == "none\n"
    assert victim.read_bytes() == b"precious" * 131072


def test_a_second_link_a_foreign_owner_or_a_device_is_refused(mounter, tmp_path):
    linked = sized(tmp_path / "linked")
    os.link(linked, tmp_path / "other-name")
    foreign = sized(tmp_path / "foreign")
    os.chown(foreign, NOBODY, NOBODY)
    cases = [(linked, "2 links"), (foreign, f"owned by uid {NOBODY}"),
             (Path("/dev/zero"), "not a regular file"), (Path("relative"), "absolute")]
    for path, why in cases:
        r = refused_mount(tmp_path / "m", "dram=0", f"backing_dev={path}")
        assert why in r.stderr, r.stderr
    m = mounter("-o", "dram=0")
    for path, why in cases:
        assert write_ctl(m, "backing_dev", f"{path}\n".encode()) == errno.EINVAL
        assert why in m.ctl("events")


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory other users may enter (pytest's tmp_path is root's alone)."""
    d = Path(tempfile.mkdtemp(prefix="cramfs-test-"))
    d.chmod(0o755)
    try:
        yield d
    finally:
        subprocess.run(["rm", "-rf", "--one-file-system", str(d)], check=False)


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=30,
                          user=NOBODY, group=NOBODY, extra_groups=[], cwd="/")


def test_only_root_sees_the_backing_path(open_dir):
    back = sized(open_dir / "secret-backing-name")
    m = start_mount(open_dir / "m", "--allow-other", "-o", f"dram=0,backing_dev={back}")
    try:
        for name in ("status", "stat.json", "metrics", "stat"):
            r = as_nobody("cat", str(m.path / ".cram" / name))
            assert r.returncode == 0, (name, r.stderr)
            assert "secret-backing-name" not in r.stdout, name
        status = as_nobody("cat", str(m.path / ".cram" / "status")).stdout
        assert "backing_dev: set, 4194304 bytes (4M)" in status
        for name in ("backing_dev", "events", "trace"):
            r = as_nobody("cat", str(m.path / ".cram" / name))
            assert r.returncode != 0 and "Permission denied" in r.stderr, name
        assert m.ctl("backing_dev") == f"{back}\n"       # root reads it
    finally:
        m.close()


# ---------------------------------------------------------------- the trace file

@pytest.mark.parametrize("case, err", [
    ("existing", errno.EEXIST), ("missing parent", errno.ENOENT),
    ("symlink last", errno.ELOOP), ("symlink middle", errno.ELOOP),
    ("on the mount", errno.EINVAL), ("relative", errno.EINVAL), ("nul", errno.EINVAL),
])
def test_trace_start_says_why_at_the_write(mnt: Mount, tmp_path, case, err):
    (tmp_path / "exists").write_text("keep")
    (tmp_path / "dirlink").symlink_to(tmp_path)
    (tmp_path / "filelink").symlink_to(tmp_path / "nowhere")
    path = {"existing": f"{tmp_path}/exists", "missing parent": f"{tmp_path}/no/t.trace",
            "symlink last": f"{tmp_path}/filelink", "symlink middle":
            f"{tmp_path}/dirlink/t.trace", "on the mount": f"{mnt.path}/t.trace",
            "relative": "t.trace", "nul": f"{tmp_path}/a\0b"}[case]
    before = mnt.ctl("events").count("rejected")
    fd = os.open(mnt.path / ".cram" / "trace", os.O_WRONLY)
    try:
        with pytest.raises(OSError) as e:
            os.write(fd, f"start {path}\n".encode())
        assert e.value.errno == err, case
    finally:
        os.close(fd)
    assert mnt.ctl("trace") == "off\n"
    assert mnt.ctl("events").count("rejected") == before + 1
    assert (tmp_path / "exists").read_text() == "keep"
    assert not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------- control input

HOSTILE = [
    ("reset", b"1\n\n"), ("compact", b"1\n\n"), ("writeback_limit", b"5\n\n"),
    ("dram", b"1M\n\n"), ("reset", "1\u00a0".encode()), ("reset", "\u2028 1".encode()),
    ("compact", "1\u00a0".encode()), ("demote", "all\u00a0".encode()),
    ("idle", "\u2028 all".encode()), ("idle", "1\u00a0".encode()), ("reset", b" 1"),
    ("reset", b"1 \n"), ("dram", b"\t1M"), ("warn_at", b"70%\r\n"), ("reset", b"1\0"),
    ("writeback", b"page=f:9223372036854775808"), ("writeback", b"page=f:1000000000"),
    ("writeback", b"page=f:99999999999999999999"), ("writeback_limit", b"9223372036854775808"),
    ("inject", b"poison f 9223372036854775808"), ("inject", b"poison f 16"),
    ("inject", b"ratio 2\n\nclear\n"), ("discard", b"f 0 4K\n\n"),
    ("discard", b"f  0 4K"), ("recompress", b"type=idle  max_pages=1"),
    ("recompress", "type=idle\u00a0max_pages=1".encode()), ("demote", b"\xff"),
    ("trace", b"start /tmp/x\n\n"), ("backing_dev", b"none\n\n"),
]


def test_control_input_as_strict_as_sysfs(mounter, tmp_path):
    """Each case was once taken (or failed with EIO): now EINVAL, an events line, and
    nothing applied."""
    back = sized(tmp_path / "back")
    m = mounter("-o", f"dram=0,backing_dev={back}")
    (m.path / "f").write_bytes(data_pages(16))
    for name, data in HOSTILE:
        before = m.ctl("mm_stat"), m.ctl("events").count("rejected")
        assert write_ctl(m, name, data) == errno.EINVAL, (name, data)
        assert m.ctl("mm_stat") == before[0], ("nothing applied", name, data)
        assert m.ctl("events").count("rejected") == before[1] + 1, (name, data)
    assert (m.path / "f").read_bytes() == data_pages(16)
    assert m.ctl("backing_dev") == f"{back}\n" and m.ctl("trace") == "off\n"
    assert "Traceback" not in m.log.read_text()


def test_control_input_that_sysfs_takes(mounter, tmp_path):
    m = mounter("-o", "dram=0")
    (m.path / "f b").write_bytes(data_pages(16))
    for name, data in [("compact", b"1"), ("compact", b"1\n"), ("dram", b"1M\n"),
                       ("inject", b"ratio 2\nclear\n"), ("discard", b"f b 0 4K\nf b 8K 4K\n"),
                       ("idle", b"all\n"), ("writeback_limit", b"9223372036854775807\n")]:
        assert write_ctl(m, name, data) == 0, (name, data)
    assert m.stat()["logical_stored"] == 14 * P


# ---------------------------------------------------------------- edges

def test_a_write_across_the_advertised_end_is_short(mounter):
    m = mounter("-o", "advertised=1M,physical=1M,dram=0")
    path = m.path / "f"
    with open(path, "wb") as f:
        f.truncate((1 << 20) - P)
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.pwrite(fd, data_pages(2), (1 << 20) - P) == P, "what fits is stored"
        with pytest.raises(OSError) as e:
            os.pwrite(fd, data_pages(1), 1 << 20)
        assert e.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert path.stat().st_size == 1 << 20
    with open(path, "rb") as f:
        f.seek((1 << 20) - P)
        assert f.read() == data_pages(1)


def test_lowering_release_delay_completes_the_releases_now_due(mounter):
    m = mounter("-o", "dram=0,release_delay=60000")
    (m.path / "f").write_bytes(data_pages(200))
    (m.path / "f").unlink()
    assert m.stat()["pending_release_pages"] == 200
    m.set("release_delay", "30000")                   # still not due
    assert m.stat()["pending_release_pages"] == 200
    m.set("release_delay", "0")
    s = m.stat()
    assert s["pending_release_pages"] == 0 and s["physical_used"] == 0



def test_a_trace_path_that_is_not_utf8_reads_back_as_its_bytes(mnt: Mount, tmp_path):
    """Control input keeps file names as bytes; what a control file shows gives them back
    as those bytes (it once failed every read with EIO)."""
    path = os.fsencode(tmp_path) + b"/\xff.trace"
    assert write_ctl(mnt, "trace", b"start " + path + b"\n") == 0
    shown = (mnt.path / ".cram" / "trace").read_bytes()
    assert shown.startswith(b"recording " + path + b" ")
    assert write_ctl(mnt, "trace", b"stop\n") == 0
    assert os.path.exists(path)
