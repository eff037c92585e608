"""The `.cram/` control files: one table of small show/store pairs.

Modelled on zram_drv.c's attribute table. A file with only `show` is read-only
(0444), one with only `store` is write-only (0200), and a knob has both
(0644). Values follow sysfs habits: one value per file, a trailing newline,
EINVAL with a reason (also written to `events`) for input that does not parse.
Nothing here knows about FUSE; the adapter serves these as files. The input rules
the stores share are in controlinput.py; `.cram/trace`'s store and show, and the
recording's start and stop, in controltrace.py.
"""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Callable
from dataclasses import dataclass

from . import backing, controlinput, hostmem, metrics, procfs, trace
from .backing import IoJob
from .compressors import COMPRESSORS
from .config import SETTINGS
from .controltrace import check_trace, show_trace, start_trace, stop_trace, store_trace
from .device import DeviceError
from .namespace import Inode, Namespace
from .pool import ClassStats
from .stats import BYTES, FRACTION, IO_STAT, MM_STAT, NUMERIC, STATS, Stat
from .units import PAGE_SIZE, format_size, parse_int, parse_size, shown

# start_trace, stop_trace and check_trace live in controltrace.py; the daemon and the
# tests reach them here, with the table
__all__ = ["ATTRIBUTES", "Attribute", "Show", "Store", "check_trace", "file_xattrs",
           "start_trace", "stop_trace", "store"]

Show = Callable[[Namespace], str]
# A store either finishes at once or returns the backing-file I/O it needs, for the
# caller to run off the request loop (fuse_ops) or inline (backing.run_inline).
Store = Callable[[Namespace, str], IoJob | None]


@dataclass(frozen=True)
class Attribute:
    name: str
    show: Show | None = None
    store: Store | None = None
    stream: bool = False   # regenerate on every read, for `tail -f`
    lines: bool = False    # takes several lines in one write (discard, inject)
    private: bool = False  # root only: it names files, which other users may not see
    help: str = ""         # what it holds or takes, for docs/reference.md (markdown)

    @property
    def mode(self) -> int:
        if self.private:
            return 0o600 if self.store else 0o400
        if self.show and self.store:
            return 0o644
        return 0o444 if self.show else 0o200


def _fmt(value: float | int | str) -> str:
    if isinstance(value, float):
        return "inf" if value == float("inf") else f"{value:.2f}"
    return str(value)


def _shown(stat: Stat, value: float | int | str) -> str:
    """A value as status shows it: sizes also in zramctl's units, fill in percent."""
    if stat.unit == BYTES:
        return f"{value} ({format_size(int(value))})"
    if stat.unit == FRACTION:
        return f"{float(value):.1%}"
    return _fmt(value)


def _status(ns: Namespace) -> str:
    dev = ns.device
    s = ns.stats()
    lines = [f"{st.name}: {_shown(st, s[st.name])}" for st in STATS if st.status]
    for name in ("write_control", "fallback", "fallback_limit", "reclaim"):
        setting = dev.config.show(name)
        lines.append(f"{name}: {setting}" if not setting.isdigit()
                     else f"{name}: {setting} ({format_size(int(setting))})")
        if name == "write_control" and dev.refusing:
            # statfs then reports no blocks available (namespace.statvfs): say why df's
            # Use% reads 100% at a fill of 90%
            lines[-1] += " (refusing new pages now: df shows Avail 0, Use% 100%)"
    lines.append(f"backing_dev: {_backing_shown(ns)}")
    if ns.kernel_discard is not None:
        lines.append("discard: " + ("fallocate (punch hole, zero range, blkdiscard, swapon "
                                    "--discard)" if ns.kernel_discard else
                                    "unavailable (this pyfuse3 has no fallocate; only "
                                    ".cram/discard frees pages)"))
    for name in ("fallback_limit_hit", "promotions_skipped", *(
            ("bd_reads", "bd_writes", "bd_failed", "writeback_fallback", "reclaim_written",
             "reclaim_failed") if dev.backing is not None or dev.config.reclaim != "off"
            else ())):
        lines.append(f"{name}: {s[name]}")
    over = dev.overflow_at_ratio()
    if over:
        lines.append(
            f"warning: at ratio {dev.ratio:.2f} (needed {s['required_ratio']:.2f}) filling the "
            f"advertised {format_size(dev.config.advertised)} would leave the device {over} "
            f"physical bytes short ({format_size(over)})")
    if 0 < dev.ratio < 1:
        lines.append("note: ratio below 1: the few pages stored hold whole zspages (a zspage "
                     "is 1-8 pages, zsmalloc's unit); it rises as the zspages fill")
    faults = dev.active_faults()
    if faults:
        lines.append(f"injected: {', '.join(faults)}")
    return "\n".join(lines) + "\n"


def _backing_shown(ns: Namespace) -> str:
    """Whether a backing file is set and its size, for every user: its path is only in
    the root-only `.cram/backing_dev` (a path tells others where swapped-out memory
    lands)."""
    b = ns.device.backing
    if b is None:
        return "none"
    size = b.blocks * PAGE_SIZE
    return f"set, {size} bytes ({format_size(size)})"


def _stat(ns: Namespace) -> str:
    s = ns.stats()
    return "".join(f"{st.name} {_fmt(s[st.name])}\n" for st in NUMERIC)


def _stat_json(ns: Namespace) -> str:
    """Settings, then every statistic, typed: numbers are numbers; mm_stat and io_stat
    are objects with zram's field names."""
    dev = ns.device
    doc: dict[str, object] = {k: getattr(dev.config, k) for k in SETTINGS}
    # set or none, never the path: that is in the root-only .cram/backing_dev
    doc["backing_dev"] = "none" if dev.backing is None else "set"
    doc["backing_size"] = dev.backing.blocks * PAGE_SIZE if dev.backing is not None else 0
    s = ns.stats()
    doc.update({st.name: s[st.name] for st in STATS})
    if doc["ratio"] == float("inf"):
        doc["ratio"] = None   # JSON has no infinity; null means "no physical usage yet"
    doc["injected"] = dev.active_faults()
    doc["mm_stat"] = dict(zip(MM_STAT, map(int, dev.mm_stat().split()), strict=True))
    doc["io_stat"] = dict(zip(IO_STAT, map(int, dev.io_stat().split()), strict=True))
    return json.dumps(doc, indent=1) + "\n"


def _metrics(ns: Namespace) -> str:
    """Prometheus text exposition 0.0.4, built as the exporter builds it (metrics.py)."""
    return metrics.exposition(ns.stats())


def _knob(name: str, more: str = "") -> Attribute:
    return Attribute(name, lambda ns: ns.device.config.show(name) + "\n",
                     lambda ns, text: ns.device.set(name, text),
                     help=f"the mount option, live: {SETTINGS[name].help}{more}")


def _mount_only(name: str, more: str = "") -> Attribute:
    return Attribute(name, lambda ns: ns.device.config.show(name) + "\n",
                     help=f"the mount option's current value{more}")


def store(ns: Namespace, attr: Attribute, data: bytes) -> IoJob | None:
    """One write() to a control file: one value, taken whole or not at all, as sysfs
    takes a store. Input over a page is refused before anything parses it. Returns
    the backing-file I/O the store still needs, if any."""
    assert attr.store is not None
    if len(data) > PAGE_SIZE:
        ns.device.reject(attr.name, f"input of {len(data)} bytes; at most {PAGE_SIZE}")
    text = data.decode("utf-8", "surrogateescape")
    rec = ns.recorder
    if rec is None or attr.name == "trace":
        return attr.store(ns, controlinput.value(ns, attr, text))
    payload = f"{attr.name}\0{text}".encode("utf-8", "surrogateescape")
    # recorded as one control write, not as the namespace calls it makes (reset, discard)
    ns.recorder = None
    try:
        job = attr.store(ns, controlinput.value(ns, attr, text))
    except DeviceError as e:
        rec.record(trace.CONTROL, result=-e.errno, payload=payload)
        raise
    finally:
        if ns.recorder is None:
            ns.recorder = rec
    rec.record(trace.CONTROL, payload=payload)
    return job


def _store_reset(ns: Namespace, text: str) -> None:
    controlinput.expect(ns, "reset", text, "1", "reset")
    try:
        ns.reset()
    except DeviceError as e:
        ns.device.events.add("rejected", f"reset: {e}")
        raise


def _store_mem_used_max(ns: Namespace, text: str) -> None:
    controlinput.expect(ns, "mem_used_max", text, "0", "reset the peak")
    ns.device.reset_peak()


def _store_discard(ns: Namespace, text: str) -> None:
    """`FILE OFFSET LENGTH`, one per line: every line is checked before any applies."""
    todo = []
    for line in text.split("\n"):
        parts = line.rsplit(" ", 2)
        if len(parts) != 3:
            ns.device.reject("discard", f"expected FILE OFFSET LENGTH, got {shown(line)}")
        name, off, length = parts
        try:
            # past the end of the file it does nothing, as a punch hole there
            todo.append((name, ns.lookup(name), parse_size(off), parse_size(length)))
        except (ValueError, DeviceError) as e:
            ns.device.reject("discard", str(e))
    if not todo:
        ns.device.reject("discard", "expected FILE OFFSET LENGTH")
    for name, inode, start, size in todo:
        released = ns.discard(inode, start, size)
        ns.device.events.add("discard", f"{shown(name, 64)} {start} {size}: {released} pages "
                             "released")


def _store_demote(ns: Namespace, text: str) -> None:
    count = controlinput.all_or_number(ns, "demote", text, "a page count")
    done = ns.device.demote(count)
    ns.device.events.add("demote", f"{text}: {done} pages demoted")


def _store_idle(ns: Namespace, text: str) -> None:
    ns.device.mark_idle(controlinput.all_or_number(ns, "idle", text, "an age in seconds"))


def _store_recomp_algorithm(ns: Namespace, text: str) -> None:
    args = controlinput.keywords(ns, "recomp_algorithm", text, ("algo", "priority"))
    if "algo" not in args:
        ns.device.reject("recomp_algorithm", "expected algo=NAME [priority=1]")
    controlinput.priority(ns, "recomp_algorithm", args)
    ns.device.set_recomp_algorithm(args["algo"])


def _show_recomp_algorithm(ns: Namespace) -> str:
    algo = ns.device.recomp_algorithm        # none chosen yet: no brackets
    return "#1: " + " ".join(f"[{n}]" if n == algo else n for n in COMPRESSORS
                             if n != "none") + "\n"


def _store_recompress(ns: Namespace, text: str) -> None:
    args = controlinput.keywords(ns, "recompress", text,
                                 ("type", "max_pages", "threshold", "priority"))
    kind = args.get("type")
    if kind not in ("idle", "huge", "huge_idle"):
        ns.device.reject("recompress", "expected type=idle|huge|huge_idle "
                         "[max_pages=N] [threshold=BYTES]")
    controlinput.priority(ns, "recompress", args)
    try:
        max_pages = parse_int(args["max_pages"]) if "max_pages" in args else None
        threshold = parse_size(args["threshold"]) if "threshold" in args else 0
    except ValueError as e:
        ns.device.reject("recompress", str(e))
    ns.device.recompress(kind, max_pages, threshold)


def _store_backing_dev(ns: Namespace, text: str) -> IoJob | None:
    """A path (opened off the request loop: it may name a file on this very mount,
    whose lookup only this daemon can answer) or `none`."""
    dev = ns.device
    try:
        path = SETTINGS["backing_dev"].parse(text)
    except ValueError as e:
        dev.reject("backing_dev", str(e))
    mp = ns.mountpoint
    if path and mp and (os.path.normpath(path) + "/").startswith(os.path.normpath(mp) + "/"):
        dev.reject("backing_dev", f"{shown(path)} is on this cramfs mount")
    if not path:
        dev.set_backing("", None)
        return None

    def open_it() -> tuple[int, int] | Exception:
        try:
            fd, blocks = backing.open_file(path)
        except (OSError, ValueError) as e:
            return e
        try:
            if mp and os.fstat(fd).st_dev == procfs.mount_dev(mp):
                os.close(fd)
                return ValueError(f"{shown(path)} is on this cramfs mount")
        except OSError as e:
            os.close(fd)
            return e
        return fd, blocks

    def opened(result: tuple[int, int] | Exception) -> None:
        if isinstance(result, OSError) and result.errno == errno.EBUSY:
            dev.events.add("rejected", f"backing_dev: {shown(path)} {result.strerror}")
            raise DeviceError(errno.EBUSY, f"backing_dev: {shown(path)} {result.strerror}")
        if isinstance(result, OSError):
            dev.reject("backing_dev", f"cannot open {shown(path)}: {result.strerror}")
        if isinstance(result, Exception):
            dev.reject("backing_dev", str(result))
        dev.set_backing(path, result)

    return IoJob(open_it, opened)


def _store_writeback(ns: Namespace, text: str) -> IoJob | None:
    """zram's writeback types, or `page=FILE:N` where zram takes page_index=N."""
    arg = text
    if arg.startswith("page="):
        name, colon, page = arg[5:].rpartition(":")
        try:
            if not colon or not name:
                raise ValueError(f"expected page=FILE:N, got {shown(arg)}")
            target = (ns.lookup(name).table, controlinput.page_index(ns, name, page))
        except (ValueError, DeviceError) as e:
            ns.device.reject("writeback", str(e))
        return ns.device.writeback("page", target)
    return ns.device.writeback(arg)


def _store_wb_limit_enable(ns: Namespace, text: str) -> None:
    arg = text
    if arg not in ("0", "1"):
        ns.device.reject("writeback_limit_enable", f"expected 0 or 1, got {shown(arg)}")
    ns.device.wb_limit_enable = arg == "1"
    ns.device.events.add("knob", f"writeback_limit_enable={arg}")


def _store_wb_limit(ns: Namespace, text: str) -> None:
    try:
        pages = parse_int(text)
    except ValueError as e:
        ns.device.reject("writeback_limit", f"{e}; expected a page count")
    ns.device.wb_limit = pages
    ns.device.events.add("knob", f"writeback_limit={pages}")


def _store_compact(ns: Namespace, text: str) -> None:
    controlinput.expect(ns, "compact", text, "1", "compact")
    ns.device.compact()
    hostmem.trim()


def _show_pool(ns: Namespace) -> str:
    """zsmalloc's debugfs `classes` table, one line per size class in use."""
    stats: list[ClassStats] = getattr(ns.device.pool, "class_stats", lambda: [])()
    head = (f"{'class':>5} {'size':>5} {'obj_allocated':>13} {'obj_used':>9} "
            f"{'pages_used':>10} {'pages_per_zspage':>16} {'freeable':>8}\n")
    rows = [f"{c.index:>5} {c.size:>5} {c.objs_allocated:>13} "
            f"{c.objs_used:>9} {c.pages_used:>10} {c.pages_per_zspage:>16} "
            f"{c.freeable_pages:>8}\n" for c in stats]
    total = (f"{'Total':>5} {'':>5} {sum(c.objs_allocated for c in stats):>13} "
             f"{sum(c.objs_used for c in stats):>9} {sum(c.pages_used for c in stats):>10} "
             f"{'':>16} {sum(c.freeable_pages for c in stats):>8}\n")
    return head + "".join(rows) + total


def _store_inject(ns: Namespace, text: str) -> None:
    """One command per line; all of them are checked before any is applied."""
    actions = [controlinput.parse_inject(ns, line) for line in text.split("\n")]
    if not actions:
        ns.device.reject("inject", "no command given")
    for act in actions:
        act()


def _show_inject(ns: Namespace) -> str:
    faults = ns.device.active_faults()
    return "\n".join(faults) + "\n" if faults else "none\n"


def _show_events(ns: Namespace) -> str:
    return ns.device.events.text().decode()


_SEMANTICS = "semantics.md"     # the page the help text's links point at, in docs/
_KNOB_MORE = {"compressor": "; new pages use the new algorithm, old ones keep theirs"}

ATTRIBUTES: dict[str, Attribute] = {a.name: a for a in (
    Attribute("status", _status, help="human summary, `key: value` per line, plus a ratio "
              "warning and active faults"),
    Attribute("ratio", lambda ns: _fmt(float(ns.device.stats()["ratio"])) + "\n",
              help="logical_stored / physical_used, 2 decimals (`inf` if only same-filled "
              "pages)"),
    Attribute("required_ratio", lambda ns: _fmt(float(ns.device.stats()["required_ratio"]))
              + "\n", help="advertised / physical"),
    Attribute("effective_capacity", lambda ns: f"{ns.device.stats()['effective_capacity']}\n",
              help="physical × ratio, bytes (advertised while nothing is stored)"),
    Attribute("danger", lambda ns: ns.device.danger + "\n",
              help="`ok`, `warn`, `critical` or `full`; `poll()`: POLLPRI on change "
              f"([Danger levels]({_SEMANTICS}#danger-levels))"),
    Attribute("pressure", lambda ns: f"{ns.device.pressure}\n",
              help="the RFC's pressure (`cram_set_pressure`), 0-1000 in steps of 50; "
              "`poll()`: POLLPRI only when the step changes "
              f"([Pressure]({_SEMANTICS}#pressure))"),
    Attribute("mm_stat", lambda ns: ns.device.mm_stat() + "\n",
              help="zram's fields: " + " ".join(MM_STAT)),
    Attribute("io_stat", lambda ns: ns.device.io_stat() + "\n",
              help="zram's fields: " + " ".join(IO_STAT)),
    Attribute("stat", _stat, help="every counter and gauge, `name value` per line"),
    Attribute("stat.json", _stat_json, help="settings, counters, gauges, mm_stat and io_stat "
              "as one JSON object"),
    Attribute("events", _show_events, stream=True, private=True,
              help="timestamped log of level changes, refusals, poison, drops, knob changes, "
              "faults; `tail -f` works. It names files, so with `allow_other` other users may "
              "not read it. File names and rejected input appear quoted (`'a\\nb'`), so no "
              "name can forge a line; lines are capped at 512 bytes, and a full log drops its "
              "oldest eighth"),
    Attribute("metrics", _metrics,
              help="Prometheus text format: `cramfs_` prefix, byte gauges end in `_bytes`, "
              "counters in `_total`, plus `cramfs_danger_level` and "
              f"`{metrics.INFO_NAME}{{{','.join(metrics.INFO_LABELS)}}}`; the exporter's "
              "families and labels ([Metrics for Prometheus](cramctl.md#metrics-for-prometheus))"),
    Attribute("comp_algorithm", lambda ns: ns.device.comp_algorithm() + "\n",
              help="zram style, zram's algorithms in its order, then cramfs's own: "
              "`lzo-rle lzo [lz4] zstd none`"),
    _mount_only("advertised"),
    _mount_only("physical", " (changed live by `physical SIZE` into `inject`)"),
    _mount_only("huge_threshold"),
    _mount_only("chain_size"),
    _mount_only("engine"),
    *(_knob(s.name, _KNOB_MORE.get(s.name, "")) for s in SETTINGS.values() if s.runtime),
    Attribute("mem_used_max", lambda ns: f"{ns.device.mem_used_max}\n", _store_mem_used_max,
              help="peak physical_used; write `0` to reset"),
    Attribute("reset", store=_store_reset,
              help="`1` drops every file and counter; EBUSY while a file is open. The kernel "
              "is told to forget the names (asynchronously); until it has, an open through a "
              "cached name gets ESTALE, so the kernel looks the name up again and `echo x > "
              "name` creates a new file instead of writing into a freed one"),
    Attribute("discard", store=_store_discard, lines=True,
              help="`FILE OFFSET LENGTH` releases the whole pages inside the range; several "
              "lines in one write are all checked before any applies "
              f"([Discard]({_SEMANTICS}#discard))"),
    Attribute("demote", store=_store_demote,
              help="`N` or `all`: demote that many promoted pages now, coldest first"),
    Attribute("compact", store=_store_compact,
              help="`1`: move objects out of sparse zspages and free them (mm_stat's "
              "pages_compacted counts them), then give the daemon's free memory back to the "
              "kernel: emptied zspages kept for reuse, memory populated ahead of use, and free "
              "heap (`malloc_trim`, with the memory lock lifted for that moment)"),
    Attribute("idle", store=_store_idle,
              help="`all`, or an age in seconds: mark pages idle ([Idle pages and "
              f"recompression]({_SEMANTICS}#idle-pages-and-recompression))"),
    Attribute("recomp_algorithm", _show_recomp_algorithm, _store_recomp_algorithm,
              help="`algo=NAME [priority=1]`: the secondary algorithm"),
    Attribute("recompress", store=_store_recompress,
              help="`type=idle\\|huge\\|huge_idle [max_pages=N] [threshold=BYTES]`"),
    Attribute("pool", _show_pool,
              help="zsmalloc's debugfs `classes` table: class, size, obj_allocated, obj_used, "
              "pages_used, pages_per_zspage, freeable"),
    Attribute("backing_dev", lambda ns: ns.device.config.show("backing_dev") + "\n",
              _store_backing_dev, private=True,
              help="the backing file's path or `none`; writable only while the device is "
              "empty (EBUSY), never a file on this mount, through a symlink, with a second "
              "link or a foreign owner (EINVAL), nor one another mount holds (EBUSY)"),
    Attribute("writeback", store=_store_writeback,
              help="`idle`, `huge`, `huge_idle`, `incompressible` or `page=FILE:N` "
              f"([Writeback]({_SEMANTICS}#writeback-to-a-backing-file))"),
    Attribute("writeback_limit_enable", lambda ns: f"{int(ns.device.wb_limit_enable)}\n",
              _store_wb_limit_enable, help="`0` or `1`, as zram"),
    Attribute("writeback_limit", lambda ns: f"{ns.device.wb_limit}\n", _store_wb_limit,
              help="pages writeback may still write while enabled; counts down"),
    Attribute("bd_stat", lambda ns: ns.device.bd_stat() + "\n",
              help="zram's fields: bd_count bd_reads bd_writes, in pages"),
    Attribute("inject", _show_inject, _store_inject, lines=True,
              help="fault injection, one command per line (below), all checked before any "
              "applies; reading lists active faults"),
    Attribute("trace", show_trace, store_trace, private=True,
              help="`start /ABSOLUTE/PATH [compressors=zstd,lzo]` records every call and "
              "control write into PATH, a new file (mode 0600), keeping each written page also "
              "as the listed compressors encode it; `stop` ends it (EINVAL if not recording); "
              "reading: `off`, `recording PATH N events [(pages also as ...)]` or `stopped: WHY "
              "(...)`. The file is made at the write, which fails with the reason and an events "
              "line: EEXIST for an existing file, ENOENT for a missing parent, ELOOP for a "
              "symlink at any component, EINVAL for a relative path, a NUL byte, a path on this "
              "mount or a compressor it cannot keep, EACCES as the filesystem says, EBUSY while "
              "recording ([Trace, replay and what-if](trace.md))"),
)}


def file_xattrs(ns: Namespace, inode: Inode) -> dict[str, str]:
    """Per-file accounting under the three charging models the RFC discusses.

    full: the pages the device holds for the file, whole (same-filled ones included).
    compressed: the file's own objects, each at its size class (same-filled pages
    cost nothing, as in zram); all files' compressed charges plus the device's
    unattributed_bytes make physical_used.
    scaled: the fuzzy charge, full divided by the device-wide ratio; never above full.
    Promoted pages sit in host DRAM: no model charges them to the device."""
    t = inode.table
    full = t.stored_pages * PAGE_SIZE
    ratio = ns.device.ratio
    scaled = full if ratio <= 1 else int(full / ratio)
    return {
        "user.cram.stored_pages": str(t.stored_pages),
        "user.cram.physical_bytes": str(t.physical_bytes),
        "user.cram.promoted_pages": str(t.promoted_pages),
        "user.cram.charge_full": str(full),
        "user.cram.charge_compressed": str(t.physical_bytes),
        "user.cram.charge_scaled": str(scaled),
    }
