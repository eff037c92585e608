"""How the `.cram/` control files read their input: the rules, apart from the table.

control.py holds the attribute table, each file a show/store pair; the stores there
share these rules of what a write may hold, as sysfs's attributes share theirs: one
value with at most one trailing newline, exact trigger values, zram's `key=value`
lists, `all` or a count, a page of a file, and the `inject` commands, each checked
fully before anything applies. A rule that fails rejects the write (EINVAL, with a
`rejected` line in the events log) through the device's `reject`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .device import DeviceError
from .namespace import Namespace
from .units import PAGE_SIZE, parse_decimal, parse_int, parse_size, shown

if TYPE_CHECKING:
    from .control import Attribute

BLANKS = " \t\r\f\v"     # ASCII: anything else is not a blank, and no value holds it


def expect(ns: Namespace, name: str, text: str, value: str, what: str) -> None:
    """Triggers accept one exact value, as zram's reset and compact do."""
    if text != value:
        ns.device.reject(name, f"write {value} to {what}, got {shown(text)}")


def value(ns: Namespace, attr: Attribute, text: str) -> str:
    """The one input rule of every control file, sysfs's: a value and at most one
    trailing newline, nothing around it; a file that takes several lines (discard,
    inject) applies that to each line and takes no empty one. What a value may then
    hold is its parser's business: numbers and keywords in ASCII, file names as the
    bytes they are (decoded with surrogateescape, as the adapter decodes names)."""
    if "\0" in text:
        ns.device.reject(attr.name, "input holds a NUL byte")
    body = text[:-1] if text.endswith("\n") else text
    lines = body.split("\n")
    if len(lines) > 1 and not attr.lines:
        ns.device.reject(attr.name, f"one value per write, with at most one trailing "
                         f"newline; got {shown(text)}")
    for line in lines:
        if line != line.strip(BLANKS):
            ns.device.reject(attr.name, f"blanks around {shown(line)}")
        if attr.lines and not line:
            ns.device.reject(attr.name, "an empty line")
    return body


def page_index(ns: Namespace, name: str, text: str) -> int:
    """A page of a file, as zram takes an index: past the file's end is EINVAL."""
    idx = parse_int(text)
    pages = -(-ns.lookup(name).size // PAGE_SIZE)
    if idx >= pages:
        raise ValueError(f"page {idx} is past the end of {shown(name, 64)} ({pages} pages)")
    return idx


def all_or_number(ns: Namespace, name: str, text: str, what: str) -> int | None:
    """`all` (None) or a whole number, as zram's demote-like triggers take them."""
    arg = text
    try:
        return None if arg == "all" else parse_int(arg)
    except ValueError as e:
        ns.device.reject(name, f"{e}; expected {what} or 'all'")


def parse_inject(ns: Namespace, line: str) -> Callable[[], None]:
    """Check one inject command fully and return the action that applies it."""
    dev = ns.device
    cmd, _, rest = line.partition(" ")
    args = rest.split(" ") if rest else []
    try:
        if cmd == "ratio" and len(args) == 1:
            factor = parse_decimal(args[0])
            if not 1 <= factor <= 64:
                raise ValueError(f"ratio must be 1-64, got {args[0]}")
            return lambda: dev.inject_ratio(factor)
        if cmd == "physical" and len(args) == 1:
            size = parse_size(args[0])
            dev.config.with_value("physical", str(size))      # raises if it cannot apply
            return lambda: dev.inject_physical(size)
        if cmd == "poison" and len(args) >= 2:
            name, page = rest.rsplit(" ", 1)      # the name may hold spaces
            table, idx = ns.lookup(name).table, page_index(ns, name, page)
            if not table.get(idx):
                raise ValueError(f"page {idx} of {shown(name, 64)} holds no data")
            return lambda: dev.inject_poison(table, idx)
        if cmd == "clear" and not args:
            return dev.clear_faults
    except (ValueError, DeviceError) as e:
        dev.reject("inject", str(e))
    if cmd == "bug" and not args:
        # Exercises the daemon's own error path: this request fails with EIO,
        # the traceback is logged, and the mount keeps serving.
        dev.events.add("inject", "bug: raising an internal error")
        raise RuntimeError("injected daemon bug")
    dev.reject("inject", f"unknown command {shown(line)}; expected 'ratio F', "
               "'physical SIZE', 'poison FILE PAGE' or 'clear'")


def keywords(ns: Namespace, name: str, text: str, allowed: tuple[str, ...]) -> dict[str, str]:
    """zram's `key=value key=value` input, every key known and none twice."""
    out: dict[str, str] = {}
    for token in text.split(" "):
        key, eq, value = token.partition("=")
        if not eq or key not in allowed or key in out or not value:
            ns.device.reject(name, f"expected {' '.join(k + '=...' for k in allowed)}, "
                             f"got {shown(token)}")
        out[key] = value
    return out


def priority(ns: Namespace, name: str, args: dict[str, str]) -> None:
    if args.get("priority", "1") != "1":
        ns.device.reject(name, "cramfs has one secondary algorithm: priority=1")
