"""Replaying a trace into a fresh in-process device: no FUSE, no mount, no workload.

The calls a mount recorded are made again, in order, on a new Namespace and
Device built from the trace's settings (with any overridden). The device is
deterministic and runs on the trace's clock (record times drive its access
ages), so with the recorded settings a trace that started on an empty device
ends in exactly the recorded state. With other settings it is a what-if: the
same requests against another capacity, compressor or threshold.

Each call runs at the time it started, and the daemon's housekeeping ticks that
freed delayed pages (`release_delay`) are recorded and made again, so delayed
frees come back when they did. (Not exact: a delayed free falling due in the
microseconds one call takes.)
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import itertools
import json
import os
import tempfile
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import control, hostmem, trace
from ..backing import run_inline
from ..compressors import COMPRESSORS
from ..config import SETTINGS, DeviceConfig
from ..device import Device, DeviceError, Encoded
from ..levels import LEVELS
from ..namespace import Inode, Namespace
from ..pagetable import FALLBACK
from .outcomes import PageEvent, watch


@dataclass
class Sample:
    time: float
    fill: float
    ratio: float
    level: str


@dataclass
class Outcome:
    """What a replay went through."""

    overrides: dict[str, str]
    records: int = 0
    diverged: int = 0                 # calls whose result differs from the recorded one
    skipped: int = 0                  # calls on files the trace never created
    peak_fill: float = 0.0
    seconds_in: dict[str, float] = field(default_factory=dict)
    peak_fallback_pages: int = 0
    refused_pages: int = 0
    failed_writes: int = 0
    overflowed: bool = False
    duration: float = 0.0             # the recorded run's span
    elapsed: float = 0.0              # this replay's wall time
    mm_stat: str = ""
    recorded_mm_stat: str | None = None
    samples: list[Sample] = field(default_factory=list)

    @property
    def exact(self) -> bool | None:
        """Did the replay end in the recorded mm_stat? None if the trace has no end."""
        if self.recorded_mm_stat is None:
            return None
        return self.mm_stat == self.recorded_mm_stat


def config_of(header: dict[str, Any], overrides: dict[str, str] | None = None) -> DeviceConfig:
    """The trace's settings, parsed as mount options are, with `overrides` applied."""
    settings = {**header["settings"], **(overrides or {})}
    unknown = [n for n in settings if n not in SETTINGS]
    if unknown:
        raise ValueError(f"unknown setting {unknown[0]!r}")
    values = {name: SETTINGS[name].parse(text) for name, text in settings.items()}
    if overrides and "physical" in overrides and "fallback_limit" not in overrides:
        values["fallback_limit"] = -1    # as a mount with that physical would have it
    config = DeviceConfig(**values)
    config.check()
    return config


def default_step(duration: float, samples: int) -> float:
    """A sample step that gives a trace of `duration` recorded seconds about `samples`
    samples, whatever its length: a fixed step draws a 0.3 s trace as one point and a
    long one as thousands. 0 for a trace with no length: every call is a sample."""
    return duration / samples if duration > 0 else 0.0


def replay(header: dict[str, Any], records: Iterable[trace.Record],
           overrides: dict[str, str] | None = None, every: float = 0.5,
           on_sample: Callable[[Sample], None] | None = None,
           observe: Callable[[PageEvent], None] | None = None) -> Outcome:
    """Make the recorded calls again on a fresh device; sample it every `every` seconds
    of recorded time, and once more at the end of the trace, so the timeline always
    reaches the state the replay ends in. `observe` gets every page's transition
    (outcomes.py), at some cost."""
    hostmem.tune_allocator()           # as the daemon does: the same pages, faster
    started = time.perf_counter()
    clock = [float(header.get("device_age", 0.0))]
    base = clock[0]
    config = config_of(header, overrides)
    with _scratch_backing(config, header) as config:
        return _replay(header, records, config, overrides, every, on_sample, clock, base,
                       started, observe)


@contextlib.contextmanager
def _scratch_backing(config: DeviceConfig, header: dict[str, Any],
                     ) -> Generator[DeviceConfig, None, None]:
    """A replay never writes to the recorded backing file: it gets a sparse scratch file
    of the recorded size (or of the overriding path's), gone afterwards."""
    if not config.backing_dev:
        yield config
        return
    size = header.get("backing_size") or 0
    if config.backing_dev != header["settings"].get("backing_dev"):
        size = os.stat(config.backing_dev).st_size
    fd, path = tempfile.mkstemp(prefix="cramfs-replay-", dir="/var/tmp")
    try:
        os.ftruncate(fd, size or 1 << 40)
        os.close(fd)
        yield dataclasses.replace(config, backing_dev=path)
    finally:
        os.unlink(path)


def _replay(header: dict[str, Any], records: Iterable[trace.Record], config: DeviceConfig,
            overrides: dict[str, str] | None, every: float,
            on_sample: Callable[[Sample], None] | None, clock: list[float], base: float,
            started: float, observe: Callable[[PageEvent], None] | None) -> Outcome:
    monotonic = lambda: clock[0]  # noqa: E731
    dev = Device(config, monotonic=monotonic)
    if observe is not None:
        watch(dev, observe, base)
    ns = Namespace(dev)
    out = Outcome(dict(overrides or {}))
    inodes: dict[int, Inode] = {}
    last_t, next_sample = 0.0, 0.0
    # The per-record bookkeeping below runs 50,000 times a second of replay: the level
    # comes from the device's own change notice rather than being asked each time.
    level = [dev.danger]

    def changed(what: str) -> None:
        if what == "danger":
            level[0] = dev.danger
            if level[0] == LEVELS[-1]:
                out.overflowed = True

    dev.on_change(changed)
    seconds_in = out.seconds_in
    peak_fill, peak_fallback = 0.0, 0
    for r in records:
        t = r.time
        if r.op == trace.STOP:
            out.recorded_mm_stat = json.loads(r.payload).get("mm_stat")
            out.duration = t
            break
        clock[0] = base + t
        seconds_in[level[0]] = seconds_in.get(level[0], 0.0) + t - last_t
        last_t = t
        out.records += 1
        inode = inodes.get(r.ino) if r.ino else None
        if r.ino and inode is None and r.op != trace.CREATE:
            out.skipped += 1
            continue
        try:
            result = _apply(ns, r, inode, inodes)
            if dev.backing is not None:
                dev.settle()
        except DeviceError as e:
            result = -e.errno
        if result != r.result:
            out.diverged += 1
        fill = dev.fill
        if fill > peak_fill:
            peak_fill = fill
        if dev.pages[FALLBACK] > peak_fallback:
            peak_fallback = dev.pages[FALLBACK]
        if t >= next_sample:
            s = Sample(t, round(fill, 4), dev.ratio, level[0])
            out.samples.append(s)
            if on_sample is not None:
                on_sample(s)
            next_sample = t + every
    out.duration = last_t if out.recorded_mm_stat is None else out.duration
    if out.records and (not out.samples or out.samples[-1].time < out.duration):
        s = Sample(out.duration, round(dev.fill, 4), dev.ratio, level[0])
        out.samples.append(s)
        if on_sample is not None:
            on_sample(s)
    out.peak_fill, out.peak_fallback_pages = peak_fill, peak_fallback
    c = dev.counters
    out.refused_pages = c.reject_write_control
    out.failed_writes = c.failed_writes
    out.overflowed = out.overflowed or bool(c.poisoned_pages or c.dropped_writes)
    out.mm_stat = dev.mm_stat()
    out.elapsed = time.perf_counter() - started
    dev.close()
    return out


def _apply(ns: Namespace, r: trace.Record, inode: Inode | None,
           inodes: dict[int, Inode]) -> int:
    """One recorded call; its result as recorded (bytes done, or 0)."""
    op = r.op
    if op == trace.WRITE:
        assert inode is not None
        if r.pages is not None:
            encoded = _as_encoded(ns.device, r)
            if encoded is not None:
                pages = r.pages
                return ns.write_encoded(inode, r.a, encoded,
                                        lambda k: trace.decode_page(pages[k]))
        return ns.write(inode, r.a, r.data)
    if op == trace.READ:
        assert inode is not None
        return ns.fault(inode, r.a, r.b)
    if op == trace.CREATE:
        made = ns.create(r.text(), r.a & 0xFFFF, r.a >> 16, r.b)
        inodes[r.ino] = made
        return 0
    if op == trace.OPENED:
        assert inode is not None
        ns.opened(inode)
    elif op == trace.RELEASED:
        assert inode is not None
        ns.released(inode)
    elif op == trace.RESIZE:
        assert inode is not None
        ns.resize(inode, r.a)
    elif op == trace.DISCARD:
        assert inode is not None
        return ns.discard(inode, r.a, r.b)
    elif op == trace.UNLINK:
        ns.unlink(r.text())
    elif op == trace.RENAME:
        old, new = r.text().split("\0", 1)
        ns.rename(old, new, bool(r.a), bool(r.b))
    elif op == trace.RESET:
        ns.reset()
    elif op == trace.TICK:
        ns.device.tick()
    elif op == trace.CONTROL:
        name, value = r.payload.split(b"\0", 1)
        attr = control.ATTRIBUTES.get(name.decode())
        if attr is None or attr.store is None:
            raise DeviceError(errno.EINVAL, f"no control file {name!r}")
        run_inline(control.store(ns, attr, value))
    return 0


_NONE = COMPRESSORS["none"].ident


def _as_encoded(dev: Device, r: trace.Record) -> list[Encoded] | None:
    """A recorded write's pages as the device's encoder would give them now, where the
    trace kept them under its compressor (lz4 always; others if the recording was
    asked to); None: encode them again."""
    pages = r.pages
    assert pages is not None
    compressor = dev.config.compressor
    blocks: Sequence[bytes | None] | None
    if compressor == "lz4":
        blocks = [body if tag == trace.LZ4_TAG else None for tag, body in pages]
    elif compressor == "none":        # nothing is shrunk: every other page is stored whole
        blocks = [None] * len(pages)
    else:
        blocks = r.also.get(compressor) if r.also is not None else None
        if blocks is None:
            return None
    huge, same = dev.config.huge_threshold, trace.SAME_TAG
    ident = COMPRESSORS[compressor].ident
    return [(body, b"", 0, False) if tag == same
            else (None, block, ident, False) if block is not None and len(block) < huge
            else (None, trace.decode_page((tag, body)), _NONE, True)
            for (tag, body), block in zip(pages, blocks, strict=True)]


def grid(options: dict[str, list[str]]) -> list[dict[str, str]]:
    """Every combination of the given values, in the order given."""
    names = list(options)
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(options[n] for n in names))]
