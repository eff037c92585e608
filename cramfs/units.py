"""Value syntax shared by mount options and control files.

One parser per kind of value, so `-o physical=1G`, `--physical 1G` and
`echo 1G > .cram/inject` (via `physical 1G`) can never disagree. Every parser
raises ValueError with a message fit to show a user as-is.
"""

from __future__ import annotations

import re

PAGE_SIZE = 4096
PAGE_SHIFT = 12

_SUFFIX = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
MAX_INT = (1 << 63) - 1
MAX_SIZE = 1 << 60     # 1 EiB: a size past this is a typo, and statvfs could not show it
# ASCII only: Python's int() and float() also take '３', '1_0', '+1', '-0' and '1e-308',
# none of which a sysfs attribute or a mount option should accept.
_SPACE = " \t\n"
_SIZE_RE = re.compile(r"([0-9]{1,20})([KMGT]?)(?:I?B)?", re.IGNORECASE | re.ASCII)
_INT_RE = re.compile(r"[0-9]{1,20}", re.ASCII)
_DECIMAL_RE = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,6})?", re.ASCII)
_PERCENT_RE = re.compile(r"([0-9]{1,3}(?:\.[0-9]{1,2})?)%?", re.ASCII)


def shown(text: str, limit: int = 40) -> str:
    """User input or a file name, quoted and cut short, fit for one log line.

    repr() escapes newlines and other control characters, so a name or a value
    can never forge a line of its own in `.cram/events`."""
    s = text.strip(_SPACE)
    return repr(s if len(s) <= limit else s[:limit] + "...")


def parse_size(text: str) -> int:
    """Parse `4096`, `64K`, `1G`, `2T` (powers of 1024), as zram's disksize does."""
    m = _SIZE_RE.fullmatch(text.strip(_SPACE))
    if not m:
        raise ValueError(f"not a size: {shown(text)} (use bytes or a K/M/G/T suffix)")
    value = int(m.group(1)) * _SUFFIX[m.group(2).upper()]
    if value > MAX_SIZE:
        raise ValueError(f"size too large: {shown(text)} (at most 1 EiB)")
    return value


def format_size(n: int) -> str:
    """Render bytes the way zramctl does: the largest unit that keeps one decimal."""
    value = float(n)
    for unit in ("B", "K", "M", "G", "T"):
        if abs(value) < 1024 or unit == "T":
            if unit == "B":
                return f"{int(value)}B"
            return f"{value:.1f}".rstrip("0").rstrip(".") + unit
        value /= 1024
    raise AssertionError("unreachable")


def spell_size(n: int) -> str:
    """A size as a user writes it, exactly: the largest K/M/G/T suffix that divides it
    (8G, 64M, 3625), so parse_size(spell_size(n)) == n. format_size rounds to one
    decimal, as zramctl shows; this is for defaults a user may copy into an option."""
    for suffix in ("T", "G", "M", "K"):
        unit = _SUFFIX[suffix]
        if n and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def parse_percent(text: str) -> float:
    """Parse `75%`, `75` or `62.5%` into a fraction: 0-100, at most two decimals."""
    m = _PERCENT_RE.fullmatch(text.strip(_SPACE))
    if not m:
        raise ValueError(f"not a percentage: {shown(text)} (0-100, at most two decimals)")
    value = float(m.group(1))
    if value > 100:
        raise ValueError(f"percentage out of range 0-100: {shown(text)}")
    return value / 100


def parse_decimal(text: str) -> float:
    """A plain non-negative decimal such as `2` or `1.5`: no exponent, sign or `_`."""
    if not _DECIMAL_RE.fullmatch(text.strip(_SPACE)):
        raise ValueError(f"not a decimal number: {shown(text)}")
    return float(text)


def format_percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def parse_onoff(text: str) -> bool:
    s = text.strip(_SPACE).lower()
    if s in ("on", "1", "yes", "true"):
        return True
    if s in ("off", "0", "no", "false"):
        return False
    raise ValueError(f"expected on or off, got {shown(text)}")


def format_onoff(value: bool) -> str:
    return "on" if value else "off"


def parse_int(text: str) -> int:
    """A non-negative decimal integer in ASCII digits that fits a signed 64-bit field
    (every counter, index and limit the device keeps, native engine included)."""
    s = text.strip(_SPACE)
    if not _INT_RE.fullmatch(s):
        raise ValueError(f"not a whole number: {shown(text)}")
    if int(s) > MAX_INT:
        raise ValueError(f"number too large: {shown(text)} (at most {MAX_INT})")
    return int(s)
