"""Mounting and serving: readiness, daemonizing, signals, and surviving as swap.

`cramfs` returns only once the mount is live. By default it forks; the child
mounts (pyfuse3.init), tells the parent "ready" through a pipe, detaches from
the terminal and serves. If mounting fails the child sends its error instead,
and the parent prints it and exits non-zero.
"""

from __future__ import annotations

import ctypes
import logging
import logging.handlers
import os
import signal
import sys

import pyfuse3
import trio

from .cli import MountRequest
from .device import Device
from .fuse_ops import CramOperations
from .namespace import Namespace

log = logging.getLogger("cramfs")

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
PR_SET_IO_FLUSHER = 57


def harden() -> None:
    """Keep a daemon that may back swap from being swapped out or OOM-killed.

    If the kernel reclaims the daemon's own pages while swapping into it, or
    kills it to free memory, the machine deadlocks or loses swapped pages.
    Each step that fails is logged and the daemon carries on.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    # ONFAULT: lock pages as they are touched, so reserved but unused address space
    # (the pool's sparse mapping, thread stacks) does not become resident.
    if (libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0
            and libc.mlockall(MCL_CURRENT | MCL_FUTURE) != 0):
        log.warning("mlockall failed: %s", os.strerror(ctypes.get_errno()))
    # IO_FLUSHER: allocations made while serving I/O do not recurse into reclaim.
    if libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_IO_FLUSHER) failed: %s", os.strerror(ctypes.get_errno()))
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")
    except OSError as e:
        log.warning("cannot set oom_score_adj -1000: %s", e.strerror)


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


async def serve_until_unmounted() -> None:
    """pyfuse3's main loop, ended cleanly by SIGTERM or SIGINT as well as by umount."""
    async with trio.open_nursery() as nursery:
        async def on_signal() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    log.info("%s: unmounting", signal.Signals(signum).name)
                    pyfuse3.terminate()

        nursery.start_soon(on_signal)
        await pyfuse3.main()
        nursery.cancel_scope.cancel()


def serve(req: MountRequest, ready_fd: int | None) -> int:
    """Mount, report readiness on ready_fd, serve until unmounted."""
    _setup_logging(req)
    if os.geteuid() == 0:
        harden()
    ns = Namespace(Device(req.config))
    ops = CramOperations(ns)
    try:
        pyfuse3.init(ops, req.mountpoint, req.fuse_options())
    except Exception as e:  # libfuse reports failures as RuntimeError with little detail
        msg = f"cramfs: cannot mount {req.mountpoint}: {e}"
        if ready_fd is not None:
            os.write(ready_fd, msg.encode())
            os.close(ready_fd)
        else:
            print(msg, file=sys.stderr)
        return 1
    log.info("mounted %s: advertised=%d physical=%d compressor=%s", req.mountpoint,
             req.config.advertised, req.config.physical, req.config.compressor)
    if ready_fd is not None:
        os.write(ready_fd, b"ready")
        os.close(ready_fd)
        _detach_stdio()
    try:
        trio.run(serve_until_unmounted)
    except BaseException:
        log.exception("main loop failed")
        pyfuse3.close(unmount=True)
        return 1
    pyfuse3.close(unmount=True)
    log.info("unmounted %s", req.mountpoint)
    return 0


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
