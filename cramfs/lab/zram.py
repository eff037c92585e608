"""The kernel's zram0, borrowed as a peer and an oracle, and always given back reset.

The benchmark, the swap experiment and the fidelity tests compare cramfs with
zram on the same data. They all need the same few steps: check that zram0 is
there, idle and has the algorithm, set it up, read mm_stat, and reset it
whatever happened in between.
"""

from __future__ import annotations

import fcntl
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


@contextmanager
def borrowed(size: int, algorithm: str = "lz4") -> Iterator[str]:
    """zram0 set up with `algorithm` and `size`; reset on the way out, always."""
    why = unavailable(algorithm)
    if why:
        raise RuntimeError(why)
    try:
        set_up(size, algorithm)
        yield DEVICE
    finally:
        reset()


def set_up(size: int, algorithm: str) -> None:
    """Initialise an idle zram0; whoever calls this must reset() it afterwards."""
    (ZRAM / "comp_algorithm").write_text(algorithm)
    (ZRAM / "disksize").write_text(str(size))


def reset() -> None:
    (ZRAM / "reset").write_text("1")


def mm_stat() -> dict[str, int]:
    values = (ZRAM / "mm_stat").read_text().split()
    return dict(zip(MM_STAT_FIELDS, map(int, values), strict=False))


def discard(fd: int, offset: int, length: int) -> None:
    """BLKDISCARD a byte range of the open zram0: zram frees the slots in it."""
    fcntl.ioctl(fd, _BLKDISCARD, struct.pack("QQ", offset, length))


def compact() -> None:
    (ZRAM / "compact").write_text("1")
