"""Opening a file a user names, as root, without following any symlink.

The daemon runs as root and writes into two files a user names: the backing
file (it writes pages there and punches holes) and a trace. With
`fs.protected_symlinks=0`, anyone who can write to a directory on the path can
plant a link there and make root write into a file of their choosing. So no
symlink is followed at any component of the path, root's own (such as
/var/run) included: the kernel's openat2(RESOLVE_NO_SYMLINKS) refuses it in
one call, and a walk that opens each component with O_NOFOLLOW relative to the
last stands in where openat2 is missing (kernels before 5.6).

What the opened file is must then be judged from the descriptor (fstat), never
from the path: the path can change between a stat and an open.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import stat
import struct

# openat2(2): one number on every architecture that has the generic syscall table
# and on x86_64 alike.
_SYS_OPENAT2 = 437
_RESOLVE_NO_SYMLINKS = 0x04
_AT_FDCWD = -100

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_openat2_works = platform.system() == "Linux"


def check_path(path: str) -> None:
    """EINVAL for what no open should even try: a relative path or a NUL byte."""
    if "\0" in path:
        raise OSError(errno.EINVAL, "the path holds a NUL byte")
    if not path.startswith("/"):
        raise OSError(errno.EINVAL, "not an absolute path")


def _openat2(path: bytes, flags: int, mode: int) -> int:
    how = struct.pack("QQQ", flags, mode if flags & os.O_CREAT else 0, _RESOLVE_NO_SYMLINKS)
    buf = ctypes.create_string_buffer(how, len(how))
    fd = _syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_long(_AT_FDCWD), ctypes.c_char_p(path),
                  buf, ctypes.c_size_t(len(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(fd)


def _walk(path: bytes, flags: int, mode: int) -> int:
    """openat2's rule by hand: each directory opened O_NOFOLLOW from the last."""
    parts = [p for p in path.split(b"/") if p]
    dirfd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                              dir_fd=dirfd)
            except NotADirectoryError:
                # O_PATH|O_NOFOLLOW opens a symlink itself; O_DIRECTORY then fails
                st = os.stat(part, dir_fd=dirfd, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
                raise
            os.close(dirfd)
            dirfd = nxt
        # O_NOFOLLOW on the last component: ELOOP for a symlink there
        return os.open(parts[-1] if parts else b".", flags | os.O_NOFOLLOW, mode, dir_fd=dirfd)
    finally:
        os.close(dirfd)


def open_nofollow(path: str, flags: int, mode: int = 0o600) -> int:
    """os.open(path, flags | O_CLOEXEC, mode), refusing a symlink at any component with
    ELOOP, a relative path or a NUL byte with EINVAL. Other errors as the system gives
    them (ENOENT, EEXIST, EACCES...)."""
    global _openat2_works
    check_path(path)
    raw = os.fsencode(path)
    flags |= os.O_CLOEXEC
    if _openat2_works:
        try:
            return _openat2(raw, flags, mode)
        except OSError as e:
            # ENOSYS: a kernel before 5.6; EPERM: a seccomp filter that knows no openat2
            # (a real EPERM comes back from the walk as well)
            if e.errno not in (errno.ENOSYS, errno.EPERM):
                raise
            _openat2_works = False
    return _walk(raw, flags, mode)


def create_exclusive(path: str, mode: int = 0o600, refuse_dev: int | None = None) -> int:
    """A new file at `path`, opened for writing: EEXIST if anything is there already
    (ELOOP if that is a symlink), ENOENT for a missing parent, ELOOP for a symlink in
    the parent's path, EINVAL for a relative path, a NUL byte, or a parent on the
    filesystem `refuse_dev` (st_dev) names: checked on the open parent, before the
    file exists."""
    check_path(path)
    parent, name = os.path.split(path)
    if not name or name in (".", ".."):
        raise OSError(errno.EINVAL, "the path names a directory")
    dirfd = open_nofollow(parent, os.O_PATH | os.O_DIRECTORY)
    try:
        if refuse_dev is not None and os.fstat(dirfd).st_dev == refuse_dev:
            raise OSError(errno.EINVAL, "the path is on this cramfs mount")
        try:
            return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                           | os.O_CLOEXEC, mode, dir_fd=dirfd)
        except FileExistsError:
            if stat.S_ISLNK(os.stat(name, dir_fd=dirfd, follow_symlinks=False).st_mode):
                raise OSError(errno.ELOOP, "the path ends in a symlink") from None
            raise
    finally:
        os.close(dirfd)
