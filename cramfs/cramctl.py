"""`cramctl`: zramctl for cramfs mounts.

Reads only the control files, so it works on any cramfs mount, whoever started
it. Mounts are found through /proc/self/mountinfo (fstype fuse.cramfs).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from .units import format_size

FSTYPE = "fuse.cramfs"

# column -> (stat.json key, is a byte count)
COLUMNS: dict[str, tuple[str, bool]] = {
    "MOUNTPOINT": ("mountpoint", False),
    "ADVERTISED": ("advertised", True),
    "PHYSICAL": ("physical", True),
    "DATA": ("logical_stored", True),
    "COMPR": ("compressed_bytes", True),
    "TOTAL": ("physical_used", True),
    "RATIO": ("ratio", False),
    "DANGER": ("danger", False),
    "MODE": ("mode", False),
    "ALGORITHM": ("compressor", False),
}
_DANGER_COLOUR = {"ok": "32", "warn": "33", "critical": "31", "full": "1;41"}


class CtlError(Exception):
    """A failure to show as one line, exit status 1."""


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal
    return field.encode().decode("unicode_escape") if "\\" in field else field


def find_mounts(mountinfo: str = "/proc/self/mountinfo") -> list[str]:
    mounts = []
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == FSTYPE:
                mounts.append(_unescape(left.split()[4]))
    return mounts


def read_stats(mount: str) -> dict[str, Any]:
    try:
        doc = json.loads((Path(mount) / ".cram" / "stat.json").read_text())
    except OSError as e:
        raise CtlError(f"{mount}: cannot read .cram/stat.json: {e.strerror}") from None
    doc["mountpoint"] = mount
    return doc


def _cell(doc: dict[str, Any], column: str, raw: bytes | bool) -> str:
    key, sized = COLUMNS[column]
    value = doc.get(key)
    if value is None:
        return "-" if key != "ratio" else "inf"
    if sized and not raw:
        return format_size(int(value))
    if key == "ratio":
        return f"{float(value):.2f}"
    return str(value)


def table(docs: list[dict[str, Any]], columns: list[str], raw: bool) -> str:
    rows = [columns] + [[_cell(d, c, raw) for c in columns] for d in docs]
    widths = [max(len(r[i]) for r in rows) for i in range(len(columns))]
    lines = []
    for r in rows:
        cells = [v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in
                 enumerate(zip(r, widths, strict=True))]
        lines.append(" ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def cmd_list(args: argparse.Namespace) -> int:
    columns = [c.strip().upper() for c in args.output.split(",")] if args.output \
        else list(COLUMNS)
    unknown = [c for c in columns if c not in COLUMNS]
    if unknown:
        raise CtlError(f"unknown column {unknown[0]!r}; columns: {', '.join(COLUMNS)}")
    docs = [read_stats(m) for m in find_mounts()]
    if args.json:
        out = [{c.lower(): d.get(COLUMNS[c][0]) for c in columns} for d in docs]
        print(json.dumps({"cramfs": out}, indent=2))
    elif docs:
        sys.stdout.write(table(docs, columns, args.bytes))
    return 0


def _ctl_path(mount: str, name: str) -> Path:
    path = Path(mount) / ".cram" / name
    if not (Path(mount) / ".cram").is_dir():
        raise CtlError(f"{mount} is not a cramfs mount")
    return path


def cmd_status(args: argparse.Namespace) -> int:
    sys.stdout.write(_ctl_path(args.mount, "status").read_text())
    return 0


def cmd_set(args: argparse.Namespace) -> int:
    path = _ctl_path(args.mount, args.key)
    try:
        with open(path, "w") as f:
            f.write(args.value + "\n")
    except OSError as e:
        reason = f"{args.key}: {e.strerror}"
        if e.errno == errno.EINVAL:   # the device wrote why to events
            lines = _ctl_path(args.mount, "events").read_text().splitlines()
            rejected = [ln for ln in lines if " rejected " in ln]
            if rejected:
                reason = rejected[-1].split(" rejected ", 1)[1]
        raise CtlError(reason) from None
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    tty = sys.stdout.isatty()
    try:
        while True:
            status = _ctl_path(args.mount, "status").read_text()
            lines = []
            for line in status.splitlines():
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


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"cramctl: {message}", file=sys.stderr)
        sys.exit(2)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="cramctl", description="Show and set cramfs devices, like zramctl.")
    p.add_argument("--bytes", "-b", action="store_true", help="print sizes in bytes")
    p.add_argument("--json", "-J", action="store_true", help="JSON output")
    p.add_argument("--output", "-o", help=f"columns, comma-separated: {','.join(COLUMNS)}")
    p.set_defaults(func=cmd_list)
    sub = p.add_subparsers(dest="command", parser_class=_Parser)
    s = sub.add_parser("status", help="print a mount's status file")
    s.add_argument("mount")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("set", help="write a knob; prints the reason when it is refused")
    s.add_argument("mount")
    s.add_argument("key")
    s.add_argument("value")
    s.set_defaults(func=cmd_set)
    s = sub.add_parser("watch", help="refresh the status once a second until Ctrl-C")
    s.add_argument("mount")
    s.add_argument("--interval", type=float, default=1.0, help=argparse.SUPPRESS)
    s.add_argument("--count", type=int, help=argparse.SUPPRESS)
    s.set_defaults(func=cmd_watch)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
