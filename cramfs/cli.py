"""`cramfs [options] MOUNTPOINT` and `cramfs SOURCE MOUNTPOINT -o k=v,...`.

Parses and checks everything before touching FUSE, so bad input ends in one
line on stderr and exit status 2, never a traceback. Mounting itself is in
daemon.py.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from dataclasses import dataclass
from typing import Any, NoReturn

from . import backing
from .config import SETTINGS, DeviceConfig

# Flags mount(8) and mount.fuse3 pass along that mean nothing to a FUSE daemon.
IGNORED_FLAGS = frozenset({
    "rw", "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime",
    "relatime", "norelatime", "strictatime", "diratime", "nodiratime", "async", "sync",
    "auto", "noauto", "user", "nouser", "users", "defaults", "_netdev", "nofail",
    "lazytime", "nolazytime", "silent", "loud",
})
FLAG_OPTIONS = ("allow_other", "debug", "foreground", "nonempty")
FSNAME_MAX = 255
VALUE_OPTIONS = ("fsname", "log")


class UsageError(Exception):
    """Bad command-line input: shown as one line, exit status 2."""


@dataclass
class MountRequest:
    mountpoint: str
    config: DeviceConfig
    fsname: str = "cramfs"
    allow_other: bool = False
    debug: bool = False
    foreground: bool = False
    log: str | None = None
    read_only: bool = False
    nonempty: bool = False       # libfuse 3 dropped the option: cramfs checks it itself

    def fuse_options(self) -> set[str]:
        opts = {"default_permissions", "subtype=cramfs", f"fsname={self.fsname}"}
        if self.allow_other:
            opts.add("allow_other")
        if self.debug:
            opts.add("debug")
        if self.read_only:
            opts.add("ro")
        return opts


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting, so each
    command prints one line and exits 2 its own way (cramfs and cramctl share it)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="cramfs", description="Mount an emulated compressed-RAM device.",
                epilog="Every --name VALUE is also accepted as -o name=VALUE.")
    p.add_argument("paths", nargs="+", metavar="[SOURCE] MOUNTPOINT",
                   help="where to mount; SOURCE is ignored (mount.fuse3 passes it)")
    p.add_argument("-o", dest="opts", action="append", default=[], metavar="k=v,...",
                   help="comma-separated mount options")
    p.add_argument("-f", "--foreground", action="store_true", default=None,
                   help="stay attached instead of daemonizing")
    p.add_argument("--allow-other", "--allow_other", dest="allow_other", action="store_true",
                   default=None, help="let other users use the mount")
    # mount(8) passes -n (no mtab), -s (sloppy), -v (verbose) and -t TYPE to helpers.
    p.add_argument("-n", "-s", "-v", dest="mount_flags", action="count", help=argparse.SUPPRESS)
    p.add_argument("-t", dest="mount_type", help=argparse.SUPPRESS)
    p.add_argument("--debug", action="store_true", default=None, help="FUSE debug output")
    p.add_argument("--nonempty", action="store_true", default=None,
                   help="mount over a directory that is not empty")
    p.add_argument("--fsname", help="source name shown in mount tables (default cramfs)")
    p.add_argument("--log", help="daemon log file (default: syslog, else /var/log/cramfs.log)")
    for s in SETTINGS.values():
        dash = s.name.replace("_", "-")
        names = [f"--{dash}"] + ([f"--{s.name}"] if dash != s.name else [])
        # argparse %-formats help text, and percent defaults such as 75% hold a '%'
        text = f"{s.help} (default {DeviceConfig().spelled(s.name)})".replace("%", "%%")
        p.add_argument(*names, dest=s.name, metavar="SIZE" if s.is_size else "VALUE",
                       help=text)
    return p


def parse(argv: list[str]) -> MountRequest:
    args = build_parser().parse_args(argv)
    if len(args.paths) > 2:
        raise UsageError(f"expected [SOURCE] MOUNTPOINT, got {len(args.paths)} paths")
    values: dict[str, Any] = {}
    for name in (*FLAG_OPTIONS, *VALUE_OPTIONS, *SETTINGS):
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    read_only = False
    for group in args.opts:
        for item in filter(None, group.split(",")):
            key, eq, value = item.partition("=")
            if key in IGNORED_FLAGS or key.startswith("x-") or key == "comment":
                continue
            if key == "ro":
                read_only = True
            elif key in FLAG_OPTIONS and not eq:
                values[key] = True
            elif (key in SETTINGS or key in VALUE_OPTIONS) and eq:
                values[key] = value
            elif key in SETTINGS or key in VALUE_OPTIONS:
                raise UsageError(f"mount option {key!r} needs a value: -o {key}=VALUE")
            else:
                raise UsageError(f"unknown mount option {item!r}")

    parsed = {}
    for name in SETTINGS:
        if name in values:
            try:
                parsed[name] = SETTINGS[name].parse(values[name])
            except ValueError as e:
                raise UsageError(f"{name}: {e}") from None
    config = DeviceConfig(**parsed)
    try:
        config.check()
    except ValueError as e:
        raise UsageError(str(e)) from None
    # mount(8)'s SOURCE names the device in mount tables unless fsname= says otherwise
    fsname = values.get("fsname", args.paths[0] if len(args.paths) == 2 else "cramfs")
    check_fsname(fsname)
    return MountRequest(
        mountpoint=os.path.abspath(args.paths[-1]), config=config, fsname=fsname,
        allow_other=bool(values.get("allow_other")),
        debug=bool(values.get("debug")), foreground=bool(values.get("foreground")),
        log=values.get("log"), read_only=read_only, nonempty=bool(values.get("nonempty")))


def check_fsname(name: str) -> None:
    """The kernel takes mount options in one page, and ',' separates them."""
    if not name or len(os.fsencode(name)) > FSNAME_MAX:
        raise UsageError(f"fsname must be 1-{FSNAME_MAX} bytes")
    if "," in name or not name.isprintable():
        raise UsageError("fsname must be printable and hold no ','")


def check_host(req: MountRequest) -> None:
    """Refuse early what would otherwise fail deep inside libfuse."""
    if not os.path.exists("/dev/fuse"):
        raise UsageError("/dev/fuse is missing (modprobe fuse, or install fuse3)")
    try:
        os.close(os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC))
    except OSError as e:
        raise UsageError(f"cannot open /dev/fuse: {e.strerror}") from None
    if shutil.which("fusermount3") is None:
        raise UsageError("fusermount3 not found in PATH (install the fuse3 package)")
    mp = req.mountpoint
    try:
        os.stat(mp)
    except FileNotFoundError:
        raise UsageError(f"mountpoint {mp} does not exist") from None
    except OSError as e:
        raise UsageError(f"cannot use mountpoint {mp}: {e.strerror} (a dead mount? "
                         f"try fusermount3 -u {mp})") from None
    if not os.path.isdir(mp):
        raise UsageError(f"mountpoint {mp} is not a directory")
    if os.path.ismount(mp):
        raise UsageError(f"mountpoint {mp} is already in use")
    try:
        entries = os.listdir(mp)
    except OSError as e:
        raise UsageError(f"cannot use mountpoint {mp}: {e.strerror}") from None
    if entries and not req.nonempty:
        raise UsageError(f"mountpoint {mp} is not empty (mount over it with -o nonempty)")
    check_backing(req)
    if req.log:
        try:
            with open(req.log, "a"):
                pass
        except OSError as e:
            raise UsageError(f"cannot write the log {req.log}: {e.strerror}") from None


def check_backing(req: MountRequest) -> None:
    """backing_dev must be a file cramfs may own (backing.open_file: no symlink on
    the way, a regular file with one link, root's or the mounting user's, no other
    holder), and not under the mountpoint (where the mount would hide it, or serve
    it from the daemon that writes to it). A file an unmounted daemon still closes
    is waited for, a bounded time."""
    path = req.config.backing_dev
    if not path:
        return
    if (os.path.normpath(path) + "/").startswith(os.path.normpath(req.mountpoint) + "/"):
        raise UsageError(f"backing_dev {path} is under the mountpoint {req.mountpoint}")
    try:
        fd, _ = backing.open_file(path, wait=backing.LOCK_WAIT)
    except OSError as e:
        raise UsageError(f"cannot use backing_dev {path}: {e.strerror}") from None
    except ValueError as e:
        raise UsageError(str(e)) from None
    os.close(fd)     # the daemon opens and locks it again, for the life of the mount


def main(argv: list[str] | None = None) -> int:
    # mount(8) runs helpers with no PATH; fusermount3 must still be found.
    os.environ.setdefault("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    try:
        req = parse(sys.argv[1:] if argv is None else argv)
        check_host(req)
    except UsageError as e:
        print(f"cramfs: {e}", file=sys.stderr)
        return 2
    from .daemon import mount  # imports pyfuse3 only once the input is known good

    return mount(req)
