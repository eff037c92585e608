"""Spread per-page CPU work of one large request over more cores.

lz4 and zstd release the GIL while they run, so the pages of a 1 MiB write can
be compressed on several cores. What cannot be spread is the bookkeeping that
stores each page: it is Python and holds the GIL. So a large request is a
pipeline: worker threads compress chunks from the front, the calling thread
stores finished chunks in order and, whenever the next one is not ready yet,
steals a chunk from the back to compress itself instead of waiting idle. The
sides meet in the middle however fast each runs today.

Every page still takes and gives back the GIL once per compression call, and
on a small VM those hand-offs can cost more than the second core gives: on the
2-vCPU machines this was built on, one worker made 1 MiB writes about 20%
slower (docs/performance.md). So the number of workers is a setting,
`comp_threads`, 0 (inline) by default, and small requests always stay inline.
Called from the trio thread: it blocks the event loop for the request, exactly
as doing the work inline would.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

MIN_BATCH = 16                  # pages; below this a hand-off costs more than it can save
CHUNK = 8                       # pages per unit of work: small, so the sides meet evenly
MAX_WORKERS = 64
_pool: ThreadPoolExecutor | None = None


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        # threads are started on first use, up to what is asked for
        _pool = ThreadPoolExecutor(max_workers=MAX_WORKERS, thread_name_prefix="cramfs-codec")
    return _pool


class _Batch(Generic[T, R]):
    """Chunks of one request: workers claim from the front, the caller from the back."""

    def __init__(self, fn: Callable[[T], R], items: Sequence[T]) -> None:
        self.fn = fn
        self.items = items
        self.chunks = -(-len(items) // CHUNK)
        # a chunk's results, or the exception computing it raised, for the caller to raise
        self.results: list[list[R] | BaseException | None] = [None] * self.chunks
        self.front = 0
        self.back = self.chunks
        self.lock = threading.Lock()
        self.done = threading.Condition(self.lock)

    def compute(self, i: int) -> list[R]:
        fn = self.fn
        return [fn(x) for x in self.items[i * CHUNK:(i + 1) * CHUNK]]

    def work_front(self) -> None:
        while True:
            with self.lock:
                if self.front >= self.back:
                    return
                i = self.front
                self.front += 1
            out: list[R] | BaseException
            try:
                out = self.compute(i)
            except BaseException as e:   # a bug: the request fails, the caller must not hang
                out = e
            with self.lock:
                self.results[i] = out
                self.done.notify()

    def steal_back(self) -> bool:
        with self.lock:
            if self.front >= self.back:
                return False
            self.back -= 1
            i = self.back
        self.results[i] = self.compute(i)
        return True

    def wait(self, i: int) -> list[R]:
        with self.lock:
            while (out := self.results[i]) is None:
                self.done.wait()
        if isinstance(out, BaseException):
            raise out
        return out

    def stop(self) -> None:
        with self.lock:
            self.front = self.back


def imap(fn: Callable[[T], R], items: Sequence[T], workers: int) -> Generator[R, None, None]:
    """fn(x) for x in items, in order, computed ahead by `workers` threads when
    the batch is large. Stopping early stops the workers at their next chunk."""
    if len(items) < MIN_BATCH or workers <= 0:
        yield from map(fn, items)
        return
    batch = _Batch(fn, items)
    for _ in range(min(workers, batch.chunks - 1)):
        _executor().submit(batch.work_front)
    try:
        for i in range(batch.chunks):
            while batch.results[i] is None and batch.steal_back():
                pass
            yield from batch.wait(i)
    finally:
        batch.stop()


def map_pages(fn: Callable[[T], R], items: Sequence[T], workers: int) -> list[R]:
    """[fn(x) for x in items], computed by `workers` threads too when the batch is large."""
    return list(imap(fn, items, workers))


def map_parts(fn: Callable[[int, int], list[R]], units: int, workers: int) -> list[R]:
    """fn(lo, hi) over [0, units), flattened in order. With workers, a large request
    is cut into workers + 1 contiguous parts, the first computed here: for a native
    fn that releases the GIL once per call, the parts truly run side by side."""
    if workers <= 0 or units < MIN_BATCH:
        return fn(0, units)
    parts = min(workers + 1, units // CHUNK)
    bounds = [units * i // parts for i in range(parts + 1)]
    futures = [_executor().submit(fn, a, b) for a, b in itertools.pairwise(bounds[1:])]
    out = fn(0, bounds[1])
    for f in futures:
        out += f.result()
    return out
