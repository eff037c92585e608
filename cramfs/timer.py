"""Sub-millisecond sleeps for the trio loop: the emulated media's latency.

trio.sleep(100 µs) takes about 1.2 ms here, because epoll waits in whole
milliseconds. A timerfd armed for the exact delay and awaited with
wait_readable wakes the loop when the kernel's hrtimer fires instead, and the
loop keeps serving other requests meanwhile. Where timerfd is missing, trio's
own sleep is the fallback.

Waking through the loop still costs some tens of microseconds (about 30 here,
more when the vCPUs idle, as this VM's halt). Every sleep measures what waking
cost it (a moving average), and the next timers are armed early by the share of
it that lengthens what the client sees, so the delay a request sees is close to
the one asked for; one asked for less than that overshoot gets the overshoot.
"""

from __future__ import annotations

import ctypes
import os
import time

import trio

_CLOCK_MONOTONIC = 1
_TFD_NONBLOCK = os.O_NONBLOCK
_TFD_CLOEXEC = os.O_CLOEXEC


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


_libc = ctypes.CDLL(None, use_errno=True)
_HAVE_TIMERFD = hasattr(_libc, "timerfd_create") and hasattr(_libc, "timerfd_settime")
_MAX_OVERSHOOT = 200e-6
_WEIGHT = 0.1                 # how fast the overshoot estimate follows the machine's load
# Only half the overshoot measured here lengthens what the client sees: the rest
# overlaps with the wake-up a request without any delay pays too. Measured with
# scripts/bench's read_latency rows: no correction added 115 µs for 100 asked,
# the whole correction 82, half of it 100 or so (docs/semantics.md, Emulated media latency).
_SHARE = 0.5
_overshoot = 0.0              # what waking through the loop adds to a timer, lately


async def _timerfd_sleep(seconds: float) -> bool:
    """One timerfd sleep; False if the kernel would not arm one."""
    fd = _libc.timerfd_create(_CLOCK_MONOTONIC, _TFD_NONBLOCK | _TFD_CLOEXEC)
    if fd < 0:
        return False
    try:
        whole = int(seconds)
        spec = _Itimerspec(_Timespec(0, 0),
                           _Timespec(whole, max(1, int((seconds - whole) * 1e9))))
        if _libc.timerfd_settime(fd, 0, ctypes.byref(spec), None) != 0:
            return False
        await trio.lowlevel.wait_readable(fd)
        os.read(fd, 8)
        return True
    finally:
        os.close(fd)


async def sleep_precise(seconds: float) -> None:
    """Sleep `seconds` (tens of microseconds of resolution) without blocking the loop."""
    global _overshoot
    if seconds <= 0:
        return
    armed = max(seconds - _SHARE * _overshoot, 1e-9)
    start = time.perf_counter()
    if not (_HAVE_TIMERFD and await _timerfd_sleep(armed)):
        await trio.sleep(seconds)
        return
    # each sleep measures what waking cost it; the estimate follows the machine's state
    late = time.perf_counter() - start - armed
    _overshoot += _WEIGHT * (min(max(late, 0.0), _MAX_OVERSHOOT) - _overshoot)
