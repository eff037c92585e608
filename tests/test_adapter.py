"""The pyfuse3 adapter without a kernel, as s3ql's t3 layer does: the operations class
driven directly. pyfuse3's SetattrFields and RequestContext are read-only cdef classes,
so small stand-ins play them; readdir (which needs a kernel token) and poll are left to
the mount layer."""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass

import pyfuse3
import pytest

from cramfs.config import DeviceConfig
from cramfs.device import Device
from cramfs.fuse_ops import CTL_DIR_INO, CTL_INO, ROOT_INO, CramOperations
from cramfs.namespace import Namespace

from .helpers import random_page, text_page

P = 4096


@dataclass
class Ctx:
    uid: int = 1000
    gid: int = 1000
    pid: int = 1
    umask: int = 0o022


@dataclass
class Fields:
    update_size: bool = False
    update_mode: bool = False
    update_uid: bool = False
    update_gid: bool = False
    update_atime: bool = False
    update_mtime: bool = False
    update_ctime: bool = False


@pytest.fixture
def ops() -> CramOperations:
    return CramOperations(Namespace(Device(DeviceConfig(advertised=1 << 30, physical=1 << 24))))


async def _errno(coro) -> int:
    with pytest.raises(pyfuse3.FUSEError) as e:
        await coro
    return e.value.errno


async def test_create_write_read_lookup(ops):
    fi, attr = await ops.create(ROOT_INO, b"slot", 0o640, os.O_RDWR, Ctx())
    assert fi.direct_io and not fi.keep_cache, "every access must reach the device"
    assert attr.st_mode == stat.S_IFREG | 0o640 and (attr.st_uid, attr.st_gid) == (1000, 1000)
    data = text_page(1) + random_page(2)
    assert await ops.write(fi.fh, 0, data) == 2 * P
    looked = await ops.lookup(ROOT_INO, b"slot", Ctx())
    assert looked.st_ino == attr.st_ino and looked.st_size == 2 * P
    assert looked.st_blocks > 0, "du shows the device bytes"
    assert await ops.read(fi.fh, 0, 2 * P) == data
    assert await ops.read(fi.fh, 2 * P, P) == b""                 # past the end
    # zswap mode: the read promoted both pages, so the device holds none of them now
    assert (await ops.getattr(attr.st_ino, Ctx())).st_blocks == 0
    assert await _errno(ops.lookup(ROOT_INO, b"none", Ctx())) == errno.ENOENT
    assert await _errno(ops.create(ROOT_INO, b"slot", 0o600, 0, Ctx())) == errno.EEXIST
    await ops.release(fi.fh)


async def test_setattr_truncate_mode_owner_times(ops):
    fi, attr = await ops.create(ROOT_INO, b"f", 0o600, os.O_RDWR, Ctx())
    await ops.write(fi.fh, 0, text_page(3) * 3)
    new = pyfuse3.EntryAttributes()
    new.st_size = 10                                 # `> f` (O_TRUNC) and truncate(2)
    out = await ops.setattr(attr.st_ino, new, Fields(update_size=True), fi.fh, Ctx())
    assert out.st_size == 10
    assert await ops.read(fi.fh, 0, P) == text_page(3)[:10]
    new.st_size = 2 * P
    await ops.setattr(attr.st_ino, new, Fields(update_size=True), None, Ctx())
    assert await ops.read(fi.fh, 0, 2 * P) == text_page(3)[:10] + bytes(2 * P - 10)
    new.st_mode, new.st_uid, new.st_gid = 0o644, 7, 8
    new.st_mtime_ns = 123
    out = await ops.setattr(attr.st_ino, new, Fields(update_mode=True, update_uid=True,
                                                     update_gid=True, update_mtime=True),
                            None, Ctx())
    assert (out.st_mode, out.st_uid, out.st_gid, out.st_mtime_ns) == (
        stat.S_IFREG | 0o644, 7, 8, 123)
    await ops.release(fi.fh)


async def test_unlink_rename_and_open_files(ops):
    fa, a = await ops.create(ROOT_INO, b"a", 0o600, os.O_RDWR, Ctx())
    fb, _ = await ops.create(ROOT_INO, b"b", 0o600, os.O_RDWR, Ctx())
    await ops.write(fa.fh, 0, text_page(1))
    await ops.release(fb.fh)
    await ops.rename(ROOT_INO, b"a", ROOT_INO, b"b", 0, Ctx())        # replaces b
    assert (await ops.lookup(ROOT_INO, b"b", Ctx())).st_ino == a.st_ino
    assert await _errno(ops.lookup(ROOT_INO, b"a", Ctx())) == errno.ENOENT
    await ops.unlink(ROOT_INO, b"b", Ctx())
    assert await ops.read(fa.fh, 0, P) == text_page(1), "an open file keeps its data"
    await ops.release(fa.fh)
    assert ops.ns.device.physical_used == 0, "and gives it back when closed"
    assert await _errno(ops.rename(ROOT_INO, b".cram", ROOT_INO, b"x", 0, Ctx())) == \
        errno.EPERM
    assert await _errno(ops.unlink(ROOT_INO, b".cram", Ctx())) == errno.EPERM


async def test_names_are_bytes(ops):
    name = b"caf\xe9\n\xff"
    fi, _ = await ops.create(ROOT_INO, name, 0o600, os.O_RDWR, Ctx())
    assert (await ops.lookup(ROOT_INO, name, Ctx())).st_size == 0
    await ops.release(fi.fh)
    assert await _errno(ops.create(ROOT_INO, b"x" * 256, 0o600, 0, Ctx())) == \
        errno.ENAMETOOLONG


async def test_xattrs(ops):
    fi, attr = await ops.create(ROOT_INO, b"f", 0o600, os.O_RDWR, Ctx())
    await ops.write(fi.fh, 0, text_page(1) + bytes(P))
    names = await ops.listxattr(attr.st_ino, Ctx())
    assert b"user.cram.charge_scaled" in names
    assert await ops.getxattr(attr.st_ino, b"user.cram.stored_pages", Ctx()) == b"2"
    assert await _errno(ops.getxattr(attr.st_ino, b"user.other", Ctx())) == pyfuse3.ENOATTR
    assert await _errno(ops.setxattr(attr.st_ino, b"user.x", b"1", Ctx())) == errno.ENOTSUP
    await ops.release(fi.fh)


async def test_control_files_access_and_errors(ops):
    status = CTL_INO["status"]
    dram = CTL_INO["dram"]
    reset = CTL_INO["reset"]
    assert (await ops.lookup(CTL_DIR_INO, b"status", Ctx())).st_mode == stat.S_IFREG | 0o444
    assert await _errno(ops.open(status, os.O_WRONLY, Ctx())) == errno.EACCES
    assert await _errno(ops.open(reset, os.O_RDONLY, Ctx())) == errno.EACCES
    fi = await ops.open(dram, os.O_RDWR, Ctx())
    assert await ops.write(fi.fh, 0, b"1M\n") == 3
    assert await ops.read(fi.fh, 0, 64) == f"{1 << 20}\n".encode()
    assert await _errno(ops.write(fi.fh, 0, b"lots")) == errno.EINVAL
    assert await _errno(ops.write(fi.fh, 0, b"\xff")) == errno.EINVAL
    assert await ops.read(fi.fh, 0, 64) == f"{1 << 20}\n".encode(), "nothing changed"
    await ops.release(fi.fh)
    # `echo 1 > knob` sends a size change first: it is accepted and changes nothing
    new = pyfuse3.EntryAttributes()
    new.st_size = 0
    await ops.setattr(dram, new, Fields(update_size=True), None, Ctx())
    assert await _errno(ops.setattr(dram, new, Fields(update_mode=True), None, Ctx())) == \
        errno.EPERM


async def test_a_bug_is_eio_and_the_adapter_keeps_serving(ops, caplog):
    inject = await ops.open(CTL_INO["inject"], os.O_WRONLY, Ctx())
    assert await _errno(ops.write(inject.fh, 0, b"bug")) == errno.EIO
    assert "internal error" in caplog.text and "Traceback" in caplog.text
    fi, _ = await ops.create(ROOT_INO, b"after", 0o600, os.O_RDWR, Ctx())
    assert await ops.write(fi.fh, 0, b"ok") == 2


async def test_statfs(ops):
    s = await ops.statfs(Ctx())
    assert s.f_blocks == (1 << 30) // P and s.f_bfree == s.f_blocks and s.f_namemax == 255
