"""The two /proc files cramfs reads: the mount table and a process's status.

Read from mountinfo rather than by stat(): a mount whose daemon died fails
every stat, and it must still be found, to be unmounted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class MountEntry:
    mountpoint: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    # mountinfo writes space, tab, newline and backslash as octal escapes (\040 ...)
    if "\\" not in field:
        return field
    return field.encode("utf-8", "surrogateescape").decode("unicode_escape").encode(
        "latin-1").decode("utf-8", "surrogateescape")


def mounts(mountinfo: str = "/proc/self/mountinfo") -> list[MountEntry]:
    out = []
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fstype, source = [*right.split(), "", ""][:2]
            out.append(MountEntry(_unescape(left.split()[4]), fstype, _unescape(source)))
    return out


def mount_dev(path: str, mountinfo: str = "/proc/self/mountinfo") -> int | None:
    """The st_dev of the filesystem mounted at `path` (its last mount there), from
    mountinfo: the daemon asks this of its own mount, where a stat() would be a request
    to itself."""
    dev = None
    with open(mountinfo, encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            if _unescape(fields[4]) == path:
                major, minor = fields[2].split(":")
                dev = os.makedev(int(major), int(minor))
    return dev


def is_mounted(path: Path | str) -> bool:
    return any(m.mountpoint == str(path) for m in mounts())


def status_bytes(pid: int | str, key: str) -> int:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM, RssAnon...) in bytes; 0 if gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0
