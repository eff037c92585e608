"""The backing file: where written-back pages live, one 4 KiB block each.

zram writes back to a block device; cramfs takes a regular file on a real
filesystem, and gives a block back to it with a punched hole when its page
goes. This module owns the file and its blocks and nothing else: which page
goes where is decided in device/writeback.py.

Two sides, because the file's I/O must never hold up the request loop:

- the request loop allocates and frees blocks and queues I/O (`queue`), all
  synchronously, as every page transition is;
- `run(ops)` performs queued or planned I/O and touches nothing but the file
  descriptor, so the adapter can call it in a worker thread. `finish(ops,
  results)` then applies the outcome on the loop again.

A block goes free -> allocated -> freed -> (hole punched) -> free. A freed
block is not handed out again until its hole is punched: the punch is queued
behind any write still pending for the block, and I/O runs in queue order,
so a late punch can never destroy a newer page's data.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import heapq
import os
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import safepath
from .units import PAGE_SIZE, shown

FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02

READ, WRITE, PUNCH = "read", "write", "punch"
FREE, ALLOCATED, FREED = 0, 1, 2          # a block's state


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_fallocate = _libc.fallocate
_fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long)
_fallocate.restype = ctypes.c_int


def punch_hole(fd: int, offset: int, length: int) -> None:
    """Give [offset, offset+length) back to the filesystem, keeping the file's size
    (the stdlib has posix_fallocate, not fallocate's modes)."""
    if _fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, offset, length):
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


@dataclass
class Op:
    """One piece of backing-file I/O: read, write or punch one block."""

    kind: str
    block: int
    data: bytes = b""


# How long a mount waits for a backing file another daemon still holds: one that was
# just unmounted punches out its blocks and closes the file after umount returns.
LOCK_WAIT = 10.0
_LOCK_POLL = 0.05
# struct flock on Linux (x86_64 and aarch64 alike): l_type, l_whence, l_start, l_len,
# l_pid (0, as OFD locks require), padded to 32 bytes
_FLOCK = struct.Struct("hhxxxxqqixxxx")


def _lock(fd: int, wait: float) -> None:
    """Hold the whole file with an OFD write lock for as long as fd stays open (in
    any process it was inherited by): a second mount naming the file, or any process
    that locks it, is refused, as zram opens its backing device exclusively."""
    want = _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0)
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, want)
            return
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
        if time.monotonic() >= deadline:
            raise OSError(errno.EBUSY, "in use by another cramfs mount (or another "
                          "process holds a lock on it)")
        time.sleep(_LOCK_POLL)


def open_file(path: str, wait: float = 0.0) -> tuple[int, int]:
    """Open and lock a backing file: (fd, blocks).

    The path is followed through no symlink (safepath), and what was opened is judged
    from the descriptor: a regular file, with one link, owned by root or by the user
    mounting, at least a page long. ValueError with a message fit for a user for a
    file that may not be used; OSError(EBUSY) if another holder keeps it locked past
    `wait` seconds; other OSErrors as the system gives them."""
    try:
        # O_PATH first: judging what the path names opens nothing for real, so naming a
        # device (a watchdog, a tape) by mistake has no side effect
        probe = safepath.open_nofollow(path, os.O_PATH)
    except OSError as e:
        if e.errno == errno.EINVAL:
            raise ValueError(f"backing_dev must be an absolute path, got {shown(path)}") \
                from None
        if e.errno == errno.ELOOP:
            raise ValueError(f"backing_dev {shown(path)} has a symlink in its path; cramfs "
                             "follows none (root's own, such as /var/run, included): give "
                             "the real path") from None
        raise
    try:
        st = os.fstat(probe)
        if not stat.S_ISREG(st.st_mode):
            raise ValueError(f"backing_dev {shown(path)} is not a regular file "
                             "(cramfs writes back to a file, not a block device)")
        if st.st_nlink != 1:
            raise ValueError(f"backing_dev {shown(path)} has {st.st_nlink} links; cramfs "
                             "punches holes in it, so it must be the file's only name")
        if st.st_uid not in (0, os.getuid()):
            raise ValueError(f"backing_dev {shown(path)} is owned by uid {st.st_uid}; it "
                             f"must belong to root or to the user mounting (uid "
                             f"{os.getuid()})")
        blocks = st.st_size // PAGE_SIZE
        if not blocks:
            raise ValueError(f"backing_dev {shown(path)} is smaller than a page; give it "
                             "a size first (truncate -s 1G FILE)")
        # the file judged above, reopened through its own descriptor (no path again)
        fd = os.open(f"/proc/self/fd/{probe}", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    finally:
        os.close(probe)
    try:
        now = os.fstat(fd)
        if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            raise ValueError(f"backing_dev {shown(path)} changed while it was opened")
        _lock(fd, wait)
    except BaseException:
        os.close(fd)
        raise
    return fd, blocks


class BackingFile:
    """An open backing file and the state of each of its blocks."""

    def __init__(self, path: str, fd: int, blocks: int) -> None:
        self.path = path
        self.fd = fd
        self.blocks = blocks
        self.state = bytearray(blocks)      # FREE / ALLOCATED / FREED per block
        self._free: list[int] = []          # punched blocks, lowest first (as zram's bitmap)
        self._next = 0                      # blocks past this were never used
        self.count = 0                      # allocated blocks: zram's bd_count
        self.queue: list[Op] = []           # I/O waiting for the lane, in order
        # pages written behind (reclaim): on the way to the file, served from here
        self.inflight: dict[int, bytes] = {}
        # blocks a read request fetched ahead, for the device to take (adapter sets it)
        self.fetched: dict[int, bytes] = {}
        self.punch_errors = 0
        self.jobs = 0                       # IoJobs planned and not done: no detaching then

    # ------------------------------------------------------------ on the loop

    def alloc(self) -> int | None:
        """A free block, lowest first; None when the file is full."""
        if self._free:
            block = heapq.heappop(self._free)
        elif self._next < self.blocks:
            block = self._next
            self._next += 1
        else:
            return None
        self.state[block] = ALLOCATED
        self.count += 1
        return block

    def free(self, block: int) -> None:
        """The page in `block` is gone: punch its hole, then reuse the block."""
        assert self.state[block] == ALLOCATED, f"block {block} freed twice"
        self.state[block] = FREED
        self.count -= 1
        self.fetched.pop(block, None)
        self.inflight.pop(block, None)       # a write still queued for it lands unread
        self.queue.append(Op(PUNCH, block))

    def write_behind(self, block: int, data: bytes) -> None:
        """Queue `data` for `block`; until it lands, reads are served from memory."""
        self.inflight[block] = data
        self.queue.append(Op(WRITE, block, data))

    def take(self) -> list[Op]:
        ops, self.queue = self.queue, []
        return ops

    def read(self, block: int) -> bytes:
        """A block's page, from memory if on its way or fetched ahead, else read here
        (a caller outside the request path: truncate's partial page, a replay)."""
        data = self.inflight.get(block)
        if data is None:
            data = self.fetched.pop(block, None)
        if data is None:
            data = os.pread(self.fd, PAGE_SIZE, block * PAGE_SIZE)
            if len(data) != PAGE_SIZE:
                raise OSError(errno.EIO, f"short read of block {block}")
        return data

    def finish(self, ops: list[Op], results: list[int | bytes]) -> list[tuple[Op, int]]:
        """Apply finished I/O; return the writes behind that failed, with their errno,
        for the device to place their pages elsewhere."""
        failed = []
        for op, res in zip(ops, results, strict=True):
            if op.kind == PUNCH:
                if res:
                    self.punch_errors += 1
                self.state[op.block] = FREE
                heapq.heappush(self._free, op.block)
            elif op.kind == WRITE and self.inflight.get(op.block) is op.data:
                del self.inflight[op.block]
                if res:
                    failed.append((op, int(res)))
        return failed

    # ------------------------------------------------------------ in a worker thread

    def run(self, ops: list[Op]) -> list[int | bytes]:
        """Perform `ops` in order: a read gives the page (or an errno), a write or punch
        0 or an errno. Touches only the file descriptor."""
        out: list[int | bytes] = []
        for op in ops:
            offset = op.block * PAGE_SIZE
            try:
                if op.kind == READ:
                    data = os.pread(self.fd, PAGE_SIZE, offset)
                    out.append(data if len(data) == PAGE_SIZE else errno.EIO)
                elif op.kind == WRITE:
                    n = os.pwrite(self.fd, op.data, offset)
                    out.append(0 if n == len(op.data) else errno.ENOSPC)
                else:
                    punch_hole(self.fd, offset, PAGE_SIZE)
                    out.append(0)
            except OSError as e:
                # what a user sees of a failing file: no space, or an I/O error
                full = op.kind == WRITE and e.errno in (errno.ENOSPC, errno.EDQUOT)
                out.append(errno.ENOSPC if full else errno.EIO)
        return out

    def close(self) -> None:
        """Let go of the file, punching out every block ever used: the pages die with
        the device, as zram's do with its backing device's contents."""
        if self.fd >= 0:
            try:
                if self._next:
                    punch_hole(self.fd, 0, self._next * PAGE_SIZE)
            except OSError:
                self.punch_errors += 1
            os.close(self.fd)
            self.fd = -1

    def allocated_bytes(self) -> int:
        """What the filesystem holds for the file (st_blocks), for reports and tests."""
        return os.fstat(self.fd).st_blocks * 512


@dataclass
class IoJob:
    """Backing-file I/O planned on the request loop: `run` may go to a worker thread
    (it touches only the file); `done` takes its result back on the loop and says
    what comes next, if anything (a writeback's next batch)."""

    run: Callable[[], Any]
    done: Callable[[Any], IoJob | None]


def run_inline(job: IoJob | None) -> None:
    """Carry out a job and whatever follows it here, for callers with no thread to
    spare (the in-process API, replay and tests)."""
    while job is not None:
        job = job.done(job.run())
