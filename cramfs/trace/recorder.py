"""The recorder: takes a mount's calls on the request path and writes the trace.

Recording costs the request path one slot of a ring (ring.py; the written
bytes are kept by reference, not copied). A thread compresses and writes, with
the GIL released where the ring is compiled. A full disk, or a writer that falls
too far behind, stops the recording with an events line; it never fails I/O.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any, BinaryIO

from .format import HEAD, MAGIC, STOP, VERSION, VERSION_ALSO, keepable, pack_records
from .ring import PyTraceRing, TraceRing, make_ring

MAX_BACKLOG = 256 << 20          # bytes waiting for the writer before recording stops
RING_RECORDS = 1 << 16           # and records (a ring of 48-byte slots: 3 MiB)


class Recorder:
    """Takes records on the request path and writes them from a thread of its own."""

    def __init__(self, path: str, fd: int, header: dict[str, Any],
                 clock: Callable[[], float] = time.monotonic, also: tuple[str, ...] = (),
                 native: bool | None = None) -> None:
        if also:
            keepable(",".join(also))          # ValueError for what cannot be kept
        self.path = path
        self.fd = fd                        # opened by the caller (safepath.create_exclusive)
        self.also = also                    # other compressors whose blocks are kept
        self.reported = False               # the error was told to the events log
        # The recording's clock, the device's own: each record is stamped as its call
        # returns, and a replay runs the call at that time on the device's clock.
        self._start = clock()
        self._ring = make_ring(RING_RECORDS, MAX_BACKLOG, clock, native)
        # The request path calls the ring itself: record(op, ino, a, b, result,
        # payload, at=None) and record_write(ino, off, data, result), which never
        # raise and do nothing once recording stopped.
        self.record: Callable[..., None] = self._ring.record
        self.record_write: Callable[[int, int, bytes, int], None] = self._ring.record_write
        self._stopping = False
        if also:
            header = {**header, "compressors": list(also)}
        self._thread = threading.Thread(target=self._run, args=(header,),
                                        name="cramfs-trace", daemon=True)
        self._thread.start()

    @property
    def active(self) -> bool:
        return bool(self._ring.active)

    @property
    def events(self) -> int:
        return int(self._ring.events)

    @property
    def error(self) -> str | None:
        """Why recording stopped early, if it did."""
        return self._ring.error

    def stop(self, final: dict[str, Any]) -> None:
        """End the recording with the final state; the thread finishes on its own."""
        if self._stopping:
            return
        self.record(STOP, payload=json.dumps(final).encode())
        self._ring.stop()
        self._stopping = True

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    # ------------------------------------------------------------ the writer thread

    def _run(self, header: dict[str, Any]) -> None:
        ring = self._ring
        try:
            self._write_all(header)
        except OSError as e:
            ring.fail(f"writing {self.path}: {e.strerror}")
        except Exception as e:       # a bug: stop recording, never take the daemon down
            ring.fail(f"the trace writer failed: {e!r}")
        finally:
            ring.release()

    def _write_all(self, header: dict[str, Any]) -> None:
        ring = self._ring
        with os.fdopen(self.fd, "wb") as f:
            body = json.dumps(header).encode()
            version = VERSION_ALSO if self.also else VERSION
            f.write(HEAD.pack(MAGIC, version, len(body)) + body)
            f.flush()
            if isinstance(ring, PyTraceRing) or self.also:
                self._pack_in_python(f, ring)
            else:
                # compiled packing, the GIL released throughout (other compressors'
                # blocks are Python calls, so a recording that keeps them packs here)
                err = ring.drain(self.fd, self._start)
                if err:
                    raise OSError(err, os.strerror(err))

    def _pack_in_python(self, f: BinaryIO, ring: TraceRing | PyTraceRing) -> None:
        while True:
            done = ring.finished            # before taking: records come before the flag
            batch = ring.take()
            if batch:
                f.write(pack_records(batch, self._start, self.also))
                f.flush()
            elif done:
                return
            else:
                time.sleep(0.005)           # a few ms: the request path never signals
