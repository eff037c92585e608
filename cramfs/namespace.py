"""What the filesystem is: a flat directory of slot files over one device.

Names, inode numbers, sizes, modes, owners and times live here; page data lives
in the device. A file's size is whatever the user made it; the sum of sizes
is bounded by the advertised capacity, as a disk's partitions are by the disk.
The inode lifetime follows the FUSE rules (nlink, open handles and the kernel's
lookup count) but the module imports nothing from FUSE.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import trace
from .device import Device, DeviceError, Encoded
from .pagetable import PageTable
from .stats import RATIO_DECIMALS
from .trace import READ as _READ
from .trace import Recorder
from .units import PAGE_SIZE

NAME_MAX = 255
FIRST_FILE_INO = 1000     # inodes below this belong to the root and the control files
MAX_FILES = 1 << 20
RESERVED_NAMES = frozenset({".cram"})
# fallocate(2)'s modes (linux/falloc.h)
KEEP_SIZE, PUNCH_HOLE, ZERO_RANGE = 0x01, 0x02, 0x10


@dataclass(eq=False)
class Inode:
    ino: int
    name: str
    mode: int
    uid: int
    gid: int
    table: PageTable
    size: int = 0
    nlink: int = 1
    nlookup: int = 0
    opens: int = 0
    freed: bool = False     # unlinked, closed and its pages dropped: only a stale name is left
    atime_ns: int = field(default_factory=time.time_ns)
    mtime_ns: int = 0
    ctime_ns: int = 0

    def __post_init__(self) -> None:
        self.mtime_ns = self.ctime_ns = self.atime_ns


def check_name(name: str) -> None:
    # names arrive as bytes, decoded with surrogateescape: fsencode gives them back exactly
    if len(os.fsencode(name)) > NAME_MAX:
        raise DeviceError(errno.ENAMETOOLONG, f"name longer than {NAME_MAX} bytes")
    if not name or "/" in name or name in (".", ".."):
        raise DeviceError(errno.EINVAL, f"bad name {name!r}")


class Namespace:
    def __init__(self, device: Device) -> None:
        self.device = device
        self.by_name: dict[str, Inode] = {}
        self.by_ino: dict[int, Inode] = {}
        self.total_size = 0
        self._next_ino = FIRST_FILE_INO
        # told the names that went away behind the kernel's back (reset), so the
        # adapter can have the kernel forget them
        self.on_names_dropped: list[Callable[[list[str]], None]] = []
        # .cram/trace: every call below that changes or reads data is recorded
        self.recorder: Recorder | None = None
        # whether the kernel's discards (fallocate) reach us: None when no FUSE mount
        # serves this namespace (the in-process API, a replay)
        self.kernel_discard: bool | None = None
        self.mountpoint: str | None = None      # set by the daemon; a trace must not be here

    def _traced(self, op: int, ino: int, a: int, b: int, payload: bytes,
                fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args), recorded with its result (bytes done, or -errno) if tracing."""
        rec = self.recorder
        if rec is None:
            return fn(*args)
        try:
            out = fn(*args)
        except DeviceError as e:
            rec.record(op, ino, a, b, -e.errno, payload)
            raise
        rec.record(op, ino, a, b, out if isinstance(out, int) else len(out)
                   if isinstance(out, bytes) else 0, payload)
        return out
    # ------------------------------------------------------------ names

    def lookup(self, name: str) -> Inode:
        try:
            return self.by_name[name]
        except KeyError:
            raise DeviceError(errno.ENOENT, f"no file {name!r}") from None

    def get(self, ino: int) -> Inode:
        try:
            return self.by_ino[ino]
        except KeyError:
            raise DeviceError(errno.ENOENT, f"no inode {ino}") from None

    def live(self, ino: int) -> Inode:
        """An inode that may take data: ESTALE for one whose pages were freed.

        Only a name the kernel still caches reaches such an inode (reset removes
        names behind its back). ESTALE makes the kernel look the name up again,
        so `echo x > name` creates a new file instead of writing into one that
        is about to vanish."""
        inode = self.get(ino)
        if inode.freed:
            raise DeviceError(errno.ESTALE, f"inode {ino} was freed")
        return inode

    def create(self, name: str, mode: int, uid: int, gid: int) -> Inode:
        rec = self.recorder
        if rec is None:
            return self._create(name, mode, uid, gid)
        try:
            inode = self._create(name, mode, uid, gid)
        except DeviceError as e:
            rec.record(trace.CREATE, 0, uid << 16 | mode & 0xFFFF, gid, -e.errno, _b(name))
            raise
        rec.record(trace.CREATE, inode.ino, uid << 16 | mode & 0xFFFF, gid, 0, _b(name))
        return inode

    def _create(self, name: str, mode: int, uid: int, gid: int) -> Inode:
        check_name(name)
        if name in self.by_name or name in RESERVED_NAMES:
            raise DeviceError(errno.EEXIST, f"{name!r} exists")
        if len(self.by_ino) >= MAX_FILES:
            raise DeviceError(errno.ENOSPC, "too many files")
        inode = Inode(self._next_ino, name, stat.S_IFREG | (mode & 0o7777), uid, gid,
                      self.device.table(name))
        self._next_ino += 1
        self.by_name[name] = inode
        self.by_ino[inode.ino] = inode
        return inode

    def unlink(self, name: str) -> None:
        self._traced(trace.UNLINK, 0, 0, 0, _b(name), self._unlink, name)

    def _unlink(self, name: str) -> None:
        if name in RESERVED_NAMES:
            raise DeviceError(errno.EPERM, f"{name} cannot be removed")
        inode = self.lookup(name)
        del self.by_name[name]
        inode.nlink = 0
        inode.ctime_ns = time.time_ns()
        self._maybe_free(inode)

    def rename(self, old: str, new: str, exchange: bool = False,
               noreplace: bool = False) -> None:
        self._traced(trace.RENAME, 0, exchange, noreplace, _b(old) + b"\0" + _b(new),
                     self._rename, old, new, exchange, noreplace)

    def _rename(self, old: str, new: str, exchange: bool, noreplace: bool) -> None:
        if old in RESERVED_NAMES or new in RESERVED_NAMES:
            raise DeviceError(errno.EPERM, ".cram cannot be renamed or replaced")
        check_name(new)
        src = self.lookup(old)
        dst = self.by_name.get(new)
        if old == new:
            return
        if exchange:
            if dst is None:
                raise DeviceError(errno.ENOENT, f"no file {new!r}")
            src.name, dst.name = new, old
            src.table.name, dst.table.name = new, old
            self.by_name[new], self.by_name[old] = src, dst
            return
        if dst is not None:
            if noreplace:
                raise DeviceError(errno.EEXIST, f"{new!r} exists")
            self._unlink(new)
        del self.by_name[old]
        src.name = src.table.name = new
        src.ctime_ns = time.time_ns()
        self.by_name[new] = src

    # ------------------------------------------------------------ lifetime

    def opened(self, inode: Inode) -> None:
        inode.opens += 1
        if self.recorder is not None:
            self.recorder.record(trace.OPENED, inode.ino)

    def released(self, inode: Inode) -> None:
        inode.opens -= 1
        self._maybe_free(inode)
        if self.recorder is not None:
            self.recorder.record(trace.RELEASED, inode.ino)

    def forget(self, ino: int, count: int) -> None:
        inode = self.by_ino.get(ino)
        if inode is not None:
            inode.nlookup = max(0, inode.nlookup - count)
            self._maybe_free(inode)

    def _maybe_free(self, inode: Inode) -> None:
        if inode.nlink or inode.opens:
            return
        if inode.size or inode.table.count:
            # Space comes back as soon as the last user is gone, even if the
            # kernel still remembers the inode number for a while.
            self.device.drop(inode.table)
            self.total_size -= inode.size
            inode.size = 0
        inode.freed = True
        if not inode.nlookup:
            self.by_ino.pop(inode.ino, None)

    def tick(self) -> None:
        """Housekeeping while no request comes: delayed frees come due. A tick that
        freed something is recorded, so a replay frees at the same moment."""
        rec = self.recorder
        if self.device.tick() and rec is not None:
            rec.record(trace.TICK)

    @property
    def open_files(self) -> int:
        return sum(i.opens for i in self.by_ino.values())

    def reset(self) -> None:
        """Drop every file and all page data; EBUSY while anything is open."""
        self._traced(trace.RESET, 0, 0, 0, b"", self._reset)

    def _reset(self) -> None:
        if self.open_files:
            raise DeviceError(errno.EBUSY, f"{self.open_files} file(s) open")
        names = list(self.by_name)
        for name in names:
            self._unlink(name)
        self.device.reset()
        for listener in self.on_names_dropped:
            listener(names)

    # ------------------------------------------------------------ data

    def resize(self, inode: Inode, size: int) -> None:
        self._traced(trace.RESIZE, inode.ino, size, 0, b"", self._resize, inode, size)

    def _resize(self, inode: Inode, size: int) -> None:
        if size < 0:
            raise DeviceError(errno.EINVAL, "negative size")
        grow = size - inode.size
        self._check_growth(grow)
        if size < inode.size:
            self.device.truncate(inode.table, size)
        self.total_size += grow
        inode.size = size
        inode.mtime_ns = inode.ctime_ns = time.time_ns()

    def _check_growth(self, grow: int) -> None:
        if grow > 0 and self.total_size + grow > self.device.config.advertised:
            raise DeviceError(errno.ENOSPC, "sum of file sizes would pass the advertised "
                              "capacity")

    def read(self, inode: Inode, off: int, size: int) -> bytes:
        if self.recorder is None:           # the request path: no varargs call
            return self._read(inode, off, size)
        data: bytes = self._traced(_READ, inode.ino, off, size, b"", self._read, inode, off,
                                   size)
        return data

    def _read(self, inode: Inode, off: int, size: int) -> bytes:
        size = min(size, inode.size - off)
        if size <= 0:
            return b""
        return self.device.read(inode.table, off, size)

    def fault(self, inode: Inode, off: int, size: int) -> int:
        """A read whose bytes nobody wants (a replay): the same transitions, the count."""
        size = min(size, inode.size - off)
        if size <= 0:
            return 0
        return self.device.fault(inode.table, off, size)

    def write(self, inode: Inode, off: int, data: bytes) -> int:
        rec = self.recorder
        if rec is None:                     # the request path: no varargs call
            return self._write(inode, off, data)
        # _traced, written out: recording may cost a write a tenth at most, and the
        # generic wrapper's frame and varargs were a third of what it cost
        try:
            n = self._write(inode, off, data)
        except DeviceError as e:
            rec.record_write(inode.ino, off, data, -e.errno)
            raise
        rec.record_write(inode.ino, off, data, n)
        return n

    def _write(self, inode: Inode, off: int, data: bytes) -> int:
        # the request path: the device called directly, no closure and no frame around it
        end = off + len(data)
        if end > inode.size and self.total_size + end - inode.size > self.device.config.advertised:
            # what fits below the advertised capacity is stored: a short count, as a disk
            # gives when it fills part way through a request
            fits = inode.size + self.device.config.advertised - self.total_size - off
            if fits <= 0:
                self._check_growth(end - inode.size)
            data = data[:fits]
        return self._grew(inode, off, self.device.write(inode.table, off, data))

    def write_encoded(self, inode: Inode, off: int, encoded: list[Encoded],
                      page_of: Callable[[int], bytes]) -> int:
        """write() of whole pages the caller already encoded with the device's
        compressor (a replay of a trace that kept them so)."""
        if off + len(encoded) * PAGE_SIZE > inode.size:
            self._check_growth(off + len(encoded) * PAGE_SIZE - inode.size)
        return self._grew(inode, off, self.device.write_encoded(inode.table, off, encoded,
                                                                page_of))

    def _grew(self, inode: Inode, off: int, n: int) -> int:
        """After the device took n bytes at off (the growth checked before)."""
        # The file grows only by what the device accepted, as after a short write to a full disk.
        if off + n > inode.size:
            self.total_size += off + n - inode.size
            inode.size = off + n
        inode.mtime_ns = inode.ctime_ns = time.time_ns()
        return n

    def discard(self, inode: Inode, off: int, length: int) -> int:
        """Release the whole pages inside [off, off+length) of a file."""
        n: int = self._traced(trace.DISCARD, inode.ino, off, length, b"", self._discard, inode,
                              off, length)
        return n

    def fallocate(self, inode: Inode, mode: int, off: int, length: int) -> None:
        """fallocate(2) on a slot file, as a local filesystem answers it, except that a
        device with a fake capacity cannot promise space.

        PUNCH_HOLE|KEEP_SIZE releases the whole pages in the range (as a discard, so
        it goes where `.cram/discard` goes: notify_free, pending writebacks, the DRAM
        tier, release_delay, the trace) and zeroes the partial ones; nothing past the
        end of the file changes. ZERO_RANGE does the same and extends the file if the
        range ends past it (unless KEEP_SIZE): a page of zeros is same-filled and costs
        nothing. Allocation (mode 0, KEEP_SIZE alone) and every other mode are
        EOPNOTSUPP, so glibc's posix_fallocate falls back to writing zeros. Never
        ENOSYS: FUSE would then stop sending fallocate for the whole mount."""
        if mode not in (PUNCH_HOLE | KEEP_SIZE, ZERO_RANGE, ZERO_RANGE | KEEP_SIZE):
            raise DeviceError(errno.EOPNOTSUPP, f"fallocate mode {mode:#x}")
        if off < 0 or length <= 0:
            raise DeviceError(errno.EINVAL, "fallocate: negative offset or empty range")
        end = off + length
        grow = mode == ZERO_RANGE and end > inode.size
        if grow:
            self._check_growth(end - inode.size)     # ENOSPC before anything changes
        stop = min(end, inode.size)
        if off < stop:
            self.discard(inode, off, length)         # the whole pages, first: room
            first, last = -(-off // PAGE_SIZE), end // PAGE_SIZE
            if first > last:                          # inside one page
                parts = [(off, stop)]
            else:
                parts = [(off, min(first * PAGE_SIZE, stop)), (last * PAGE_SIZE, stop)]
            for lo, hi in parts:
                # a partial page is zeroed where it holds data; a hole already reads 0
                held = lo < hi and inode.table.get(lo // PAGE_SIZE)
                if held and self.write(inode, lo, bytes(hi - lo)) != hi - lo:
                    raise DeviceError(errno.ENOSPC, "fallocate: a partial page could "
                                      "not be zeroed")
        if grow:
            self.resize(inode, end)

    def _discard(self, inode: Inode, off: int, length: int) -> int:
        if off < 0 or length < 0:
            raise DeviceError(errno.EINVAL, "negative offset or length")
        first = -(-off // PAGE_SIZE)
        # nothing lies past the end of the file: pages there were released by truncate
        last = min((off + length) // PAGE_SIZE, -(-inode.size // PAGE_SIZE))
        return self.device.discard(inode.table, first, max(0, last - first))

    def stats(self) -> dict[str, int | float | str]:
        """The device's statistics and the namespace's own (files), with the ratios to
        RATIO_DECIMALS (as fill already is): the device rounds them to 2 for display,
        which made 1.0032 a 1 in stat.json and the metrics, where runs are compared.
        (status, stat and .cram/ratio still show 2: control._fmt.)"""
        dev = self.device
        ratio, c = dev.ratio, dev.config
        return {**dev.stats(), "files": len(self.by_name),
                "ratio": ratio if ratio == float("inf") else round(ratio, RATIO_DECIMALS),
                "required_ratio": round(c.advertised / c.physical, RATIO_DECIMALS)}

    def statvfs(self) -> dict[str, int]:
        """df's view: the advertised size, scaled to the real physical fill: Used is
        advertised x fill, free the rest. Available is free too, but 0 while write
        control refuses new pages (f_bavail: what a writer can get, as ext4 leaves out
        its reserved blocks), so df's Use%, Used / (Used + Avail), is the fill rounded
        up while the device takes pages and 100% while it refuses them."""
        dev = self.device
        blocks = dev.config.advertised // PAGE_SIZE
        free = max(0, int(blocks * (1 - dev.physical_used / dev.config.physical)))
        return {
            "f_bsize": PAGE_SIZE, "f_frsize": PAGE_SIZE, "f_blocks": blocks,
            "f_bfree": free, "f_bavail": 0 if dev.refusing else free,
            "f_files": MAX_FILES, "f_ffree": MAX_FILES - len(self.by_ino),
            "f_favail": MAX_FILES - len(self.by_ino), "f_namemax": NAME_MAX,
        }


def _b(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")
