"""Property tests: random request sequences against a plain bytearray model.

Any configuration that promises no loss (write control on, or overflow=refuse)
must return the last acknowledged write on every read. With overflow=poison a
read may fail with EIO, but never return other bytes. The accounting invariants
are checked after every step.
"""

from __future__ import annotations

import errno
import os
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cramfs.config import DeviceConfig
from cramfs.device import Device, DeviceError
from cramfs.device.common import MAX_GROWTH as _MAX_GROWTH
from cramfs.units import PAGE_SIZE

from .helpers import check_accounting, discard_model, random_page, text_page

P = PAGE_SIZE
FILE_PAGES = 24


def payload(kind: str, seed: int, length: int) -> bytes:
    if kind == "zero":
        return bytes(length)
    if kind == "same":
        return bytes([seed % 251 + 1]) * length
    page = text_page(seed) if kind == "text" else random_page(seed)
    return (page * (length // P + 1))[:length]


offsets = st.integers(0, FILE_PAGES * P - 1)
lengths = st.sampled_from([1, 100, P - 1, P, P + 1, 2 * P, 3 * P + 17, 8 * P])
kinds = st.sampled_from(["zero", "same", "text", "random"])

op = st.one_of(
    st.tuples(st.just("write"), offsets, lengths, kinds, st.integers(0, 1000)),
    st.tuples(st.just("read"), offsets, lengths),
    st.tuples(st.just("truncate"), st.integers(0, FILE_PAGES * P)),
    st.tuples(st.just("discard"), st.integers(0, FILE_PAGES), st.integers(0, 6)),
    st.tuples(st.just("demote"), st.integers(0, 4)),
    st.tuples(st.just("compact")),
    st.tuples(st.just("idle"), st.sampled_from([None, 0, 5])),
    st.tuples(st.just("recompress"), st.sampled_from(["idle", "huge", "huge_idle"]),
              st.sampled_from([None, 1, 3])),
    st.tuples(st.just("set"), st.sampled_from([
        ("mode", "zswap"), ("mode", "direct"), ("dram", "0"), ("dram", "8K"), ("dram", "64K"),
        ("compressor", "zstd"), ("compressor", "lz4"), ("compressor", "none"),
        ("compressor", "lzo"),
        ("write_control", "on"), ("write_control", "off"),
        ("release_delay", "1"), ("release_delay", "0"),
    ])),
)

configs: st.SearchStrategy[dict[str, Any]] = st.builds(
    dict,
    physical=st.sampled_from([8 * P, 16 * P, 64 * P]),
    write_control=st.booleans(),
    fallback=st.sampled_from(["host", "none"]),
    mode=st.sampled_from(["zswap", "direct"]),
    dram=st.sampled_from([0, 2 * P, 16 * P]),
    overflow=st.sampled_from(["refuse", "poison"]),
)


def run(cfg: dict, ops: list) -> None:
    dev = Device(DeviceConfig(advertised=1 << 20, **cfg))
    dev.set_recomp_algorithm("zstd")
    table = dev.table("f")
    model = bytearray()
    poisoned_possible = cfg["overflow"] == "poison"
    slack = 0
    for o in ops:
        name = o[0]
        if name == "write":
            _, off, length, kind, seed = o
            data = payload(kind, seed, length)
            try:
                n = dev.write(table, off, data)
            except DeviceError as e:
                assert e.errno in (errno.ENOSPC, errno.EIO)
                n = 0
            # all of it, or a short count that stops at a page boundary
            assert n == length or (0 < n < length and (off + n) % P == 0) or n == 0
            if n:
                if off + n > len(model):
                    model.extend(bytes(off + n - len(model)))
                model[off:off + n] = data[:n]
        elif name == "read":
            _, off, length = o
            want = bytes(model[off:off + length]).ljust(length, b"\0")
            try:
                got = dev.read(table, off, length)
            except DeviceError as e:
                assert poisoned_possible and e.errno == errno.EIO
            else:
                assert got == want
        elif name == "truncate":
            size = o[1]
            dev.truncate(table, size)       # never refused: a refusal used to lose pages
            slack = _MAX_GROWTH                 # the rewritten partial page may cost a zspage
            if size <= len(model):
                del model[size:]
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
            dev.recompress(o[1], max_pages=o[2])
        elif name == "set":
            dev.set(*o[1])
        check_accounting(dev, [table])
        if dev.config.write_control or dev.config.overflow == "refuse":
            # only an injected physical shrink could push past capacity here
            assert dev.physical_used <= dev.config.physical + slack
    # final full comparison
    for idx in range(FILE_PAGES + 8):
        want = bytes(model[idx * P:(idx + 1) * P]).ljust(P, b"\0")
        try:
            assert dev.read(table, idx * P, P) == want
        except DeviceError as e:
            assert poisoned_possible and e.errno == errno.EIO


# CRAMFS_EXAMPLES=3000 for a longer search than the suite's
@settings(max_examples=int(os.environ.get("CRAMFS_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(configs, st.lists(op, max_size=40))
def test_reads_return_last_acknowledged_write(cfg, ops):
    run(cfg, ops)
