"""pyfuse3 protocol adapter only: requests in, namespace and control calls out.

No device logic lives here. The adapter numbers the inodes of the root, the
`.cram` directory and its control files, turns `DeviceError` into `FUSEError`,
and guards every handler: in pyfuse3 any other exception escaping a handler
kills the mount, so an unexpected one is logged with its traceback and the
request fails with EIO while the daemon keeps serving.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import select
import stat
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

import pyfuse3
import trio
from pyfuse3 import FUSEError

from . import control
from .backing import IoJob
from .control import ATTRIBUTES, Attribute, file_xattrs
from .device import DeviceError
from .namespace import FIRST_FILE_INO, Inode, Namespace
from .timer import sleep_precise

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

ROOT_INO = pyfuse3.ROOT_INODE
CTL_DIR_INO = 2
CTL_DIR = ".cram"
CTL_INO = {name: 3 + i for i, name in enumerate(ATTRIBUTES)}
CTL_BY_INO = {ino: ATTRIBUTES[name] for name, ino in CTL_INO.items()}
_FILE_TIMEOUT = 1.0     # every change to a slot file goes through us, so caching is safe
_READY = select.POLLIN | select.POLLRDNORM
_NOTIFIED = select.POLLPRI | select.POLLERR
# Does this pyfuse3 pass FUSE_FALLOCATE on? Stock 3.5 has no handler, so the kernel
# gets ENOSYS and freed pages reach the device only through .cram/discard. Asked of
# pyfuse3's own class: CramOperations always defines the method.
FALLOCATE = hasattr(pyfuse3.Operations, "fallocate")


def guarded(fn: Callable[Concatenate[CramOperations, P], R],
            ) -> Callable[Concatenate[CramOperations, P], Coroutine[Any, Any, R]]:
    """Make a handler the coroutine pyfuse3 expects, with the error policy.

    Handler bodies never await (the core is synchronous), so they are plain
    functions: one coroutine per request instead of two. With a backing file,
    the I/O a handler left behind runs before the reply: the writes that
    fallback=writeback must land before a write is acknowledged, and the
    holes of freed blocks, so a reply means the file has shrunk."""

    @functools.wraps(fn)
    async def wrapper(self: CramOperations, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            try:
                return fn(self, *args, **kwargs)
            finally:
                if self.ns.device.backing is not None:
                    await self._settle()
        except FUSEError:
            raise
        except DeviceError as e:
            raise FUSEError(e.errno) from None
        except Exception:
            log.exception("internal error in %s; failing the request with EIO", fn.__name__)
            raise FUSEError(errno.EIO) from None

    return wrapper


@dataclass
class ControlHandle:
    attr: Attribute
    content: bytes | None = None   # the snapshot a reader reads in pieces
    seen: int = 0          # generation of what it watches the reader has seen (sysfs_notify)


class CramOperations(pyfuse3.Operations):
    enable_writeback_cache = False   # every write must reach the device

    def __init__(self, ns: Namespace) -> None:
        super().__init__()
        self.ns = ns
        # Backing-file I/O runs in worker threads one job at a time, in the order
        # planned: a block's hole is never punched before a write still due to it.
        self._lane = trio.Lock()
        self._handles: dict[int, Inode | ControlHandle] = {}
        self._next_fh = 1
        self._generation = {"danger": 0, "pressure": 0}
        self._pollers: dict[int, tuple[str, pyfuse3.PollHandle]] = {}
        self._mounted_ns = time.time_ns()
        ns.device.on_change(self._changed)
        ns.on_names_dropped.append(self._forget_names)

    # ------------------------------------------------------------ helpers

    async def _io(self, job: IoJob | None) -> None:
        """Run a backing-file job and what follows it, off the request loop."""
        while job is not None:
            async with self._lane:
                result = await trio.to_thread.run_sync(job.run)
                job = job.done(result)

    async def _settle(self) -> None:
        """The I/O the last handler left: its staged writes (whose failure fails the
        request), then queued writes behind and holes to punch."""
        dev = self.ns.device
        staged, queued = dev.staged_job(), dev.flush_job()
        try:
            await self._io(staged)
        finally:
            await self._io(queued)

    def _changed(self, what: str) -> None:
        """sysfs_notify: wake the poll() waiters of `what` (danger or pressure); every
        other control file's waiters wake with danger, as before."""
        self._generation[what] += 1
        for fh, (name, handle) in list(self._pollers.items()):
            if self._watches(name) == what:
                del self._pollers[fh]
                handle.notify()

    @staticmethod
    def _watches(name: str) -> str:
        return name if name == "pressure" else "danger"

    @staticmethod
    def _forget_names(names: list[str]) -> None:
        # Asynchronous: a synchronous invalidate_entry from inside a request handler
        # can deadlock against a lookup the kernel has pending on the same directory.
        for name in names:
            pyfuse3.invalidate_entry_async(ROOT_INO, os.fsencode(name), ignore_enoent=True)

    def _new_fh(self, obj: Inode | ControlHandle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = obj
        return fh

    def _stamp(self, a: pyfuse3.EntryAttributes, ino: int, mode: int, timeout: float) -> None:
        a.st_ino = ino
        a.st_mode = mode
        a.st_blksize = 4096
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = self._mounted_ns
        a.entry_timeout = timeout
        a.attr_timeout = timeout

    def _dir_attr(self, ino: int, mode: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        self._stamp(a, ino, stat.S_IFDIR | mode, _FILE_TIMEOUT)
        a.st_nlink = 2
        return a

    def _ctl_attr(self, ino: int) -> pyfuse3.EntryAttributes:
        attr = CTL_BY_INO[ino]
        a = pyfuse3.EntryAttributes()
        # Control files change behind the kernel's back: never cache their size.
        self._stamp(a, ino, stat.S_IFREG | attr.mode, 0)
        a.st_nlink = 1
        a.st_size = len(attr.show(self.ns).encode()) if attr.stream and attr.show else 4096
        return a

    def _file_attr(self, node: Inode) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        self._stamp(a, node.ino, node.mode, _FILE_TIMEOUT)
        a.st_nlink = node.nlink
        a.st_uid = node.uid
        a.st_gid = node.gid
        a.st_size = node.size
        a.st_blocks = -(-node.table.physical_bytes // 512)   # du shows device bytes
        a.st_atime_ns = node.atime_ns
        a.st_mtime_ns = node.mtime_ns
        a.st_ctime_ns = node.ctime_ns
        return a

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        if ino == ROOT_INO:
            return self._dir_attr(ino, 0o755)
        if ino == CTL_DIR_INO:
            return self._dir_attr(ino, 0o755)
        if ino in CTL_BY_INO:
            return self._ctl_attr(ino)
        return self._file_attr(self.ns.get(ino))

    def _file_node(self, parent: int, name: bytes) -> Inode:
        if parent != ROOT_INO:
            raise FUSEError(errno.EPERM)
        return self.ns.lookup(os.fsdecode(name))

    # ------------------------------------------------------------ names

    @guarded
    def lookup(self, parent_inode: int, name: bytes, ctx: Any) -> pyfuse3.EntryAttributes:
        text = os.fsdecode(name)
        if parent_inode == CTL_DIR_INO:
            if text not in CTL_INO:
                raise FUSEError(errno.ENOENT)
            return self._ctl_attr(CTL_INO[text])
        if parent_inode != ROOT_INO:
            raise FUSEError(errno.ENOTDIR)
        if text == CTL_DIR:
            return self._dir_attr(CTL_DIR_INO, 0o755)
        node = self.ns.lookup(text)
        node.nlookup += 1
        return self._file_attr(node)

    @guarded
    def forget(self, inode_list: Any) -> None:
        for ino, count in inode_list:
            self.ns.forget(ino, count)

    @guarded
    def getattr(self, inode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self._attr(inode)

    @guarded
    def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: Any,
                      fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        if inode in CTL_BY_INO:
            # `echo 1 > knob` opens with O_TRUNC, which arrives as a size change.
            if fields.update_size and not (fields.update_mode or fields.update_uid
                                           or fields.update_gid):
                return self._ctl_attr(inode)
            raise FUSEError(errno.EPERM)
        if inode in (ROOT_INO, CTL_DIR_INO):
            raise FUSEError(errno.EPERM)
        node = self.ns.live(inode)
        if fields.update_size:
            self.ns.resize(node, attr.st_size)
        if fields.update_mode:
            node.mode = stat.S_IFREG | (attr.st_mode & 0o7777)
        if fields.update_uid:
            node.uid = attr.st_uid
        if fields.update_gid:
            node.gid = attr.st_gid
        if fields.update_atime:
            node.atime_ns = attr.st_atime_ns
        if fields.update_mtime:
            node.mtime_ns = attr.st_mtime_ns
        node.ctime_ns = attr.st_ctime_ns if fields.update_ctime else max(
            node.ctime_ns, node.mtime_ns)
        return self._file_attr(node)

    @guarded
    def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        if parent_inode != ROOT_INO:
            raise FUSEError(errno.EPERM)
        node = self.ns.create(os.fsdecode(name), mode, ctx.uid, ctx.gid)
        node.nlookup += 1
        self.ns.opened(node)
        return self._file_info(self._new_fh(node)), self._file_attr(node)

    @guarded
    def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        if parent_inode != ROOT_INO:
            raise FUSEError(errno.EPERM)
        self.ns.unlink(os.fsdecode(name))

    @guarded
    def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: Any) -> None:
        if parent_inode_old != ROOT_INO or parent_inode_new != ROOT_INO:
            raise FUSEError(errno.EPERM)
        self.ns.rename(os.fsdecode(name_old), os.fsdecode(name_new),
                       exchange=bool(flags & pyfuse3.RENAME_EXCHANGE),
                       noreplace=bool(flags & pyfuse3.RENAME_NOREPLACE))

    @guarded
    def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        if parent_inode == ROOT_INO and os.fsdecode(name) == CTL_DIR:
            raise FUSEError(errno.EPERM)
        self._file_node(parent_inode, name)
        raise FUSEError(errno.ENOTDIR)

    async def mkdir(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise FUSEError(errno.EPERM)

    async def symlink(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise FUSEError(errno.EPERM)

    async def link(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise FUSEError(errno.EPERM)

    async def mknod(self, *args: Any) -> pyfuse3.EntryAttributes:
        raise FUSEError(errno.EPERM)

    # ------------------------------------------------------------ directories

    @guarded
    def opendir(self, inode: int, ctx: Any) -> int:
        if inode not in (ROOT_INO, CTL_DIR_INO):
            raise FUSEError(errno.ENOTDIR)
        return inode

    @guarded
    def readdir(self, fh: int, start_id: int, token: Any) -> None:
        if fh == CTL_DIR_INO:
            for name, ino in CTL_INO.items():
                if ino > start_id and not pyfuse3.readdir_reply(
                        token, name.encode(), self._ctl_attr(ino), ino):
                    return
            return
        if start_id < CTL_DIR_INO and not pyfuse3.readdir_reply(
                token, CTL_DIR.encode(), self._dir_attr(CTL_DIR_INO, 0o755), CTL_DIR_INO):
            return
        for node in sorted(self.ns.by_name.values(), key=lambda n: n.ino):
            if node.ino <= start_id:
                continue
            if not pyfuse3.readdir_reply(token, os.fsencode(node.name),
                                         self._file_attr(node), node.ino):
                return
            node.nlookup += 1

    async def releasedir(self, fh: int) -> None:
        pass

    # ------------------------------------------------------------ files

    @staticmethod
    def _file_info(fh: int) -> pyfuse3.FileInfo:
        # direct_io and no keep_cache: a cached read is a fault the device never saw.
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    @guarded
    def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        attr = CTL_BY_INO.get(inode)
        if attr is not None:
            acc = flags & os.O_ACCMODE
            # Root passes every permission check, so enforce the file's role here.
            if (acc != os.O_RDONLY and not attr.store) or (acc != os.O_WRONLY
                                                           and not attr.show):
                raise FUSEError(errno.EACCES)
            seen = self._generation[self._watches(attr.name)]
            return self._file_info(self._new_fh(ControlHandle(attr, seen=seen)))
        if inode in (ROOT_INO, CTL_DIR_INO):
            raise FUSEError(errno.EISDIR)
        node = self.ns.live(inode)
        self.ns.opened(node)
        return self._file_info(self._new_fh(node))

    def _handle(self, fh: int) -> Inode | ControlHandle:
        try:
            return self._handles[fh]
        except KeyError:
            raise FUSEError(errno.EBADF) from None

    async def read(self, fh: int, off: int, size: int) -> bytes:
        fetched: dict[int, bytes] = {}
        if self.ns.device.backing is not None:
            fetched = await self._fetch(fh, off, size)
        data, delay = await self._read(fh, off, size, fetched)
        if delay > 0:                  # no coroutine at all on the common path
            await self._media(delay)
        return data

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        done, delay, job = await self._write(fh, off, buf)
        if job is not None:
            await self._control_io(job)
        if delay > 0:
            await self._media(delay)
        return done

    @guarded
    def _plan_fetch(self, fh: int, off: int, size: int) -> tuple[IoJob | None, dict[int, bytes]]:
        h = self._handle(fh)
        if isinstance(h, Inode):
            return self.ns.device.fetch(h.table, off, size)
        return None, {}

    async def _fetch(self, fh: int, off: int, size: int) -> dict[int, bytes]:
        """Read the written-back pages a request needs in a worker thread, first."""
        job, fetched = await self._plan_fetch(fh, off, size)
        if job is not None:
            try:
                await self._io(job)
            except Exception:       # the read itself will report what is wrong
                log.exception("reading ahead from the backing file failed")
        return fetched

    @guarded
    def _control_done(self) -> None:
        """Nothing: the guard settles the I/O the job left (freed blocks)."""

    async def _control_io(self, job: IoJob) -> None:
        """A control write's I/O (backing_dev, writeback), with the handlers' error policy."""
        try:
            await self._io(job)
        except FUSEError:
            raise
        except DeviceError as e:
            raise FUSEError(e.errno) from None
        except Exception:
            log.exception("internal error in a control write; failing it with EIO")
            raise FUSEError(errno.EIO) from None
        finally:
            await self._control_done()

    @staticmethod
    async def _media(delay: float) -> None:
        """The emulated media's latency, slept without holding up other requests."""
        try:
            await sleep_precise(delay)
        except Exception:       # a failed timer only shortens the emulated delay
            log.exception("media delay failed")

    @guarded
    def _read(self, fh: int, off: int, size: int,
              fetched: dict[int, bytes]) -> tuple[bytes, float]:
        h = self._handle(fh)
        if isinstance(h, Inode):
            if fetched:     # pages read ahead from the backing file
                with self.ns.device.fetched(fetched):
                    data = self.ns.read(h, off, size)
            else:
                data = self.ns.read(h, off, size)
            dev = self.ns.device
            return data, dev.media_delay(False, len(data), time.monotonic()) if dev.media else 0.0
        assert h.attr.show is not None
        # A snapshot taken at the first read of this open file, whatever its offset,
        # and again at every read from 0, so a reader that reads in pieces sees one
        # consistent state and a poll() waiter re-reading from 0 sees a fresh one.
        if off == 0 or h.content is None or h.attr.stream:
            # file names (a trace's, the backing file's) are the bytes they were given:
            # shown back as those bytes, not refused for not being UTF-8
            h.content = h.attr.show(self.ns).encode("utf-8", "surrogateescape")
            h.seen = self._generation[self._watches(h.attr.name)]
        return h.content[off:off + size], 0.0

    @guarded
    def _write(self, fh: int, off: int, buf: bytes) -> tuple[int, float, IoJob | None]:
        h = self._handle(fh)
        if isinstance(h, Inode):
            done = self.ns.write(h, off, buf)
            dev = self.ns.device
            return done, dev.media_delay(True, done, time.monotonic()) if dev.media else 0.0, None
        return len(buf), 0.0, control.store(self.ns, h.attr, buf)

    @guarded
    def release(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        self._pollers.pop(fh, None)
        if isinstance(h, Inode):
            self.ns.released(h)

    async def flush(self, fh: int) -> None:
        pass

    async def fsync(self, fh: int, datasync: bool) -> None:
        pass

    @guarded
    def fallocate(self, fh: int, mode: int, offset: int, length: int) -> None:
        """Punch hole and zero range (Namespace.fallocate): the way a loop device's
        discard, blkdiscard and `swapon --discard` reach the device. Called only by a
        pyfuse3 with the fallocate handler (patches/); see FALLOCATE."""
        h = self._handle(fh)
        if not isinstance(h, Inode):
            raise FUSEError(errno.EOPNOTSUPP)
        self.ns.fallocate(h, mode, offset, length)

    @guarded
    def poll(self, inode: int, fh: int, poll_handle: pyfuse3.PollHandle | None,
                   ctx: Any) -> int:
        h = self._handle(fh)
        if isinstance(h, Inode):
            return _READY | select.POLLOUT | select.POLLWRNORM
        if poll_handle is not None:
            self._pollers[fh] = (h.attr.name, poll_handle)
        # sysfs_notify semantics: POLLPRI|POLLERR until the reader reads again.
        changed = h.seen != self._generation[self._watches(h.attr.name)]
        return _READY | (_NOTIFIED if changed else 0)

    # ------------------------------------------------------------ xattrs and statfs

    @guarded
    def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        if inode < FIRST_FILE_INO:
            raise FUSEError(pyfuse3.ENOATTR)
        value = file_xattrs(self.ns, self.ns.get(inode)).get(os.fsdecode(name))
        if value is None:
            raise FUSEError(pyfuse3.ENOATTR)
        return value.encode()

    @guarded
    def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        if inode < FIRST_FILE_INO:
            return []
        return [k.encode() for k in file_xattrs(self.ns, self.ns.get(inode))]

    async def setxattr(self, *args: Any) -> None:
        raise FUSEError(errno.ENOTSUP)

    async def removexattr(self, *args: Any) -> None:
        raise FUSEError(errno.ENOTSUP)

    @guarded
    def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        out = pyfuse3.StatvfsData()
        for key, value in self.ns.statvfs().items():
            setattr(out, key, value)
        return out
