"""The foundation through a real FUSE mount: data, namespace, statvfs, control files."""

from __future__ import annotations

import errno
import math
import mmap
import os
import random
import stat
import subprocess

import pytest

from cramfs.control import ATTRIBUTES

from .helpers import random_page, text_page

P = 4096


def aligned(data: bytes) -> mmap.mmap:
    """O_DIRECT wants page-aligned buffers; anonymous mmap gives them."""
    buf = mmap.mmap(-1, max(P, -(-len(data) // P) * P))
    buf[:len(data)] = data
    return buf


@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "O_DIRECT"])
def test_random_io_matches_model(mnt, direct):
    path = mnt.path / "slots"
    rng = random.Random(7)
    size = 64 * P
    model = bytearray(size)
    flags = os.O_RDWR | os.O_CREAT | (os.O_DIRECT if direct else 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.ftruncate(fd, size)
        for step in range(200):
            if direct:
                off = rng.randrange(0, size // P) * P
                length = rng.choice([P, 2 * P, 8 * P])
            else:
                off = rng.randrange(0, size - 1)
                length = rng.choice([1, 7, 100, P - 1, P, P + 3, 3 * P])
            length = min(length, size - off)
            if rng.random() < 0.6:
                data = (text_page(step) if step % 2 else random_page(step)) * 8
                data = data[:length]
                if direct:
                    buf = aligned(data)
                    assert os.pwritev(fd, [memoryview(buf)[:length]], off) == length
                else:
                    assert os.pwrite(fd, data, off) == length
                model[off:off + length] = data
            else:
                if direct:
                    buf = aligned(bytes(length))
                    n = os.preadv(fd, [memoryview(buf)[:length]], off)
                    got = bytes(buf[:n])
                else:
                    got = os.pread(fd, length, off)
                assert got == bytes(model[off:off + length]), f"step {step} at {off}+{length}"
        assert os.pread(fd, size, 0) == bytes(model)
    finally:
        os.close(fd)


def test_one_mib_requests(mnt):
    data = b"".join(text_page(i) if i % 3 else random_page(i) for i in range(256))
    path = mnt.path / "big"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    try:
        buf = aligned(data)
        assert os.pwritev(fd, [buf], P) == len(data)
        out = aligned(bytes(len(data)))
        assert os.preadv(fd, [out], P) == len(data)
        assert bytes(out) == data
    finally:
        os.close(fd)
    assert os.path.getsize(path) == P + len(data)


def test_unwritten_slots_read_zero_and_cost_nothing(mnt):
    path = mnt.path / "sparse"
    os.truncate(path if path.exists() else _touch(path), 4 << 30)
    with open(path, "rb") as f:
        f.seek(3 << 30)
        assert f.read(3 * P) == bytes(3 * P)
    s = mnt.stat()
    assert s["physical_used"] == 0 and s["stored_pages"] == 0 and s["reads"] == 3


def _touch(path):
    path.write_bytes(b"")
    return path


def test_every_read_reaches_the_daemon(mnt):
    path = mnt.path / "f"
    path.write_bytes(text_page(1))
    before = mnt.stat()["reads"]
    for _ in range(3):
        assert path.read_bytes() == text_page(1)
    assert mnt.stat()["reads"] == before + 3, "no page cache may answer a read"


def test_statvfs_reports_advertised_and_physical_fill(mounter):
    m = mounter("--advertised", "1G", "--physical", "64M", "--compressor", "none")
    st = os.statvfs(m.path)
    assert (st.f_bsize, st.f_frsize, st.f_blocks) == (P, P, (1 << 30) // P)
    assert st.f_bfree == st.f_bavail == st.f_blocks
    assert st.f_namemax == 255 and st.f_files >= st.f_ffree > 0
    (m.path / "f").write_bytes(random_page(1) * 1024)      # 4 MiB of 64 MiB
    ffree = st.f_ffree
    st = os.statvfs(m.path)
    assert st.f_ffree == ffree - 1
    assert st.f_bfree == int(st.f_blocks * (1 - 4 / 64))
    assert st.f_bavail == st.f_bfree


def test_df_use_percent_at_each_level(mounter):
    """df's Use% is the physical fill, rounded up, while the device takes new pages, and
    100% (Avail 0) while write control refuses them, Used still the fill; status says
    why. docs/semantics.md's What df shows says the same."""
    m = mounter("-o", "advertised=16M,physical=256K,dram=0")    # a page is 1/64 of it
    fd = os.open(m.path / "f", os.O_WRONLY | os.O_CREAT, 0o600)

    def df() -> tuple[int, int, int, int]:
        out = subprocess.run(["df", "-B1", "--output=size,used,avail,pcent", str(m.path)],
                             capture_output=True, text=True, check=True).stdout
        size, used, avail, pcent = out.splitlines()[1].split()
        return int(size), int(used), int(avail), int(pcent.rstrip("%"))

    def fill_to(pages: int) -> float:
        for i in range(pages):
            os.pwrite(fd, random_page(i), i * P)
        s = m.stat()
        return s["physical_used"] / s["physical"]

    try:
        for pages, level in ((40, "ok"), (50, "warn")):
            fill = fill_to(pages)
            assert m.ctl("danger") == f"{level}\n"
            size, used, avail, pcent = df()
            assert size == 16 << 20 and used + avail == size
            assert pcent == math.ceil(fill * 100), (level, fill, pcent)
            assert "refusing" not in m.ctl("status")
        fill = fill_to(58)                                         # 90.6%
        assert m.ctl("danger") == "critical\n"
        size, used, avail, pcent = df()
        assert (avail, pcent) == (0, 100)
        assert used == pytest.approx(size * fill, abs=P), "Used is still the fill"
        assert "write_control: on (refusing new pages now: df shows Avail 0, Use% 100%)" \
            in m.ctl("status")
        m.set("write_control", "off")                              # nothing refuses now
        size, used, avail, pcent = df()
        assert avail > 0 and pcent == math.ceil(fill * 100) == 91
        assert "write_control: off\n" in m.ctl("status")
    finally:
        os.close(fd)


def test_control_files(mnt):
    names = sorted(os.listdir(mnt.path / ".cram"))
    assert names == sorted(ATTRIBUTES)
    for name, attr in ATTRIBUTES.items():
        mode = os.stat(mnt.path / ".cram" / name).st_mode
        assert stat.S_IMODE(mode) == attr.mode, name
        if attr.show:
            assert mnt.ctl(name).endswith("\n") or name == "events", name
    (mnt.path / "f").write_bytes(text_page(1) + bytes(P))
    status = dict(line.split(": ", 1) for line in mnt.ctl("status").splitlines())
    assert status["files"] == "1" and status["advertised"].startswith("8589934592 ")
    assert mnt.ctl("danger") == "ok\n"
    assert mnt.ctl("required_ratio") == "8.00\n"
    mm = mnt.ctl("mm_stat").split()
    assert len(mm) == 9 and int(mm[0]) == 2 * P and int(mm[3]) == 1 << 30 and mm[5] == "1"
    assert float(mnt.ctl("ratio")) == pytest.approx(2 * P / int(mm[2]), abs=0.01)
    assert int(mnt.ctl("effective_capacity")) == pytest.approx(
        (1 << 30) * float(mnt.ctl("ratio")), rel=0.01)
    import json
    doc = json.loads(mnt.ctl("stat.json"))
    assert doc["files"] == 1 and doc["logical_stored"] == 2 * P


def test_physical_overflow_is_enospc_and_keeps_earlier_data(mounter):
    m = mounter("-o", "advertised=1M,physical=64K,write_control=off")
    path = m.path / "f"
    written = []
    with open(path, "wb", buffering=0) as f:
        for i in range(32):
            try:
                f.write(random_page(i))
            except OSError as e:
                assert e.errno == errno.ENOSPC
                break
            written.append(random_page(i))
    assert len(written) == 16
    assert m.ctl("danger") == "full\n"
    assert m.ctl("io_stat").split()[1] == "1"
    with open(path, "rb") as f:
        assert f.read() == b"".join(written)
    # zswap mode: reading faulted every page back into DRAM, emptying the device
    assert m.ctl("danger") == "ok\n"


def test_namespace_operations(mnt):
    root = mnt.path
    (root / "a").write_bytes(b"x" * 10)
    os.rename(root / "a", root / "b")
    assert sorted(os.listdir(root)) == [".cram", "b"]
    os.chmod(root / "b", 0o640)
    os.chown(root / "b", 123, 456)
    os.utime(root / "b", ns=(10**18, 2 * 10**18))
    st = os.stat(root / "b")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 123, 456)
    assert st.st_mtime_ns == 2 * 10**18
    with open(root / "b", "r+b") as f:
        os.ftruncate(f.fileno(), 3 * P)
        assert f.read() == b"x" * 10 + bytes(3 * P - 10)
        os.ftruncate(f.fileno(), 5)
    assert (root / "b").read_bytes() == b"xxxxx"
    for call in (lambda: os.mkdir(root / "d"), lambda: os.symlink("b", root / "s"),
                 lambda: os.link(root / "b", root / "h"),
                 lambda: os.mknod(root / "n", stat.S_IFIFO | 0o600)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == errno.EPERM
    with pytest.raises(OSError) as e:
        (root / ("n" * 256)).write_bytes(b"")
    assert e.value.errno == errno.ENAMETOOLONG
    os.unlink(root / "b")
    assert os.listdir(root) == [".cram"]


def test_new_files_take_caller_ids_and_mode(mnt):
    fd = os.open(mnt.path / "f", os.O_CREAT | os.O_WRONLY, 0o600)
    os.close(fd)
    st = os.stat(mnt.path / "f")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)


def test_control_files_cannot_be_removed_renamed_or_written_when_read_only(mnt):
    ctl = mnt.path / ".cram"
    for call in (lambda: os.unlink(ctl / "status"), lambda: os.rename(ctl / "status", ctl / "x"),
                 lambda: os.rename(ctl / "status", mnt.path / "x"), lambda: os.rmdir(ctl),
                 lambda: os.rename(ctl, mnt.path / "y")):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno in (errno.EPERM, errno.EACCES, errno.EXDEV), e.value
    with pytest.raises(OSError) as e:
        (ctl / "status").write_text("1\n")
    assert e.value.errno in (errno.EACCES, errno.EPERM)
    with pytest.raises(OSError) as e:
        (ctl / "reset").read_text()
    assert e.value.errno in (errno.EACCES, errno.EPERM)


def test_daemon_survives_a_handler_error(mnt):
    (mnt.path / "f").write_bytes(text_page(1))
    with pytest.raises(OSError) as e:
        mnt.set("inject", "bug")
    assert e.value.errno == errno.EIO
    assert (mnt.path / "f").read_bytes() == text_page(1)
    assert mnt.ctl("danger") == "ok\n"
    log = mnt.log.read_text()
    assert "Traceback" in log and "RuntimeError: injected daemon bug" in log
