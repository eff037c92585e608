"""The queue between a traced request and the trace's writer thread.

The request path puts a record on a ring and goes on; a thread of the recorder's
takes records off and writes them. Two rings have one interface: the compiled
`_tracering.TraceRing`, whose writer (`drain`) packs and writes without ever taking
the GIL, and `PyTraceRing` here, the reference it is tested against and the ring
where it is not built, whose writer packs in Python what `take()` hands it.

A ring stops taking records, never failing the request, when the writer falls
`max_backlog` bytes of payload or `capacity` records behind: the recording then
ends with an events line.
"""

from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable
from operator import index
from typing import Any

from .format import WRITE

try:
    from .._tracering import TraceRing
except ImportError:          # not built: a checkout used without `pip install`
    TraceRing = None  # type: ignore[assignment,misc]

# A record as take() hands it over: (time, op, inode, a, b, result, payload).
Record = tuple[float, int, int, int, int, int, bytes]


def native_available() -> bool:
    # the compiled writer packs its numbers in the host's order, the trace's is little-endian
    return TraceRing is not None and sys.byteorder == "little"


class PyTraceRing:
    """`_tracering.TraceRing` in Python, with the same behaviour record for record."""

    def __init__(self, capacity: int, max_backlog: int, clock: Callable[[], float]) -> None:
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError("a ring's capacity is a power of two")
        self._queue: deque[Record] = deque()
        self._capacity = capacity
        self._max_backlog = max_backlog
        self._clock = clock
        self._in = 0                       # payload bytes recorded
        self._out = 0                      # and taken by the writer
        self._finishing = False
        self.events = 0
        self.active = True
        self.error: str | None = None
        self._producer: int | None = None  # the one thread that records

    @property
    def backlog(self) -> int:
        """Records queued and not yet taken by the writer."""
        return len(self._queue)

    @property
    def finished(self) -> bool:
        """Stopped or failed: the writer ends once it has taken what is left."""
        return self._finishing

    def fail(self, why: str) -> None:
        """Stop taking records, for `why` (the first reason given is kept)."""
        if self.error is None:
            self.error = why
        self.active = False
        self._finishing = True

    def stop(self) -> None:
        """Take no more records; the writer ends once it has taken what is left."""
        self.active = False
        self._finishing = True

    def record_write(self, ino: int, off: int, data: Any, result: int) -> None:
        """record(WRITE, ino, off, len(data), result, data): the request path's own,
        with the fewest arguments to pass."""
        self.record(WRITE, ino, off, None, result, data)

    def _own(self) -> None:
        me = threading.get_ident()
        if self._producer != me:
            if self._producer is not None:
                raise RuntimeError("a trace ring takes records from one thread only")
            self._producer = me

    def record(self, op: int, ino: int = 0, a: int = 0, b: int | None = 0, result: int = 0,
               payload: Any = b"", at: float | None = None) -> None:
        """Queue one record, at time `at` (the clock's now if None: the moment the
        recorded call returned). Never raises for what it is given: a record the
        trace cannot hold stops the recording. RuntimeError from a second thread."""
        if self.active:
            self._own()
            try:
                self._put(op, ino, a, b, result, payload, at)
            except Exception as e:
                self.fail(f"a record the trace cannot hold: {e!r}")

    def _put(self, op: int, ino: int, a: int, b: int | None, result: int, payload: Any,
             at: float | None) -> None:
        # b None: the payload's length. No lock: deque.append is atomic, and the
        # writer takes what it finds.
        if payload:
            if type(payload) is not bytes:
                payload = bytes(payload)       # a snapshot: the writer reads it later
            self._in += len(payload)
            if self._in - self._out > self._max_backlog:
                self.fail(f"the trace writer fell {self._max_backlog >> 20} MiB behind")
                return
        else:
            payload = b""
        t = float(self._clock() if at is None else at)
        ino, a, result = index(ino), index(a), index(result)
        b = len(payload) if b is None else index(b)
        if not (0 <= ino <= 0xFFFFFFFF and -0x80000000 <= result <= 0x7FFFFFFF
                and 0 <= op <= 255 and -(1 << 63) <= a < 1 << 63 and -(1 << 63) <= b < 1 << 63):
            raise ValueError(f"op {op} inode {ino} result {result}")
        if len(self._queue) >= self._capacity:     # last, as the compiled ring checks it
            self.fail(f"the trace writer fell {self._capacity} records behind")
            return
        self._queue.append((t, op, ino, a, b, result, payload))
        self.events += 1

    def take(self) -> list[Record]:
        """The records not taken yet, oldest first."""
        batch = []
        queue = self._queue
        while queue:
            batch.append(queue.popleft())
        self._out += sum(len(r[6]) for r in batch)
        return batch

    def release(self) -> None:
        """After the writer ended: drop every payload still held."""
        self._queue.clear()


def make_ring(capacity: int, max_backlog: int, clock: Callable[[], float],
              native: bool | None = None) -> TraceRing | PyTraceRing:
    """The compiled ring if it is built (or as `native` asks), else the reference."""
    if native is None:
        native = native_available()
    if native:
        if not native_available():
            raise ValueError("the compiled trace ring is not built")
        return TraceRing(capacity, max_backlog, clock)
    return PyTraceRing(capacity, max_backlog, clock)
