"""The kernel's zram0, borrowed as a peer and an oracle, and always given back reset.

The benchmark, the swap experiment and the fidelity tests compare cramfs with
zram on the same data. They all need the same few steps: check that zram0 is
there, idle and has the algorithm, set it up, read mm_stat, and reset it
whatever happened in between.
"""

from __future__ import annotations

import fcntl
import gzip
import mmap
import os
import stat
import struct
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO

from ..stats import MM_STAT

ZRAM = Path("/sys/block/zram0")
DEVICE = "/dev/zram0"
MM_STAT_FIELDS = MM_STAT          # zram's order, as .cram/mm_stat has it
_BLKDISCARD = 0x1277          # _IO(0x12, 119)


def unavailable(algorithm: str = "lz4") -> str | None:
    """Why zram0 cannot be borrowed now, or None."""
    if os.geteuid() != 0:
        return "zram needs root"
    if not ZRAM.exists():
        return "/sys/block/zram0 is not present (modprobe zram)"
    algorithms = (ZRAM / "comp_algorithm").read_text().replace("[", " ").replace("]", " ")
    if algorithm not in algorithms.split():
        return f"zram0 has no {algorithm} compressor"
    if int((ZRAM / "disksize").read_text()) != 0:
        return "zram0 is already in use; not touching it"
    return None


# Every user of zram0 and zswap on these machines (tests, benchmarks, tries by hand)
# holds this lock first, so two never set one up at once.
LOCK = Path("/tmp/zram.lock")


class Lock:
    """An exclusive flock on LOCK, held from acquire() to release() (or a with block)."""

    def __init__(self) -> None:
        self._file: TextIO | None = None

    def acquire(self) -> None:
        if self._file is None:
            # root opening a name in /tmp: no symlink followed, and only a regular file
            # (fs.protected_symlinks is 0 on these machines)
            fd = os.open(LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            f = os.fdopen(fd, "r+")
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
                    raise RuntimeError(f"{LOCK} is not a plain file; remove it")
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    print(f"waiting for {LOCK} (another user of zram0 or zswap holds it)",
                          file=sys.stderr, flush=True)
                    fcntl.flock(f, fcntl.LOCK_EX)
            except BaseException:
                f.close()
                raise
            self._file = f

    def release(self) -> None:
        if self._file is not None:
            self._file.close()       # closing drops the flock
            self._file = None

    def __enter__(self) -> Lock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextmanager
def borrowed(size: int, algorithm: str = "lz4") -> Iterator[str]:
    """zram0 set up with `algorithm` and `size`, under the lock; reset on the way out,
    always."""
    with Lock():
        why = unavailable(algorithm)
        if why:
            raise RuntimeError(why)
        try:
            set_up(size, algorithm)
            yield DEVICE
        finally:
            reset()


def set_up(size: int, algorithm: str, mem_limit: int = 0) -> None:
    """Initialise an idle zram0, capped at `mem_limit` bytes of memory if given (zram's
    own cap: past it a write fails, and io_stat's failed_writes counts it); whoever
    calls this must reset() it afterwards."""
    (ZRAM / "comp_algorithm").write_text(algorithm)
    (ZRAM / "disksize").write_text(str(size))
    if mem_limit:
        (ZRAM / "mem_limit").write_text(str(mem_limit))


def io_stat() -> dict[str, int]:
    values = (ZRAM / "io_stat").read_text().split()
    return dict(zip(("failed_reads", "failed_writes", "invalid_io", "notify_free"),
                    map(int, values), strict=False))


def reset() -> None:
    (ZRAM / "reset").write_text("1")


def mm_stat() -> dict[str, int]:
    values = (ZRAM / "mm_stat").read_text().split()
    return dict(zip(MM_STAT_FIELDS, map(int, values), strict=False))


def kernel_chain_size() -> int:
    """This kernel's CONFIG_ZSMALLOC_CHAIN_SIZE (8 where /proc/config.gz does not say)."""
    try:
        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                if line.startswith("CONFIG_ZSMALLOC_CHAIN_SIZE="):
                    return int(line.split("=")[1])
    except OSError:
        pass
    return 8


def compressed_sizes(dev: str, pages: list[bytes]) -> list[int]:
    """What the borrowed zram0 makes of each page: compr_data_size's step as the page is
    written alone to a slot of its own (4096 for a page it stores whole)."""
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, 4096)                    # page-aligned, as O_DIRECT wants
    sizes = []
    try:
        for i, page in enumerate(pages):
            buf[:] = page
            before = mm_stat()["compr_data_size"]
            if os.pwrite(fd, buf, i * 4096) != 4096:
                raise OSError(f"short write to {dev}")
            sizes.append(mm_stat()["compr_data_size"] - before)
    finally:
        buf.close()
        os.close(fd)
    return sizes


def discard(fd: int, offset: int, length: int) -> None:
    """BLKDISCARD a byte range of the open zram0: zram frees the slots in it."""
    fcntl.ioctl(fd, _BLKDISCARD, struct.pack("QQ", offset, length))


def compact() -> None:
    (ZRAM / "compact").write_text("1")
