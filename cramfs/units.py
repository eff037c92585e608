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
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parse `4096`, `64K`, `1G`, `2T` (powers of 1024), as zram's disksize does."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"not a size: {text.strip()!r} (use bytes or a K/M/G/T suffix)")
    return int(m.group(1)) * _SUFFIX[m.group(2).upper()]


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


def parse_percent(text: str) -> float:
    """Parse `75%` or `75` into 0.75; only 0-100 is meaningful for a fill level."""
    s = text.strip().removesuffix("%").strip()
    try:
        value = float(s)
    except ValueError:
        raise ValueError(f"not a percentage: {text.strip()!r}") from None
    if not 0 <= value <= 100:
        raise ValueError(f"percentage out of range 0-100: {text.strip()!r}")
    return value / 100


def format_percent(fraction: float) -> str:
    return f"{fraction * 100:g}%"


def parse_onoff(text: str) -> bool:
    s = text.strip().lower()
    if s in ("on", "1", "yes", "true"):
        return True
    if s in ("off", "0", "no", "false"):
        return False
    raise ValueError(f"expected on or off, got {text.strip()!r}")


def format_onoff(value: bool) -> str:
    return "on" if value else "off"


def parse_int(text: str) -> int:
    try:
        return int(text.strip(), 10)
    except ValueError:
        raise ValueError(f"not an integer: {text.strip()!r}") from None
