"""The daemon's own memory: kept resident while it backs swap, given back when asked.

A daemon that backs swap must not be swapped out or OOM-killed: if the kernel
reclaims the daemon's pages while swapping into it, or kills it to free
memory, the machine deadlocks or loses swapped pages. So it locks its memory.
Locked memory is also memory the allocator cannot give back (glibc's
malloc_trim uses MADV_DONTNEED, which fails on locked pages), so `trim`
unlocks for the moment it takes to return free heap pages.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

MCL_CURRENT, MCL_FUTURE, MCL_ONFAULT = 1, 2, 4
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # mallopt parameters (malloc.h)
MMAP_THRESHOLD = 4 << 20
TRIM_THRESHOLD = 16 << 20
PR_SET_IO_FLUSHER = 57
_libc = ctypes.CDLL(None, use_errno=True)
_locked = 0            # the mlockall flags in force, 0 when not locked


def _error() -> str:
    return os.strerror(ctypes.get_errno())


def harden() -> None:
    """Lock memory, mark the daemon an I/O flusher and ask not to be OOM-killed.

    Each step that fails is logged and the daemon carries on."""
    global _locked
    # ONFAULT: lock pages as they are touched, so reserved but unused address space
    # (the pool's sparse mapping, thread stacks) does not become resident.
    for flags in (MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, MCL_CURRENT | MCL_FUTURE):
        if _libc.mlockall(flags) == 0:
            _locked = flags
            break
    else:
        log.warning("mlockall failed: %s", _error())
    # IO_FLUSHER: allocations made while serving I/O do not recurse into reclaim.
    if _libc.prctl(PR_SET_IO_FLUSHER, 1, 0, 0, 0) != 0:
        log.warning("prctl(PR_SET_IO_FLUSHER) failed: %s", _error())
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("-1000")
    except OSError as e:
        log.warning("cannot set oom_score_adj -1000: %s", e.strerror)


def tune_allocator() -> None:
    """Keep a request's buffers in the heap for the next request.

    A large request allocates and frees a few MiB (lz4's output, the page
    slices, the reply). glibc serves blocks over 128 KiB with a fresh mmap and
    trims the heap top past 128 KiB free, so each request faulted its buffers
    in again, and with the memory locked each fault also went through
    mlock's accounting: that halved 1 MiB writes. Blocks up to 4 MiB now come
    from the heap, and up to 16 MiB of free heap stays for reuse; `trim` still
    gives everything back on demand."""
    mallopt = getattr(_libc, "mallopt", None)
    if mallopt is None:          # not glibc: nothing to tune
        return
    for param, value in ((M_MMAP_THRESHOLD, MMAP_THRESHOLD), (M_TRIM_THRESHOLD, TRIM_THRESHOLD)):
        if mallopt(param, value) != 1:
            log.warning("mallopt(%d, %d) failed", param, value)


def trim() -> None:
    """Give free heap pages back to the kernel (after deletes and a compaction).

    While locked, unlock for the length of the trim, then lock again with
    ONFAULT semantics where the kernel has them, so nothing is faulted back in."""
    if _locked:
        _libc.munlockall()
    try:
        _libc.malloc_trim(0)
    finally:
        if _locked and _libc.mlockall(_locked) != 0:
            log.warning("mlockall after trim failed: %s", _error())
