"""Freed pages reach the device: fallocate's punch hole and zero range on slot files,
first on the namespace (against a bytes model), then through a real mount, a loop
device's discard and blkdiscard, with zram as the oracle for what a discard counts."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import random
import subprocess
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cramfs.config import DeviceConfig
from cramfs.device import Device, DeviceError
from cramfs.engine import ENGINES
from cramfs.fuse_ops import FALLOCATE
from cramfs.lab import zram
from cramfs.lab.bench import loop_device
from cramfs.namespace import KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE, Inode, Namespace

from .conftest import Mount
from .helpers import random_page, text_page

P = 4096
PUNCH = PUNCH_HOLE | KEEP_SIZE
NEEDS_PATCHED = pytest.mark.skipif(not FALLOCATE, reason="this pyfuse3 has no fallocate "
                                   "handler (scripts/setup builds one that has)")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)


def fallocate(fd: int, mode: int, off: int, length: int) -> None:
    """fallocate(2) with its mode (os.posix_fallocate has none)."""
    if _libc.fallocate(fd, mode, off, length):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def model_fallocate(model: bytearray, mode: int, off: int, length: int) -> None:
    """What a local filesystem does to a file's bytes."""
    end = off + length
    if mode & ZERO_RANGE and not mode & KEEP_SIZE and end > len(model):
        model.extend(bytes(end - len(model)))
    hi = min(end, len(model))
    if off < hi:
        model[off:hi] = bytes(hi - off)


# ---------------------------------------------------------------- the namespace

def fresh(engine: str = "native", **kw: object) -> Namespace:
    cfg = {"advertised": 1 << 24, "physical": 1 << 22, "dram": 0, "engine": engine, **kw}
    return Namespace(Device(DeviceConfig(**cfg)))   # type: ignore[arg-type]


def filled(ns: Namespace, pages: int, tail: int = 100) -> tuple[Inode, bytearray]:
    f = ns.create("f", 0o600, 0, 0)
    data = bytearray(b"".join(text_page(i) if i % 2 else random_page(i)
                              for i in range(pages)) + text_page(pages)[:tail])
    assert ns.write(f, 0, bytes(data)) == len(data)
    return f, data


@pytest.mark.parametrize("engine", ENGINES)
def test_punch_hole_releases_whole_pages_and_zeroes_the_partial_ones(engine):
    ns = fresh(engine)
    f, model = filled(ns, 8)
    dev = ns.device
    stored = dev.stats()["stored_pages"]
    ns.fallocate(f, PUNCH, P + 100, 3 * P)           # [P+100, 4P+100): pages 2, 3 whole
    model_fallocate(model, PUNCH, P + 100, 3 * P)
    # pages 1 and 4 were rewritten with their zeroed part (before a read promotes any)
    assert dev.stats()["stored_pages"] == stored - 2
    assert ns.read(f, 0, len(model)) == model and f.size == len(model)
    assert dev.counters.notify_free == 2 and dev.counters.discarded_pages == 2
    ns.fallocate(f, PUNCH, 100 * P, P)              # past EOF: success, nothing changes
    ns.fallocate(f, PUNCH, 8 * P + 50, 10 * P)      # into EOF: the partial page's tail
    model_fallocate(model, PUNCH, 8 * P + 50, 10 * P)
    assert ns.read(f, 0, len(model)) == model and f.size == len(model)


@pytest.mark.parametrize("engine", ENGINES)
def test_zero_range_extends_unless_keep_size(engine):
    ns = fresh(engine)
    f, model = filled(ns, 4, tail=0)
    before = ns.device.mm_stat().split()
    ns.fallocate(f, ZERO_RANGE | KEEP_SIZE, 3 * P, 4 * P)
    model_fallocate(model, ZERO_RANGE | KEEP_SIZE, 3 * P, 4 * P)
    assert f.size == 4 * P and ns.read(f, 0, 8 * P) == model
    ns.fallocate(f, ZERO_RANGE, 2 * P + 7, 4 * P)
    model_fallocate(model, ZERO_RANGE, 2 * P + 7, 4 * P)
    assert f.size == 6 * P + 7 and ns.read(f, 0, 8 * P) == model
    after = ns.device.mm_stat().split()
    # two whole pages went (3, then 2's tail was zeroed and page 3 again: nothing held)
    assert int(after[0]) == int(before[0]) - P, (before, after)
    # every page of each range within the file counts, as zram counts a discard
    assert ns.device.counters.notify_free == 1 + 1


@pytest.mark.parametrize("mode", [0, KEEP_SIZE, 0x04, 0x08, 0x20, 0x40, PUNCH_HOLE,
                                  ZERO_RANGE | PUNCH_HOLE | KEEP_SIZE, 0x80])
def test_allocation_and_other_modes_are_eopnotsupp(mode):
    ns = fresh()
    f, model = filled(ns, 2)
    with pytest.raises(DeviceError) as e:
        ns.fallocate(f, mode, 0, P)
    assert e.value.errno == errno.EOPNOTSUPP
    assert ns.read(f, 0, len(model)) == model


def test_zero_range_past_the_advertised_capacity_is_enospc_and_changes_nothing():
    ns = fresh(advertised=16 * P, physical=16 * P)
    f, model = filled(ns, 4, tail=0)
    with pytest.raises(DeviceError) as e:
        ns.fallocate(f, ZERO_RANGE, 2 * P, 20 * P)
    assert e.value.errno == errno.ENOSPC
    assert f.size == 4 * P and ns.read(f, 0, 4 * P) == model


fops = st.lists(st.tuples(
    st.sampled_from(["write", "punch", "zero", "zero_keep", "truncate"]),
    st.integers(0, 12 * P), st.integers(1, 5 * P), st.integers(0, 255)), max_size=30)


@given(engine=st.sampled_from(ENGINES), ops=fops,
       delay=st.sampled_from([0, 50]), dram=st.sampled_from([0, 3 * P]))
@settings(max_examples=150, deadline=None)
def test_fallocate_against_a_model(engine, ops, delay, dram):
    """Punch hole and zero range among writes and truncates, with the DRAM tier and
    delayed releases on or off: the bytes are always the model's, the accounting holds."""
    ns = fresh(engine, release_delay=delay, dram=dram)
    f = ns.create("f", 0o600, 0, 0)
    model = bytearray()
    for op, off, length, seed in ops:
        if op == "write":
            data = (text_page(seed) * 6)[:length]
            ns.write(f, off, data)
            if off > len(model):
                model.extend(bytes(off - len(model)))
            model[off:off + length] = data
        elif op == "truncate":
            ns.resize(f, off)
            del model[off:]
            model.extend(bytes(off - len(model)))
        else:
            mode = {"punch": PUNCH, "zero": ZERO_RANGE, "zero_keep": ZERO_RANGE | KEEP_SIZE}[op]
            ns.fallocate(f, mode, off, length)
            model_fallocate(model, mode, off, length)
        assert f.size == len(model)
        if dram:
            ns.read(f, 0, f.size)         # faults promote pages into the tier
    assert ns.read(f, 0, f.size + P) == model
    stats = ns.device.stats()
    pages = {i for i in range(-(-len(model) // P)) if any(model[i * P:(i + 1) * P])}
    held = stats["stored_pages"] + stats["promoted_pages"] + stats["fallback_pages"]
    same = stats["same_filled_pages"]
    assert len(pages) <= held <= len(pages) + same, "no page with data lost, none kept extra"


# ---------------------------------------------------------------- through a mount

def io_stat(m: Mount) -> list[int]:
    return [int(x) for x in m.ctl("io_stat").split()]


@NEEDS_PATCHED
def test_each_mode_through_the_mount(mounter):
    m = mounter("-o", "dram=0")
    path = m.path / "f"
    data = bytearray(b"".join(text_page(i) for i in range(16)))
    path.write_bytes(data)
    orig = int(m.ctl("mm_stat").split()[0])
    assert orig == 16 * P
    cases = [(["-p", "-o", str(P), "-l", str(2 * P)], PUNCH, P, 2 * P, 2),
             (["-p", "-o", "100", "-l", str(P)], PUNCH, 100, P, 0),
             (["-z", "-o", str(8 * P), "-l", str(2 * P)], ZERO_RANGE, 8 * P, 2 * P, 2),
             (["-z", "-n", "-o", str(15 * P), "-l", str(4 * P)], ZERO_RANGE | KEEP_SIZE,
              15 * P, 4 * P, 1),
             (["-z", "-o", str(15 * P), "-l", str(4 * P)], ZERO_RANGE, 15 * P, 4 * P, 1)]
    freed = 0
    for args, mode, off, length, pages in cases:
        subprocess.run(["fallocate", *args, str(path)], check=True)
        model_fallocate(data, mode, off, length)
        freed += pages
        assert path.read_bytes() == data, args
        assert path.stat().st_size == len(data), args
        assert io_stat(m)[3] == freed, (args, m.ctl("io_stat"))
    # pages 1, 2, 8, 9, 15 released; page 0's head zeroed; the rest as written
    assert int(m.ctl("mm_stat").split()[0]) == 11 * P
    fd = os.open(path, os.O_RDWR)
    try:
        # allocation, KEEP_SIZE alone, collapse, insert, unshare: the device cannot
        for mode in (0, KEEP_SIZE, 0x08, 0x20, 0x40):
            with pytest.raises(OSError) as e:
                fallocate(fd, mode, 0, P)
            assert e.value.errno == errno.EOPNOTSUPP, mode
    finally:
        os.close(fd)
    assert path.read_bytes() == data
    # ENOSYS never reached the kernel: punch hole still works after the refusals
    subprocess.run(["fallocate", "-p", "-o", "0", "-l", str(P), str(path)], check=True)
    assert io_stat(m)[3] == freed + 1
    assert "discard: fallocate" in m.ctl("status")


def dd_pages(dev: str, data: bytes) -> None:
    subprocess.run(["dd", f"of={dev}", "bs=64K", "oflag=direct", "status=none"],
                   input=data, check=True)


@NEEDS_PATCHED
def test_blkdiscard_on_a_loop_device_frees_pages_as_zram_counts_them(mounter):
    """The same data and the same discards into zram0 and into a loop device over a
    slot file: notify_free and orig_data_size agree (zram is the oracle)."""
    m = mounter("-o", "dram=0")
    size = 16 << 20
    slot = m.path / "disk"
    with open(slot, "wb") as f:
        f.truncate(size)
    data = b"".join(text_page(i) if i % 3 else random_page(i) for i in range(1024))
    discards = [(0, 1 << 20), (2 << 20, 8192), (4 << 20, 12 << 20)]   # the last: past data
    with loop_device(slot) as loop:
        assert Path(f"/sys/block/{Path(loop).name}/queue/discard_granularity"
                    ).read_text().strip() == str(P), "statfs's 4 KiB block"
        dd_pages(loop, data)
        for off, length in discards:
            subprocess.run(["blkdiscard", "-o", str(off), "-l", str(length), loop], check=True)
    cram = (int(m.ctl("mm_stat").split()[0]), io_stat(m)[3])
    assert cram == (len(data) - (256 + 2) * P, 256 + 2 + 3072), cram
    assert (m.path / "disk").read_bytes()[:1 << 20] == bytes(1 << 20)
    if (why := zram.unavailable("lz4")) is not None:
        pytest.skip(f"no zram0 to compare with: {why}")
    with zram.borrowed(size, "lz4") as dev:
        dd_pages(dev, data)
        for off, length in discards:
            subprocess.run(["blkdiscard", "-o", str(off), "-l", str(length), dev], check=True)
        kernel = (zram.mm_stat()["orig_data_size"], zram.io_stat()["notify_free"])
    assert cram == kernel


@NEEDS_PATCHED
@pytest.mark.parametrize("direct", [False, True], ids=["buffered", "O_DIRECT"])
def test_an_exerciser_with_punch_and_zero_is_byte_exact(mounter, direct):
    """Random writes, reads, truncates, punch holes and zero ranges on a mounted file,
    each checked against a bytes model (O_DIRECT ones page-aligned, as it asks)."""
    m = mounter("-o", "dram=64K,release_delay=5")
    rng = random.Random(23 + direct)
    path = m.path / "x"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | (os.O_DIRECT if direct else 0), 0o600)
    buf = mmap.mmap(-1, 9 * P)              # page-aligned, as O_DIRECT wants
    view = memoryview(buf)
    model = bytearray()
    try:
        for step in range(1500):
            op = rng.choice(["write", "write", "read", "punch", "zero", "zero_keep",
                             "truncate"])
            if direct:
                off, length = rng.randrange(64) * P, rng.randrange(1, 9) * P
            else:
                off, length = rng.randrange(64 * P), rng.randrange(1, 9 * P)
            if op == "write":
                data = ((text_page(step) if step % 3 else random_page(step)) * 9)[:length]
                view[:length] = data
                assert os.pwritev(fd, [view[:length]], off) == length, (step, op)
                model.extend(bytes(max(0, off - len(model))))
                model[off:off + length] = data
            elif op == "read":
                want = bytes(model[off:off + length])
                got = os.preadv(fd, [view[:length]], off)
                assert got == len(want) and view[:got] == want, (step, op)
            elif op == "truncate":
                os.ftruncate(fd, off)
                del model[off:]
                model.extend(bytes(off - len(model)))
            else:
                mode = {"punch": PUNCH, "zero": ZERO_RANGE,
                        "zero_keep": ZERO_RANGE | KEEP_SIZE}[op]
                fallocate(fd, mode, off, length)
                model_fallocate(model, mode, off, length)
            assert os.fstat(fd).st_size == len(model), (step, op)
    finally:
        os.close(fd)
        view.release()
        buf.close()
    assert path.read_bytes() == model
    assert io_stat(m)[3] > 0


@pytest.mark.mount
def test_stock_pyfuse3_still_mounts_and_says_discard_is_unavailable(tmp_path):
    """A venv whose pyfuse3 is PyPI's 3.5.0 (its own packages first, this one's after):
    cramfs mounts, serves, and says once that discard is unavailable."""
    import sys
    import sysconfig
    venv = tmp_path / "stock"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "-q", "--no-deps", "pyfuse3==3.5.0"]
    r = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"cannot build PyPI's pyfuse3 3.5.0 here: {r.stderr[-300:]}")
    site = subprocess.run([str(venv / "bin" / "python"), "-c",
                           "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    ours = sysconfig.get_paths()["purelib"]
    # after the stock venv's own site-packages: pyfuse3 resolves to the stock one
    Path(site, "cramfs-deps.pth").write_text(f"{ours}\n{Path(__file__).parents[1]}\n")
    probe = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import pyfuse3; print(pyfuse3.__version__, "
                            "hasattr(pyfuse3.Operations, 'fallocate'))"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert probe == ["3.5.0", "False"], probe
    mp, log = tmp_path / "m", tmp_path / "m.log"
    mp.mkdir()
    from cramfs.lab.child import Daemon
    d = Daemon([str(venv / "bin" / "python"), "-m", "cramfs", "--foreground", "--log",
                str(log), "-o", "dram=0"], mp)
    try:
        (mp / "f").write_bytes(text_page(1) * 4)
        fd = os.open(mp / "f", os.O_RDWR)
        try:
            with pytest.raises(OSError) as e:
                fallocate(fd, PUNCH, 0, P)
            assert e.value.errno == errno.EOPNOTSUPP
        finally:
            os.close(fd)
        assert (mp / "f").read_bytes() == text_page(1) * 4
        assert "discard: unavailable" in (mp / ".cram" / "status").read_text()
    finally:
        d.close()
    assert log.read_text().count("discard unavailable") == 1
