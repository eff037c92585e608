"""The kernel's zswap, borrowed as a peer and always given back as it was.

zswap is built into this kernel and disabled. The swap experiment turns it on
in front of a swap file on the host's disk, to put the kernel's own compressed
tier next to cramfs and zram on the same workload. Its parameters are global,
so they are saved first and every one of them is written back afterwards,
whatever happened in between.

What it holds comes from /proc/meminfo (`Zswap`: the pool, `Zswapped`: the
pages it stands for), which needs no debugfs.
"""

from __future__ import annotations

import os
from pathlib import Path

PARAMS = Path("/sys/module/zswap/parameters")
CRYPTO = Path("/proc/crypto")
# written back in this order: `enabled` last, so the others are in place when it flips
_ORDER = ("compressor", "max_pool_percent", "accept_threshold_percent", "shrinker_enabled",
          "enabled")


def unavailable(compressor: str = "lzo") -> str | None:
    """Why zswap cannot be borrowed now, or None."""
    if os.geteuid() != 0:
        return "zswap needs root"
    if not (PARAMS / "enabled").exists():
        return "this kernel has no zswap (/sys/module/zswap/parameters)"
    if compressor not in crypto_compressors():
        return f"the kernel's crypto API has no {compressor}"
    if (PARAMS / "enabled").read_text().strip() == "Y":
        return "zswap is already enabled; not touching it"
    return None


def crypto_compressors() -> set[str]:
    """The compression algorithms the kernel's crypto API offers."""
    names, current = set(), ""
    for line in CRYPTO.read_text().splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "name":
            current = value
        elif key == "type" and value in ("compression", "scomp", "acomp"):
            names.add(current)
    return names


def closest_compressor(cramfs_compressor: str) -> str:
    """The kernel algorithm to compare cramfs's with: the same where the kernel has it,
    else lzo, the nearest to lz4 in speed and ratio among lzo, lzo-rle and deflate."""
    return cramfs_compressor if cramfs_compressor in crypto_compressors() else "lzo"


def pool_percent(physical: int, mem_total: int) -> int:
    """max_pool_percent nearest to `physical` bytes: a whole percent of RAM, at least 1."""
    return max(1, min(100, round(100 * physical / mem_total)))


def mem_total() -> int:
    return meminfo()["MemTotal"]


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    out = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, rest = line.partition(":")
        fields = rest.split()
        if fields:
            out[key] = int(fields[0]) * (1024 if fields[1:] == ["kB"] else 1)
    return out


def save() -> dict[str, str]:
    """Every writable parameter's current value."""
    return {p.name: p.read_text().strip() for p in PARAMS.iterdir() if p.stat().st_mode & 0o200}


def apply(values: dict[str, str]) -> None:
    for name in sorted(values, key=lambda n: _ORDER.index(n) if n in _ORDER else -1):
        (PARAMS / name).write_text(values[name] + "\n")


def restore(saved: dict[str, str]) -> list[str]:
    """Write every saved parameter back (`enabled` last); return the ones that now
    differ from what was saved, which should be none."""
    # off first, so nothing new goes in while the rest are changed back
    (PARAMS / "enabled").write_text("N\n")
    apply(saved)
    now = save()
    return [name for name, value in saved.items() if now.get(name) != value]


def held() -> tuple[int, int]:
    """(pool bytes, bytes of the pages it holds): /proc/meminfo's Zswap and Zswapped."""
    m = meminfo()
    return m.get("Zswap", 0), m.get("Zswapped", 0)
