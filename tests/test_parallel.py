"""The large-request pipeline: the same results, in order, however it is split."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from cramfs import parallel


def slow_square(x: int) -> int:
    # a C call that releases the GIL, as lz4 does, so the workers really interleave
    threading.Event().wait(0.00001 * (x % 3))
    return x * x


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 200), st.integers(0, 3))
def test_imap_matches_map(n, workers):
    items = list(range(n))
    assert list(parallel.imap(slow_square, items, workers)) == [x * x for x in items]


@settings(max_examples=30, deadline=None)
@given(st.integers(parallel.MIN_BATCH, 200), st.integers(1, 3), st.data())
def test_stopping_early_leaves_no_worker_claiming(n, workers, data):
    stop = data.draw(st.integers(0, n - 1))
    seen = []

    def record(x: int) -> int:
        seen.append(x)
        return x

    it = parallel.imap(record, list(range(n)), workers)
    got = [next(it) for _ in range(stop)]
    it.close()
    assert got == list(range(stop))
    settled = len(seen)
    threading.Event().wait(0.01)
    # at most the chunks already claimed finish; nothing new is started
    assert len(seen) - settled <= workers * parallel.CHUNK


def test_small_batches_stay_inline():
    names = []
    list(parallel.imap(lambda x: names.append(threading.current_thread().name),
                       list(range(parallel.MIN_BATCH - 1)), 4))
    assert set(names) == {threading.current_thread().name}


def test_large_batches_use_workers():
    names = set()

    def where(x: int) -> int:
        names.add(threading.current_thread().name)
        threading.Event().wait(0.002)   # the worker has 100+ ms to start and claim a chunk
        return x

    list(parallel.imap(where, list(range(64)), 1))
    assert any(n.startswith("cramfs-codec") for n in names)


def test_an_exception_in_a_worker_reaches_the_caller():
    """A bug in the per-page function fails the request; it must not hang the daemon."""

    def boom(x: int) -> int:
        threading.Event().wait(0.001)
        if x == 3:       # in the first chunk, which the worker computes
            raise ValueError("bug")
        return x

    outcome: list[BaseException | list[int]] = []

    def run() -> None:
        try:
            outcome.append(list(parallel.imap(boom, list(range(64)), 1)))
        except BaseException as e:
            outcome.append(e)

    caller = threading.Thread(target=run)
    caller.start()
    caller.join(timeout=30)
    assert not caller.is_alive(), "the caller hung waiting for a chunk that failed"
    assert isinstance(outcome[0], ValueError)
