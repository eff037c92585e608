"""The benchmark's baseline: a pyfuse3 filesystem that does nothing but keep bytes.

Same stack and the same settings as cramfs (direct_io, no keep_cache, no
writeback cache, default_permissions, trio main loop), so the gap between the
two is the cost of cramfs itself. Flat root directory, one bytearray per file.

    python -m cramfs.lab.nullfs MOUNTPOINT        # stays in the foreground
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from typing import Any

import pyfuse3
import trio

from ..daemon import serve_until_unmounted

ROOT = pyfuse3.ROOT_INODE


class NullFS(pyfuse3.Operations):
    enable_writeback_cache = False

    def __init__(self) -> None:
        super().__init__()
        self.names: dict[bytes, int] = {}
        self.data: dict[int, bytearray] = {}
        self.modes: dict[int, int] = {}
        self.next_ino = ROOT + 1

    def _attr(self, ino: int) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = ino
        if ino == ROOT:
            a.st_mode, a.st_nlink = stat.S_IFDIR | 0o755, 2
        else:
            a.st_mode, a.st_nlink, a.st_size = self.modes[ino], 1, len(self.data[ino])
        a.st_blksize = 4096
        a.attr_timeout = a.entry_timeout = 1
        return a

    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        if inode != ROOT and inode not in self.data:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(inode)

    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None
                     ) -> pyfuse3.EntryAttributes:
        if name not in self.names:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(self.names[name])

    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        ino = self.next_ino
        self.next_ino += 1
        self.names[name], self.data[ino], self.modes[ino] = ino, bytearray(), stat.S_IFREG | mode
        return pyfuse3.FileInfo(fh=ino, direct_io=True, keep_cache=False), self._attr(ino)

    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        return pyfuse3.FileInfo(fh=inode, direct_io=True, keep_cache=False)

    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: Any,
                      fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        if fields.update_size:
            buf = self.data[inode]
            if attr.st_size < len(buf):
                del buf[attr.st_size:]
            else:
                buf.extend(bytes(attr.st_size - len(buf)))
        return self._attr(inode)

    async def read(self, fh: int, off: int, size: int) -> bytes:
        # one copy, as any filesystem must make; slicing the bytearray first would make two
        with memoryview(self.data[fh]) as view:
            return bytes(view[off:off + size])

    async def write(self, fh: int, off: int, buf: bytes) -> int:
        data = self.data[fh]
        if off > len(data):
            data.extend(bytes(off - len(data)))
        data[off:off + len(buf)] = buf
        return len(buf)

    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        ino = self.names.pop(name)
        del self.data[ino], self.modes[ino]

    async def release(self, fh: int) -> None:
        pass

    async def flush(self, fh: int) -> None:
        pass

    async def fsync(self, fh: int, datasync: bool) -> None:
        pass

    async def opendir(self, inode: int, ctx: Any) -> int:
        return inode

    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        for i, (name, ino) in enumerate(self.names.items(), 1):
            if i > start_id and not pyfuse3.readdir_reply(token, name, self._attr(ino), i):
                return

    async def releasedir(self, fh: int) -> None:
        pass

    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = pyfuse3.StatvfsData()
        s.f_bsize = s.f_frsize = 4096
        s.f_blocks = s.f_bfree = s.f_bavail = 1 << 30
        s.f_namemax = 255
        return s


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not os.path.isdir(args[0]):
        print("usage: python -m cramfs.lab.nullfs MOUNTPOINT", file=sys.stderr)
        return 2
    pyfuse3.init(NullFS(), args[0], {"default_permissions", "fsname=nullfs",
                                     "subtype=nullfs"})
    try:
        trio.run(serve_until_unmounted, args[0])
    finally:
        pyfuse3.close(unmount=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
