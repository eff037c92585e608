"""Property tests of the page states with a backing file, against a bytearray model.

Random requests, idle marking, recompression, writebacks left half-way (their I/O
planned but not run, as while the adapter's worker thread writes), reclaim and
fallback=writeback, on both engines. Whatever interleaving hypothesis finds:

- every read returns the last acknowledged write, whichever state its page is
  in (device, idle, recompressed, under writeback, written back, written behind,
  promoted, fallback);
- a write to a page under writeback wins, and the finished writeback is dropped;
- the accounting holds after every step, and every block of the backing file
  belongs to exactly one page or one write on its way;
- once all I/O has landed, the file holds exactly the written-back pages' blocks.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cramfs import engine
from cramfs.backing import ALLOCATED, IoJob, run_inline
from cramfs.config import DeviceConfig
from cramfs.device import Device, DeviceError
from cramfs.pagetable import BACKED, HANDLE_SHIFT, KIND_MASK, PageTable
from cramfs.units import PAGE_SIZE

from .helpers import check_accounting, discard_model
from .test_device_properties import payload

P = PAGE_SIZE
FILE_PAGES = 24

offsets = st.integers(0, FILE_PAGES * P - 1)
lengths = st.sampled_from([1, P - 1, P, 2 * P, 3 * P + 17, 8 * P])
kinds = st.sampled_from(["zero", "same", "text", "random"])

SETS = [("mode", "zswap"), ("mode", "direct"), ("dram", "0"), ("dram", "8K"),
        ("compressor", "zstd"), ("compressor", "lz4"), ("write_control", "on"),
        ("fallback", "writeback"), ("fallback", "host"), ("reclaim", "writeback"),
        ("reclaim", "compact"), ("reclaim", "off")]
# weights: writes and writebacks often enough that pages are under writeback while
# other requests touch them
WEIGHTS = {"write": 8, "writeback": 4, "land": 4, "read": 3, "truncate": 1, "discard": 2,
           "demote": 1, "compact": 1, "idle": 2, "recompress": 1, "flush": 2, "set": 2}


@st.composite
def op(draw: st.DrawFn) -> tuple[Any, ...]:
    name = draw(st.sampled_from([n for n, w in WEIGHTS.items() for _ in range(w)]))
    if name == "write":
        return (name, draw(offsets), draw(lengths), draw(kinds), draw(st.integers(0, 1000)))
    if name == "read":
        return (name, draw(offsets), draw(lengths))
    if name == "truncate":
        return (name, draw(st.integers(0, FILE_PAGES * P)))
    if name == "discard":
        return (name, draw(st.integers(0, FILE_PAGES)), draw(st.integers(0, 6)))
    if name == "demote":
        return (name, draw(st.integers(0, 4)))
    if name == "idle":
        return (name, draw(st.sampled_from([None, 0])))
    if name == "recompress":
        return (name, draw(st.sampled_from(["idle", "huge"])))
    if name == "writeback":
        # its first batch is planned now; its I/O runs at a later "land", and what
        # happens in between is the interleaving under test
        return (name, draw(st.sampled_from(["idle", "huge", "huge_idle", "incompressible",
                                            "page"])), draw(st.integers(0, FILE_PAGES - 1)))
    if name == "land":
        return (name, draw(st.integers(0, 3)))
    if name == "set":
        return (name, draw(st.sampled_from(SETS)))
    return (name,)


configs: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    physical=st.sampled_from([8 * P, 16 * P, 64 * P]),
    fallback=st.sampled_from(["host", "none", "writeback"]),
    reclaim=st.sampled_from(["off", "compact", "writeback"]),
    mode=st.sampled_from(["zswap", "direct"]),
    dram=st.sampled_from([0, 2 * P]),
    engine=st.sampled_from(engine.ENGINES if engine.native_available() else ("python",)),
    backing_pages=st.sampled_from([6, 64]),     # 6: a full file is part of the game
    reclaim_pages=st.sampled_from([1, 4]),
)


def check_blocks(dev: Device, table: PageTable, pending: list[IoJob]) -> None:
    """Each block a written-back slot names is allocated and named once; so is each
    block a writeback holds for a page under it. Nothing else is, once all has landed."""
    b = dev.backing
    assert b is not None
    backed = [w >> HANDLE_SHIFT for _, w in table.items() if w & KIND_MASK == BACKED]
    held = list(dev.store.marks.values())
    assert len(set(backed + held)) == len(backed) + len(held), "a block named twice"
    assert all(b.state[block] == ALLOCATED for block in backed + held)
    assert len(backed) == dev.pages[BACKED]
    assert b.count >= len(backed) + len(held)
    if not pending and not b.queue and not dev.wb.staged:
        assert b.count == len(backed), "a block leaked"
        assert not b.inflight and not dev.store.marks


def run(cfg: dict[str, Any], ops: list[tuple[Any, ...]], path: Path) -> None:
    blocks = cfg.pop("backing_pages")
    with open(path, "wb") as f:
        f.truncate(blocks * P)
    dev = Device(DeviceConfig(advertised=1 << 20, backing_dev=str(path), **cfg))
    dev.set_recomp_algorithm("zstd")
    table = dev.table("f")
    model = bytearray()
    pending: list[IoJob] = []

    def write(off: int, data: bytes) -> int:
        """As the adapter does: a write is acknowledged once its staged pages landed."""
        try:
            n = dev.write(table, off, data)
            run_inline(dev.staged_job())
        except DeviceError as e:
            assert e.errno in (errno.ENOSPC, errno.EIO)
            return 0
        return n

    for o in ops:
        name = o[0]
        if name == "write":
            _, off, length, kind, seed = o
            data = payload(kind, seed, length)
            n = write(off, data)
            assert n == length or (0 < n < length and (off + n) % P == 0) or n == 0
            if n:
                model.extend(bytes(max(0, off + n - len(model))))
                model[off:off + n] = data[:n]
        elif name == "read":
            _, off, length = o
            assert dev.read(table, off, length) == bytes(model[off:off + length]).ljust(
                length, b"\0")
        elif name == "truncate":
            dev.truncate(table, o[1])
            del model[o[1]:]
        elif name == "discard":
            _, first, count = o
            dev.discard(table, first, count)
            discard_model(model, first, count)
        elif name == "demote":
            dev.demote(o[1])
        elif name == "compact":
            dev.compact()
        elif name == "idle":
            dev.mark_idle(o[1])
        elif name == "recompress":
            dev.recompress(o[1])
        elif name == "writeback":
            _, kind, idx = o
            try:
                job = dev.writeback(kind, (table, idx) if kind == "page" else None)
            except DeviceError as e:
                assert e.errno in (errno.ENOSPC, errno.EIO)
            else:
                if job is not None:
                    pending.append(job)
        elif name == "land" and pending:
            job = pending.pop(o[1] % len(pending))
            try:
                after = job.done(job.run())
            except DeviceError as e:
                assert e.errno == errno.ENOSPC, "only a full file stops a writeback here"
            else:
                if after is not None:
                    pending.append(after)
        elif name == "flush":
            run_inline(dev.flush_job())
        elif name == "set":
            try:
                dev.set(*o[1])
            except DeviceError as e:
                assert e.errno == errno.EINVAL
        check_accounting(dev, [table])
        check_blocks(dev, table, pending)
    # everything lands, then every page reads back and no block is left over
    while pending:
        try:
            run_inline(pending.pop())
        except DeviceError as e:
            assert e.errno == errno.ENOSPC
    dev.settle()
    check_blocks(dev, table, pending)
    assert dev.read(table, 0, (FILE_PAGES + 8) * P) == bytes(model).ljust(
        (FILE_PAGES + 8) * P, b"\0")
    dev.settle()
    dev.drop(table)
    dev.settle()
    assert dev.backing is not None and dev.backing.count == 0
    assert dev.backing.allocated_bytes() == 0, "every hole punched"
    dev.close()


# CRAMFS_EXAMPLES=3000 for a longer search than the suite's
@settings(max_examples=int(os.environ.get("CRAMFS_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(cfg=configs, ops=st.lists(op(), min_size=10, max_size=60))
def test_reads_return_the_last_acknowledged_write(cfg, ops, tmp_path):
    run(dict(cfg), ops, tmp_path / "backing")
