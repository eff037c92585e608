"""Mounting and serving: readiness, daemonizing, signals, and surviving as swap.

`cramfs` returns only once the mount is live. By default it forks; the child
mounts (pyfuse3.init), tells the parent "ready" through a pipe, detaches from
the terminal and serves. If mounting fails the child sends its error instead,
and the parent prints it and exits non-zero.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import logging
import logging.handlers
import os
import signal
import subprocess
import sys
from collections.abc import Callable

import pyfuse3
import trio

from . import control
from .cli import MountRequest
from .device import Device
from .fuse_ops import FALLOCATE, CramOperations
from .hostmem import harden, tune_allocator
from .namespace import Namespace

log = logging.getLogger("cramfs")

_libc = ctypes.CDLL(None, use_errno=True)


def _setup_logging(req: MountRequest) -> None:
    handler: logging.Handler
    if req.log:
        handler = logging.FileHandler(req.log)
    elif req.foreground:
        handler = logging.StreamHandler(sys.stderr)
    elif os.path.exists("/dev/log"):
        handler = logging.handlers.SysLogHandler("/dev/log")
    else:
        handler = logging.FileHandler("/var/log/cramfs.log")
    handler.setFormatter(logging.Formatter(
        f"%(asctime)s cramfs[%(process)d] {req.mountpoint}: %(levelname)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if req.debug else logging.INFO)


def try_unmount(mountpoint: str) -> int:
    """A plain (not lazy) unmount; 0 or the errno, EBUSY while anything uses the mount."""
    if os.geteuid() == 0:
        if _libc.umount2(os.fsencode(mountpoint), 0) == 0:
            return 0
        return ctypes.get_errno()
    r = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
    if r.returncode == 0:
        return 0
    return errno.EBUSY if "busy" in r.stderr else errno.EPERM


async def serve_until_unmounted(mountpoint: str,
                                tick: Callable[[], None] | None = None) -> None:
    """pyfuse3's main loop, until the mount goes away.

    SIGTERM and SIGINT ask for a plain unmount, never a lazy one: a lazy detach
    under a loop device or an open file would leave it reading EIO (swap
    included) once the daemon is gone. While the mount is busy the daemon says
    so once and keeps serving; it exits when the mount is released."""
    async with trio.open_nursery() as nursery:
        async def on_signal() -> None:
            said_busy = False
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    name = signal.Signals(signum).name
                    err = await trio.to_thread.run_sync(try_unmount, mountpoint)
                    if not err:
                        log.info("%s: unmounted %s", name, mountpoint)
                    elif err == errno.EBUSY and not said_busy:
                        said_busy = True
                        log.warning("%s: %s is busy (an open file, a loop device or swap); "
                                    "still serving. Stop in order: swapoff, losetup -d, "
                                    "umount", name, mountpoint)
                    elif err != errno.EBUSY:
                        log.warning("%s: cannot unmount %s: %s; still serving", name,
                                    mountpoint, os.strerror(err))

        async def ticking(tick: Callable[[], None]) -> None:
            # housekeeping that must happen while no request comes (pending releases)
            while True:
                await trio.sleep(0.01)
                try:
                    tick()
                except Exception:
                    log.exception("housekeeping failed; the daemon keeps serving")

        nursery.start_soon(on_signal)
        if tick is not None:
            nursery.start_soon(ticking, tick)
        await pyfuse3.main()   # returns once the kernel ends the session (umount)
        nursery.cancel_scope.cancel()


def serve(req: MountRequest, ready_fd: int | None) -> int:
    """Mount, report readiness on ready_fd, serve until unmounted."""
    _setup_logging(req)
    tune_allocator()
    if os.geteuid() == 0:
        harden()
    try:
        device = Device(req.config)
    except (OSError, ValueError) as e:     # the backing file went away since the check
        return _not_started(f"cannot use backing_dev {req.config.backing_dev}: {e}", ready_fd)
    ns = Namespace(device)
    ns.mountpoint = req.mountpoint
    ns.kernel_discard = FALLOCATE
    ops = CramOperations(ns)
    try:
        pyfuse3.init(ops, req.mountpoint, req.fuse_options())
    except Exception as e:  # libfuse reports failures as RuntimeError with little detail
        return _not_started(f"cannot mount {req.mountpoint}: {e}", ready_fd)
    log.info("mounted %s: advertised=%d physical=%d compressor=%s", req.mountpoint,
             req.config.advertised, req.config.physical, req.config.compressor)
    if not FALLOCATE:
        log.warning("discard unavailable: pyfuse3 %s has no fallocate handler, so punch "
                    "hole, blkdiscard and swapon --discard cannot reach the device; freed "
                    "pages stay stored until overwritten (scripts/setup builds a pyfuse3 "
                    "with it; .cram/discard still works)", pyfuse3.__version__)
    if ready_fd is not None:
        os.write(ready_fd, b"ready")
        os.close(ready_fd)
        _detach_stdio()
    try:
        trio.run(serve_until_unmounted, req.mountpoint, functools.partial(_tick, ns))
    except BaseException:
        log.exception("main loop failed")
        pyfuse3.close(unmount=True)
        _end_trace(ns)
        return 1
    pyfuse3.close(unmount=True)      # the session is over: this detaches nothing busy
    _end_trace(ns)
    ns.device.close()
    log.info("unmounted %s", req.mountpoint)
    return 0


def _not_started(why: str, ready_fd: int | None) -> int:
    """Tell the parent (or the terminal, in the foreground) why the mount never came up."""
    msg = f"cramfs: {why}"
    if ready_fd is not None:
        os.write(ready_fd, msg.encode())
        os.close(ready_fd)
    else:
        print(msg, file=sys.stderr)
    return 1


def _tick(ns: Namespace) -> None:
    ns.tick()
    control.check_trace(ns)


def _end_trace(ns: Namespace) -> None:
    """A recording still on at unmount ends there, with the final state."""
    rec = ns.recorder
    if rec is not None:
        control.stop_trace(ns)
        rec.join(timeout=30)


def _detach_stdio() -> None:
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def mount(req: MountRequest) -> int:
    if req.foreground:
        return serve(req, None)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.setsid()
        code = 1
        try:
            code = serve(req, w)
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as pipe:
        msg = pipe.read().decode(errors="replace")
    if msg == "ready":
        return 0
    os.waitpid(pid, 0)
    print(msg or f"cramfs: the daemon exited before {req.mountpoint} was mounted",
          file=sys.stderr)
    return 1
