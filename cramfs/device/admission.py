"""Admission: what happens to a compressed page the device is asked to take.

This is the RFC's "ask the driver if it's safe" before a page is migrated, and its
answer when it is not. It is a pure decision from the page's size (through
`fits`), the fill, the danger level and the settings, so it can be read and tested
on its own; `paths.PagePaths.screen` carries it out.

    write control on, level critical or no room:
        fallback=writeback (a user write)  -> STAGE     to the backing file
        fallback=host, host memory left    -> HOST      kept in host memory
        otherwise                          -> REFUSE    ENOSPC, or stays in DRAM
    write control off and no room:
        overflow=refuse                    -> REFUSE
        overflow=poison                    -> POISON    the page reads as EIO
        overflow=drop                      -> DROP      the write is lost
    otherwise                              -> STORE

Reclaim (compaction, then writing the coldest pages behind) runs before write
control refuses, when it is on: `wants_reclaim`.
"""

from __future__ import annotations

from enum import Enum

from ..config import DeviceConfig
from ..pagetable import DEVICE, HUGE_BIT, KIND_MASK
from ..units import PAGE_SIZE


class Verdict(Enum):
    STORE = "store"
    STAGE = "stage"
    HOST = "host"
    REFUSE = "refuse"
    POISON = "poison"
    DROP = "drop"


def fits(config: DeviceConfig, used: int, cost: int, old_word: int, old_extra: int) -> bool:
    """Would an object costing `cost` more pool bytes, stored over `old_word`, keep
    `used` (plus the injected extra already added) within physical capacity? A huge
    page owns its page, so overwriting one frees that page for sure, unless its
    release is delayed. (PagePaths.fits skips this, and the pool's cost, far from
    full.)"""
    whole = PAGE_SIZE if old_word & HUGE_BIT and not config.release_delay else 0
    freed = whole + old_extra if old_word & KIND_MASK == DEVICE else 0
    return used - freed + cost <= config.physical


def wants_reclaim(config: DeviceConfig, critical: bool, fits: bool) -> bool:
    """Is reclaim to run before write control answers?"""
    return config.write_control and config.reclaim != "off" and (critical or not fits)


def decide(config: DeviceConfig, critical: bool, fits: bool, host_room: bool,
           demoting: bool) -> Verdict:
    """Where a compressed page goes. `critical`: the danger level is critical;
    `fits`: the page fits physically; `host_room`: the fallback pool has room for it;
    `demoting`: the page comes from the DRAM tier, where it may stay."""
    if config.write_control and (critical or not fits):
        if config.fallback == "writeback" and not demoting:
            return Verdict.STAGE
        if config.fallback == "host" and host_room:
            return Verdict.HOST
        return Verdict.REFUSE
    if not fits:
        return {"refuse": Verdict.REFUSE, "poison": Verdict.POISON}.get(
            config.overflow, Verdict.DROP)
    return Verdict.STORE
