"""Reporting: the device's numbers as zram and the control files show them.

Read-only: every figure comes from the slot store's counts, the pool and the
counters, computed when asked.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..compressors import describe
from ..pagetable import BACKED, DEVICE, FALLBACK, POISONED, PROMOTED, SAME
from ..units import PAGE_SIZE

if TYPE_CHECKING:
    from .facade import Device


def overflow_at_ratio(dev: Device) -> int:
    """Bytes by which filling the advertised capacity at today's ratio would
    overflow physical capacity; 0 when today's ratio is good enough."""
    ratio = dev.ratio
    if not dev.physical_used or ratio <= 0:
        return 0
    need = int(dev.config.advertised / ratio)
    return max(0, need - dev.config.physical)


def stats(dev: Device) -> dict[str, int | float | str]:
    """Every statistic of stats.STATS the device knows (all but `files`)."""
    c = dev.config
    s = dev.store
    pages = s.pages
    ratio = dev.ratio
    effective = c.advertised if ratio in (0.0, float("inf")) else int(c.physical * ratio)
    used = dev.physical_used
    backing = dev.wb.backing
    out: dict[str, int | float | str] = {
        "advertised": c.advertised,
        "physical": c.physical,
        "physical_used": used,
        "logical_stored": dev.logical_stored,
        "compressed_bytes": s.pool.stored_bytes,
        "charged_bytes": s.charged,
        "unattributed_bytes": used - s.charged,
        "ratio": round(ratio, 2) if ratio != float("inf") else ratio,
        "required_ratio": round(c.advertised / c.physical, 2),
        "effective_capacity": effective,
        "fill": round(dev.fill, 4),
        "danger": dev.danger,
        "danger_level": dev.levels.level,
        "pressure": dev.pressure,
        "overflow_at_ratio": overflow_at_ratio(dev),
        "compressor": c.compressor,
        "mode": c.mode,
        "engine": c.engine,
        "mem_used_max": s.mem_used_max,
        "stored_pages": pages[SAME] + pages[DEVICE] + pages[BACKED],
        "same_filled_pages": pages[SAME],
        "stored_incompressible_pages": s.huge_pages,
        "compressed_pages": pages[DEVICE] - s.huge_pages,
        "fallback_pages": pages[FALLBACK],
        "fallback_bytes": s.fallback.used_bytes,
        "pending_release_pages": s.pending,
        "pending_release_bytes": s.pending_bytes,
        "promoted_pages": pages[PROMOTED],
        "promoted_bytes": pages[PROMOTED] * PAGE_SIZE,
        "poisoned_now": pages[POISONED],
        "written_back_pages": pages[BACKED],
        "bd_count": backing.count if backing is not None else 0,
        "writeback_limit": dev.wb.limit,
    }
    out.update(dev.counters.as_dict())
    return out


def mm_stat(dev: Device) -> str:
    """zram's mm_stat, field for field."""
    c, s = dev.counters, dev.store
    return " ".join(str(v) for v in (
        dev.logical_stored, s.pool.stored_bytes, dev.physical_used,
        dev.config.physical, s.mem_used_max, s.pages[SAME], c.pages_compacted,
        s.huge_pages, c.huge_pages_since))


def io_stat(dev: Device) -> str:
    c = dev.counters
    return f"{c.failed_reads} {c.failed_writes} {c.invalid_io} {c.notify_free}"


def comp_algorithm(dev: Device) -> str:
    return describe(dev.config.compressor)
