"""`cramctl`: zramctl for cramfs mounts.

    cramctl [list] [options] [MOUNTPOINT...]  the device table (the default command)
    cramctl -r|--reset MOUNTPOINT...          empty devices, as zramctl --reset does
    cramctl status MOUNTPOINT                 a mount's status file
    cramctl set MOUNTPOINT KNOB VALUE         write a knob, or say why it cannot be
    cramctl watch MOUNTPOINT                  refresh the status until Ctrl-C
    cramctl exporter [--listen ADDR:PORT]     serve every mount's metrics over HTTP

argparse cannot mix an optional positional with subcommands, so cramctl picks
the command itself: a first word that names no command starts `list`, so
`cramctl /mnt/cram` and `cramctl -o DATA,TOTAL` list, as zramctl does, and
`cramctl -r /mnt/cram` resets (so `--raw` has no short form, as in zramctl).
It reads only the control files, so it works on any cramfs mount, whoever
started it; mounts are found in the mount table (type fuse.cramfs).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cli import Parser, UsageError
from .config import SETTINGS, WHILE_EMPTY, DeviceConfig
from .procfs import mounts
from .stats import BY_NAME, BYTES
from .units import format_size

FSTYPE = "fuse.cramfs"
DEFAULT_FSNAME = "cramfs"        # what a mount is called unless fsname= or SOURCE names it
# Knobs of the control directory that are not settings (config.SETTINGS): `set` takes
# these too, every 0644 file but inject and trace, which take commands, not a value.
CONTROL_KNOBS = ("mem_used_max", "recomp_algorithm", "writeback_limit_enable",
                 "writeback_limit")


@dataclass(frozen=True)
class Column:
    name: str
    key: str          # a stat.json key: the statistics table's, a setting, or mountpoint
    help: str

    @property
    def sized(self) -> bool:
        return self.key in BY_NAME and BY_NAME[self.key].unit == BYTES


# zramctl's columns first, under zramctl's names, then cramfs's own
COLUMNS: dict[str, Column] = {c.name: c for c in (
    Column("NAME", "name", "the mount's fsname (its SOURCE), else its mountpoint"),
    Column("MOUNTPOINT", "mountpoint", "where the device is mounted"),
    Column("ALGORITHM", "compressor", "compressor of new pages"),
    Column("DISKSIZE", "advertised", "the advertised capacity"),
    Column("DATA", "logical_stored", "uncompressed size of the stored data"),
    Column("COMPR", "compressed_bytes", "compressed size of the stored data"),
    Column("TOTAL", "physical_used", "memory used, allocator overhead included"),
    Column("ZERO-PAGES", "same_filled_pages", "same-filled pages (zeros and others)"),
    Column("MEM-LIMIT", "physical", "the physical capacity"),
    Column("MEM-USED", "mem_used_max", "peak memory used"),
    Column("MIGRATED", "pages_compacted", "pages given back by compaction"),
    Column("COMP-RATIO", "ratio", "DATA / TOTAL"),
    Column("DANGER", "danger", "ok, warn, critical or full"),
    Column("FILL", "fill", "TOTAL / MEM-LIMIT"),
    Column("REQUIRED", "required_ratio", "the ratio needed to fill DISKSIZE"),
    Column("FALLBACK", "fallback_pages", "refused pages kept in host memory"),
    Column("PROMOTED", "promoted_pages", "pages in the DRAM tier"),
    Column("MODE", "mode", "zswap or direct"),
    Column("PRESSURE", "pressure", "the RFC's pressure, 0-1000"),
    Column("RECOMP", "recompressed_pages", "pages kept in the secondary algorithm"),
    Column("BACKING", "backing_dev", "the backing file written-back pages go to"),
    Column("WB-PAGES", "written_back_pages", "pages in the backing file"),
    Column("BD-READS", "bd_reads", "pages read from the backing file"),
    Column("BD-WRITES", "bd_writes", "pages written to the backing file"),
)}
# zramctl's order: NAME first, MOUNTPOINT last
DEFAULT_COLUMNS = ("NAME", "ALGORITHM", "DISKSIZE", "DATA", "COMPR", "TOTAL", "COMP-RATIO",
                   "DANGER", "MOUNTPOINT")
COMMANDS = ("list", "status", "set", "watch", "exporter")
_DANGER_COLOUR = {"ok": "32", "warn": "33", "critical": "31", "full": "1;41"}


class CtlError(Exception):
    """A failure to show as one line, exit status 1."""


def find_mounts() -> list[str]:
    return [m.mountpoint for m in mounts() if m.fstype == FSTYPE]


def mount_name(mount: str) -> str:
    """zramctl's NAME for a mount: the fsname it was given (`-o fsname=` or mount(8)'s
    SOURCE), which names it in the mount table; the mountpoint where it has the
    default one, which every mount shares."""
    source = next((m.source for m in mounts() if m.mountpoint == mount
                   and m.fstype == FSTYPE), "")
    return source if source and source != DEFAULT_FSNAME else mount


def read_stats(mount: str) -> dict[str, Any]:
    try:
        doc: dict[str, Any] = json.loads((Path(mount) / ".cram" / "stat.json").read_text())
    except OSError as e:
        raise CtlError(f"{mount}: cannot read .cram/stat.json: {e.strerror}") from None
    doc["mountpoint"] = mount
    doc["name"] = mount_name(mount)
    if doc.get("backing_dev") == "set":
        # stat.json only says one is set: its path is in the root-only .cram/backing_dev
        with contextlib.suppress(OSError):
            doc["backing_dev"] = (Path(mount) / ".cram" / "backing_dev").read_text().strip()
    return doc


def _cell(doc: dict[str, Any], col: Column, exact: bool) -> str:
    value = doc.get(col.key)
    if value is None or value == "":
        return "inf" if col.key == "ratio" else "-"
    if col.sized and not exact:
        return format_size(int(value))
    if col.key == "fill":
        return f"{float(value):.1%}"
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def table(docs: list[dict[str, Any]], columns: list[Column], exact: bool, raw: bool,
          headings: bool) -> str:
    rows = [[c.name for c in columns]] if headings else []
    rows += [[_cell(d, c, exact) for c in columns] for d in docs]
    if raw:          # lsblk's --raw: single spaces, no alignment
        return "".join(" ".join(r) + "\n" for r in rows)
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))] if rows else []
    lines = []
    for r in rows:
        cells = [v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in
                 enumerate(zip(r, widths, strict=True))]
        lines.append(" ".join(cells).rstrip())
    return "".join(line + "\n" for line in lines)


def _columns(args: argparse.Namespace) -> list[Column]:
    if args.output_all:
        return list(COLUMNS.values())
    names = [c.strip().upper() for c in args.output.split(",")] if args.output \
        else list(DEFAULT_COLUMNS)
    unknown = [c for c in names if c not in COLUMNS]
    if unknown:
        raise CtlError(f"unknown column {unknown[0]!r}; columns: {', '.join(COLUMNS)}")
    return [COLUMNS[c] for c in names]


def _json_value(doc: dict[str, Any], col: Column, exact: bool) -> Any:
    value = doc.get(col.key)
    if value is None or (col.sized and exact) or not col.sized:
        return value
    return format_size(int(value))


def _chosen(given: list[str]) -> list[str]:
    """The mounts named, each checked to be a cramfs mount; every one if none is."""
    found = find_mounts()
    if not given:
        return found
    chosen = []
    for name in given:
        mount = os.path.abspath(name)
        if mount not in found:
            raise CtlError(f"{name} is not a cramfs mount")
        chosen.append(mount)
    return chosen


def cmd_list(args: argparse.Namespace) -> int:
    if args.reset:
        return cmd_reset(args)
    columns = _columns(args)
    docs = [read_stats(m) for m in _chosen(args.mount)]
    if args.json:
        out = [{c.name.lower(): _json_value(d, c, args.bytes) for c in columns} for d in docs]
        print(json.dumps({"cramfs": out}, indent=2))
    elif docs:
        sys.stdout.write(table(docs, columns, args.bytes, args.raw, not args.noheadings))
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    """zramctl --reset: drop every file and counter of each device named (1 into
    .cram/reset), which the device refuses with EBUSY while a file on it is open, as
    zram refuses to reset a device in use."""
    listing = [f for f in ("bytes", "noheadings", "raw", "json", "output", "output_all")
               if getattr(args, f)]
    if listing:
        raise CtlError(f"--reset takes no listing option (got --{listing[0].replace('_', '-')})")
    if not args.mount:
        raise CtlError("--reset needs a MOUNTPOINT (zramctl --reset needs a device too)")
    for mount in _chosen(args.mount):
        try:
            with open(_ctl_dir(mount) / "reset", "w") as f:
                f.write("1\n")
        except OSError as e:
            if e.errno == errno.EBUSY:
                raise CtlError(f"{mount}: cannot reset: a file on it is open (EBUSY). Close "
                               "it first; for swap on it, swapoff and losetup -d the loop "
                               "device, as zram needs before a reset") from None
            if e.errno in (errno.EACCES, errno.EPERM):
                raise CtlError(f"{mount}: cannot reset: not permitted (root's)") from None
            raise CtlError(f"{mount}: cannot reset: {e.strerror}") from None
    return 0


def _ctl_dir(mount: str) -> Path:
    path = Path(mount) / ".cram"
    if not path.is_dir():
        raise CtlError(f"{mount} is not a cramfs mount")
    return path


def cmd_status(args: argparse.Namespace) -> int:
    sys.stdout.write((_ctl_dir(args.mount) / "status").read_text())
    return 0


def knobs() -> list[str]:
    """Every knob `set` writes: the runtime settings, backing_dev (while the device is
    empty), and the control directory's other knobs."""
    return [*(n for n, s in SETTINGS.items() if s.runtime), *WHILE_EMPTY, *CONTROL_KNOBS]


def check_knob(doc: dict[str, Any], key: str, value: str, mount: str = "MOUNTPOINT") -> None:
    """Say what is wrong before writing: an unknown knob, or the value the daemon would
    refuse, with the same parser and cross-checks (from the mount's current settings).
    The control knobs' values are the daemon's to judge (their parsers need the
    device): cmd_set gives its reason."""
    if key in CONTROL_KNOBS:
        return
    setting = SETTINGS.get(key)
    if setting is None:
        raise CtlError(f"unknown knob {key!r}; knobs: {', '.join(knobs())}")
    if key == "physical":
        raise CtlError(f"physical is a mount option, not a knob; to change the real "
                       f"capacity live (hardware degrading or replaced), inject it: "
                       f"echo 'physical {value}' > {mount}/.cram/inject")
    if not setting.runtime and key not in WHILE_EMPTY:
        raise CtlError(f"{key} is fixed for the life of the mount (a mount option)")
    current = DeviceConfig(**{n: doc[n] for n in SETTINGS if n in doc})
    try:
        current.with_value(key, value)
    except ValueError as e:
        raise CtlError(f"invalid value for {key}: {e}") from None


def _refusal(ctl: Path, key: str) -> str | None:
    """Why the daemon refused the last write to `key`: its `rejected` events line (the
    events file is root's, as writing a knob is)."""
    try:
        lines = (ctl / "events").read_text(errors="replace").splitlines()
    except OSError:
        return None
    mark = f" rejected {key}: "
    return next((ln.split(mark, 1)[1] for ln in reversed(lines) if mark in ln), None)


def cmd_set(args: argparse.Namespace) -> int:
    ctl = _ctl_dir(args.mount)
    check_knob(read_stats(args.mount), args.key, args.value, args.mount)
    try:
        with open(ctl / args.key, "w") as f:
            f.write(args.value + "\n")
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM):
            raise CtlError(f"{args.key}: not permitted (knobs are root's)") from None
        if e.errno == errno.EINVAL:
            why = _refusal(ctl, args.key) or f"refused {args.value!r}"
            raise CtlError(f"invalid value for {args.key}: {why}") from None
        raise CtlError(f"{args.key}: {e.strerror}") from None
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    ctl = _ctl_dir(args.mount)
    try:
        while True:
            lines = []
            for line in (ctl / "status").read_text().splitlines():
                key, _, value = line.partition(": ")
                if key == "danger" and tty:
                    line = f"{key}: \x1b[{_DANGER_COLOUR.get(value, '0')}m{value}\x1b[0m"
                lines.append(line)
            head = f"cramctl watch {args.mount}   {time.strftime('%H:%M:%S')}   (Ctrl-C ends)"
            sys.stdout.write(("\x1b[H\x1b[2J" if tty else "") + head + "\n\n"
                             + "\n".join(lines) + "\n")
            sys.stdout.flush()
            if args.count is not None:
                args.count -= 1
                if args.count <= 0:
                    return 0
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def cmd_exporter(args: argparse.Namespace) -> int:
    from .exporter import serve

    return serve(args.listen)


def _parser(name: str, help_: str, func: Callable[[argparse.Namespace], int]) -> Parser:
    p = Parser(prog=f"cramctl {name}", description=help_)
    p.set_defaults(func=func)
    return p


def build_parsers() -> dict[str, Parser]:
    out: dict[str, Parser] = {}
    p = out["list"] = _parser("list", "List cramfs devices, as zramctl does.", cmd_list)
    p.add_argument("mount", nargs="*", metavar="MOUNTPOINT", help="only these devices")
    p.add_argument("-r", "--reset", action="store_true",
                   help="reset the devices named: drop every file and counter")
    p.add_argument("-b", "--bytes", action="store_true", help="print sizes in bytes")
    p.add_argument("-n", "--noheadings", action="store_true", help="no header line")
    p.add_argument("--raw", action="store_true", help="single spaces, no alignment")
    p.add_argument("-J", "--json", action="store_true", help="JSON output")
    p.add_argument("-o", "--output", metavar="LIST",
                   help="columns, comma-separated: " + ", ".join(COLUMNS))
    p.add_argument("--output-all", action="store_true", help="every column")
    p = out["status"] = _parser("status", "Print a mount's status file.", cmd_status)
    p.add_argument("mount", metavar="MOUNTPOINT")
    p = out["set"] = _parser("set", "Write a knob; says why it cannot be set.", cmd_set)
    p.add_argument("mount", metavar="MOUNTPOINT")
    p.add_argument("key", metavar="KNOB", help="one of: " + ", ".join(knobs()))
    p.add_argument("value", metavar="VALUE")
    p = out["watch"] = _parser("watch", "Refresh the status once a second until Ctrl-C.",
                               cmd_watch)
    p.add_argument("mount", metavar="MOUNTPOINT")
    p.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    p.add_argument("--count", type=int, help=argparse.SUPPRESS)
    p = out["exporter"] = _parser("exporter", "Serve every mounted device's metrics for "
                                  "Prometheus (text or OpenMetrics).", cmd_exporter)
    p.add_argument("--listen", default="127.0.0.1:9431", metavar="ADDR:PORT",
                   help="where to listen (default 127.0.0.1:9431)")
    return out


def usage() -> str:
    return (__doc__ or "").split("\n\n")[1] + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        sys.stdout.write("usage:\n" + usage())
        return 0
    command, rest = (argv[0], argv[1:]) if argv and argv[0] in COMMANDS else ("list", argv)
    try:
        args = build_parsers()[command].parse_args(rest)
    except UsageError as e:
        print(f"cramctl: {e}", file=sys.stderr)
        return 2
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except CtlError as e:
        print(f"cramctl: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:       # `cramctl | head`: before OSError, which it is one of
        os._exit(0)
    except OSError as e:
        print(f"cramctl: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 1
