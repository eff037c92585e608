"""`.cram/trace`: starting, stopping and reporting a recording of the device's calls.

The one control file with a life beyond its write: a recording runs from `start` until
`stop`, the daemon's unmount (stop_trace) or a full disk (check_trace tells the events
log), and its file is made off the request loop, as it may be on any filesystem. The
store and show here are the trace row of control.py's attribute table; the recorder
itself, and the file it writes, are the trace package's.
"""

from __future__ import annotations

import errno
import os
import time
from typing import NoReturn

from . import procfs, safepath, trace
from .backing import IoJob
from .config import SETTINGS
from .device import DeviceError
from .namespace import Namespace
from .trace import Recorder
from .units import PAGE_SIZE, shown


def _trace_refused(ns: Namespace, err: int, why: str) -> NoReturn:
    ns.device.events.add("rejected", f"trace: {why}")
    raise DeviceError(err, f"trace: {why}")


def store_trace(ns: Namespace, text: str) -> IoJob | None:
    """`start PATH [compressors=zstd,lzo]` records from now on into PATH, a new file off
    this mount, also keeping each page as the listed compressors encode it; `stop`
    ends. The file is made at the write (off the request loop, as it may be on any
    filesystem), so the write's errno says why it could not be: EEXIST, ENOENT for a
    missing parent, ELOOP for a symlink anywhere on the path, EINVAL for a relative
    path or one on this mount, EACCES."""
    words = text.split(" ", 1)
    rec = ns.recorder
    if words == ["stop"]:
        if rec is None or not rec.active:
            ns.device.reject("trace", "not recording")
        stop_trace(ns)
        return None
    also: tuple[str, ...] = ()
    if len(words) == 2:
        path, _, last = words[1].rpartition(" ")
        if path and last.startswith("compressors="):
            try:
                also = trace.keepable(last.split("=", 1)[1])
            except ValueError as e:
                ns.device.reject("trace", str(e))
            words[1] = path
    if len(words) != 2 or words[0] != "start" or not words[1]:
        ns.device.reject("trace", "expected 'start /ABSOLUTE/PATH [compressors=zstd,...]' or "
                         f"'stop', got {shown(text)}")
    path = words[1]
    try:
        safepath.check_path(path)
    except OSError as e:
        ns.device.reject("trace", f"{shown(path)}: {e.strerror}")
    mp = ns.mountpoint
    if mp and (os.path.normpath(path) + "/").startswith(os.path.normpath(mp) + "/"):
        ns.device.reject("trace", f"{shown(path)} is on this mount; a trace cannot record "
                         "itself")
    if rec is not None and rec.active:
        raise DeviceError(errno.EBUSY, f"trace: already recording to {rec.path}")

    def create() -> int | OSError | None:
        # control jobs run one at a time, each done() before the next run(): a start
        # that another start beat finds its recorder here, before making any file
        if ns.recorder is not None and ns.recorder.active:
            return None
        try:
            # the mount's st_dev from mountinfo: a stat of the mount would be a request
            # to this daemon, which is waiting for this job
            return safepath.create_exclusive(
                path, 0o600, refuse_dev=procfs.mount_dev(mp) if mp else None)
        except OSError as e:
            return e

    def created(result: int | OSError | None) -> None:
        if result is None:
            rec = ns.recorder
            raise DeviceError(errno.EBUSY, "trace: already recording"
                              + (f" to {rec.path}" if rec is not None else ""))
        if isinstance(result, OSError):
            _trace_refused(ns, result.errno or errno.EIO,
                           f"cannot start {shown(path)}: {result.strerror}")
        start_trace(ns, path, result, also)

    return IoJob(create, created)


def start_trace(ns: Namespace, path: str, fd: int, also: tuple[str, ...]) -> None:
    """Record into `fd`, a new file (a typo must not truncate one that exists) readable
    by its owner only: it holds everything written, swapped-out memory included."""
    dev = ns.device
    header = {
        "settings": {name: dev.config.show(name) for name in SETTINGS},
        "empty": not ns.by_name and not any(dev.pages),
        "mm_stat": dev.mm_stat(),
        "device_age": dev.age(),
        "backing_size": dev.backing.blocks * PAGE_SIZE if dev.backing is not None else 0,
        "started": time.time(),
        "lz4": trace.LZ4_KIND,
    }
    try:
        ns.recorder = Recorder(path, fd, header, clock=dev.clock, also=also)
    except BaseException:
        os.close(fd)                  # the writer thread never took it
        raise
    dev.events.add("trace", f"recording to {shown(path)}"
                   + (f", pages also as {','.join(also)}" if also else "")
                   + ("" if header["empty"] else " (the device was not empty: a replay "
                                                 "will not be exact)"))


def stop_trace(ns: Namespace) -> None:
    """End a recording with the device's final state (also at unmount)."""
    rec = ns.recorder
    if rec is None:
        return
    dev = ns.device
    rec.stop({"mm_stat": dev.mm_stat(), "stats": dev.stats()})
    ns.recorder = None
    dev.events.add("trace", f"stopped: {rec.events} events in {shown(rec.path)}")


def check_trace(ns: Namespace) -> None:
    """Tell the events log once when a recording stopped on its own (a full disk)."""
    rec = ns.recorder
    if rec is not None and rec.error is not None and not rec.reported:
        rec.reported = True
        ns.device.events.add("trace", f"recording stopped: {rec.error}")


def show_trace(ns: Namespace) -> str:
    check_trace(ns)
    rec = ns.recorder
    if rec is None:
        return "off\n"
    if rec.error is not None:
        return f"stopped: {rec.error} ({rec.events} events in {rec.path})\n"
    also = f" (pages also as {','.join(rec.also)})" if rec.also else ""
    return f"recording {rec.path} {rec.events} events{also}\n"
