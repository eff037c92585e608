"""The trace's ring: the compiled one against the Python reference, byte for byte.

The compiled ring packs records in C without the GIL; the reference hands them to
trace.pack_records. Whatever goes in, both must write the same bytes and stop
for the same reasons. scripts/test-asan runs this file on an AddressSanitizer
build, where the concurrent test below also checks the ring's hand-over.
"""

from __future__ import annotations

import errno
import os
import random
import sys
import tempfile
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cramfs import trace
from cramfs.trace.ring import PyTraceRing, TraceRing, make_ring, native_available
from cramfs.units import PAGE_SIZE

P = PAGE_SIZE


def test_the_compiled_ring_is_built():
    """The compiled ring's tests below use it unconditionally: none is skipped for want
    of it, or the suite would prove nothing about what users run."""
    assert native_available(), "the compiled ring is not built: run scripts/setup"


def page(kind: int, seed: int) -> bytes:
    """A page of each shape the packer tells apart."""
    rng = random.Random(seed)
    if kind == 0:                                   # same-filled
        return rng.randbytes(8) * (P // 8)
    if kind == 1:                                   # compressible text
        return b" ".join(b"word%d" % rng.randrange(50) for _ in range(1200))[:P]
    if kind == 2:                                   # does not shrink: kept raw
        return rng.randbytes(P)
    return bytes(P - 8) + rng.randbytes(8)          # zeros with a different last word


pages = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 1 << 20)), min_size=1,
                 max_size=5).map(lambda ps: b"".join(page(k, s) for k, s in ps))
records = st.lists(st.one_of(
    # whole-page writes, at page offsets
    st.tuples(st.just(trace.WRITE), st.integers(1, (1 << 32) - 1),
              st.integers(0, 1 << 20).map(lambda i: i * P), pages),
    # writes of any length at any offset: one lz4 block
    st.tuples(st.just(trace.WRITE), st.integers(1, 99), st.integers(0, 1 << 40),
              st.binary(min_size=1, max_size=3 * P)),
    # other calls, with and without a payload
    st.tuples(st.sampled_from([trace.READ, trace.CREATE, trace.CONTROL, trace.DISCARD,
                               trace.OPENED, trace.STOP]),
              st.integers(0, 1000), st.integers(-(1 << 63), (1 << 63) - 1),
              st.binary(max_size=64)),
), max_size=40)


def run_native(recs: list[tuple[int, int, int, bytes]], start: float, tmp: str) -> bytes:
    ring = TraceRing(1 << 8, 1 << 30, time.monotonic)
    feed(ring, recs, start)
    ring.stop()
    path = os.path.join(tmp, "native.bin")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        assert ring.drain(fd, start) == 0
    finally:
        os.close(fd)
    ring.release()
    with open(path, "rb") as f:
        return f.read()


def feed(ring: TraceRing | PyTraceRing, recs: list[tuple[int, int, int, bytes]],
         start: float) -> None:
    for k, (op, ino, a, payload) in enumerate(recs):
        ring.record(op, ino, a, len(payload), -5 if k % 3 == 0 else k, payload,
                    start + k * 0.001 + 1e-7)


@settings(max_examples=200, deadline=None)
@given(records)
def test_the_compiled_ring_writes_what_the_reference_packs(recs):
    start = 1234.5678
    ref = PyTraceRing(1 << 8, 1 << 30, time.monotonic)
    feed(ref, recs, start)
    expected = trace.pack_records(ref.take(), start)
    with tempfile.TemporaryDirectory() as tmp:
        assert run_native(recs, start, tmp) == expected
    assert len(expected) >= 37 * len(recs)


@pytest.mark.parametrize("kind", ["native", "python"])
def test_record_write_stamps_the_moment_it_is_called(kind):
    if kind == "native" and not native_available():
        pytest.fail("the compiled ring is not built: run scripts/setup")
    for clock in (time.monotonic, lambda: 42.0):
        ring = make_ring(1 << 4, 1 << 20, clock, native=kind == "native")
        before = time.monotonic()
        ring.record_write(3, 2 * P, page(1, 1), P)
        after = time.monotonic()
        (t, op, ino, a, b, result, payload), = ring.take()
        assert (op, ino, a, b, result, payload) == (trace.WRITE, 3, 2 * P, P, P, page(1, 1))
        assert (before <= t <= after) if clock is time.monotonic else t == 42.0
        ring.release()


@pytest.mark.parametrize("kind", ["native", "python"])
def test_a_ring_stops_rather_than_raise(kind):
    """What the trace has no room for, and a writer that falls behind, stop the
    recording with a reason; the caller is never raised at."""
    if kind == "native" and not native_available():
        pytest.fail("the compiled ring is not built: run scripts/setup")

    def ring(capacity: int = 4, backlog: int = 3 * P):
        return make_ring(capacity, backlog, time.monotonic, native=kind == "native")

    r = ring()
    for _ in range(3):
        r.record(trace.WRITE, 1, 0, P, P, bytes(P), 1.0)
    assert r.active and r.events == 3
    r.record(trace.WRITE, 1, 0, P, P, bytes(P), 1.0)
    assert not r.active and r.error == "the trace writer fell 0 MiB behind"
    r.record(trace.READ, 1, 0, P, P, b"", 1.0)
    assert r.events == 3 and r.finished
    assert len(r.take()) == 3

    r = ring()
    for _ in range(5):
        r.record(trace.READ, 1, 0, P, P, b"", 1.0)
    assert r.events == 4 and r.error == "the trace writer fell 4 records behind"

    for bad in ({"ino": 1 << 32}, {"result": 1 << 31}, {"a": 1 << 63}, {"b": -(1 << 64)},
                {"ino": "one"}, {"payload": object()}, {"at": "soon"}, {"op": 256}):
        r = ring()
        args = {"op": trace.READ, "ino": 1, "a": 0, "b": 0, "result": 0, "payload": b"x",
                "at": 1.0, **bad}
        r.record(**args)
        assert not r.active and r.events == 0
        assert r.error.startswith("a record the trace cannot hold"), bad
    r = ring()
    r.record_write(1, 0, object(), P)
    assert not r.active and r.events == 0


@pytest.mark.parametrize("kind", ["native", "python"])
def test_a_ring_snapshots_a_mutable_payload_and_lets_go_of_what_it_held(kind):
    if kind == "native" and not native_available():
        pytest.fail("the compiled ring is not built: run scripts/setup")
    r = make_ring(1 << 4, 1 << 20, time.monotonic, native=kind == "native")
    buf = bytearray(b"abc")
    r.record(trace.CONTROL, 0, 0, 0, 0, buf, 1.0)
    buf[0] = ord("X")
    held = b"held" * 100
    before = sys.getrefcount(held)
    r.record(trace.CONTROL, 0, 0, 0, 0, held, 2.0)
    assert sys.getrefcount(held) == before + 1
    r.stop()
    r.release()
    assert sys.getrefcount(held) == before
    r = make_ring(1 << 4, 1 << 20, time.monotonic, native=kind == "native")
    r.record(trace.CONTROL, 0, 0, 0, 0, buf, 1.0)
    assert r.take()[0][6] == b"Xbc"


def test_the_writer_drains_while_the_request_path_records(tmp_path):
    """Thousands of records through a ring of 256 slots, written by drain() in its
    own thread as they come: every record arrives, in order, as the reference packs
    it, and the ring holds no payload at the end."""
    ring = TraceRing(1 << 8, 64 << 20, time.monotonic)
    start = time.monotonic()
    path = tmp_path / "t.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    out: list[int] = []
    writer = threading.Thread(target=lambda: out.append(ring.drain(fd, start)))
    writer.start()
    time.sleep(0.01)
    for other in (ring.take, ring.release, lambda: ring.drain(fd, start)):
        with pytest.raises(RuntimeError, match="drain"):
            other()                    # one writer, and nothing that races it
    data = [page(k % 4, k) * (1 + k % 3) for k in range(64)]
    refs = [sys.getrefcount(d) for d in data]
    sent = []
    for k in range(6000):
        at = start + k * 1e-6
        payload = data[k % len(data)]
        if k % 5 == 4:
            rec = (at, trace.READ, 7, k * P, P, P, b"")
        else:
            rec = (at, trace.WRITE, 7, k * P, len(payload), len(payload), payload)
        ring.record(*rec[1:], at)
        sent.append(rec)
        deadline = time.monotonic() + 10
        while ring.backlog > 192:      # the ring never fills, however busy the machine
            assert time.monotonic() < deadline, "the writer stopped draining"
            time.sleep(0.0005)
    ring.stop()
    writer.join(30)
    os.close(fd)
    ring.release()
    assert out == [0] and ring.error is None and ring.events == len(sent)
    assert path.read_bytes() == trace.pack_records(sent, start)
    del sent, rec, payload
    assert [sys.getrefcount(d) for d in data] == refs


def test_a_failed_write_is_its_errno(tmp_path):
    ring = TraceRing(1 << 4, 1 << 20, time.monotonic)
    ring.record(trace.CONTROL, 0, 0, 0, 0, b"x" * 100, 1.0)
    ring.stop()
    fd = os.open("/dev/full", os.O_WRONLY)
    try:
        assert ring.drain(fd, 0.0) == errno.ENOSPC
    finally:
        os.close(fd)
    ring.release()
    r, w = os.pipe()
    os.close(w)
    os.close(r)
    ring = TraceRing(1 << 4, 1 << 20, time.monotonic)
    ring.record(trace.CONTROL, 0, 0, 0, 0, b"x", 1.0)
    ring.stop()
    assert ring.drain(w, 0.0) == errno.EBADF
    ring.release()


@pytest.mark.parametrize("kind", ["native", "python"])
def test_a_second_producer_thread_is_refused(kind):
    """One producer, enforced: a record from another thread raises instead of claiming a
    slot the owner may be filling, and the recording goes on with the owner's records."""
    if kind == "native" and not native_available():
        pytest.fail("the compiled ring is not built")
    ring = make_ring(8, 1 << 20, time.monotonic, native=kind == "native")
    ring.record(trace.READ, 1, 0, 4096)
    errors: list[BaseException] = []

    def other() -> None:
        try:
            ring.record_write(1, 0, b"x" * P, P)
        except RuntimeError as e:
            errors.append(e)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1 and "one thread" in str(errors[0])
    ring.record(trace.READ, 1, P, 4096)
    assert ring.events == 2 and ring.active and ring.error is None
    assert [r[3] for r in ring.take()] == [0, P]
