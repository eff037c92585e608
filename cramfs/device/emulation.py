"""Emulation: what makes the device behave like a worse one than it is.

Injected faults (a worse compression ratio for new pages, a smaller physical
capacity, a poisoned page), the delayed release of freed memory, and the media's
latency and bandwidth. Each changes what the page paths see, never how they
decide.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from ..units import PAGE_SIZE, format_size
from .common import page_name

if TYPE_CHECKING:
    from ..pagetable import PageTable
    from .facade import Device


class Emulation:
    """A device's injected faults and media model."""

    def __init__(self, dev: Device) -> None:
        self.dev = weakref.proxy(dev)      # the device owns its parts, not the reverse
        self.mount_physical = dev.config.physical
        self.link_free = 0.0             # when the emulated media's link is next idle

    def inject_ratio(self, factor: float) -> None:
        dev = self.dev
        if not 1 <= factor <= 64:
            dev.reject("inject", f"ratio must be 1-64, got {factor:g}")
        dev.inflate = factor
        dev.band()
        dev.events.add("inject", f"ratio {factor:g}: new pages cost {factor:g}x")

    def set_physical(self, size: int) -> None:
        dev = self.dev
        dev.config = dev.config.with_value("physical", str(size))
        dev.configured()
        dev.refresh(settings=True)

    def inject_physical(self, size: int) -> None:
        try:
            self.set_physical(size)
        except ValueError as e:
            self.dev.reject("inject", str(e))
        self.dev.events.add("inject", f"physical {format_size(size)}")

    def inject_poison(self, table: PageTable, idx: int) -> None:
        dev = self.dev
        if not table.get(idx):
            dev.reject("inject", f"{page_name(table, idx)} holds no data")
        dev.store.store_poison(table, idx, True)
        dev.counters.poisoned_pages += 1
        dev.events.add("inject", f"poison {page_name(table, idx)}")
        dev.refresh()

    def clear(self) -> None:
        self.dev.inflate = 1.0
        self.set_physical(self.mount_physical)
        self.dev.events.add("inject", "clear")

    def active(self) -> list[str]:
        dev = self.dev
        faults = []
        if dev.inflate != 1:
            faults.append(f"ratio {dev.inflate:g}")
        if dev.config.physical != self.mount_physical:
            faults.append(f"physical {dev.config.physical}")
        if dev.store.injected_poison:
            faults.append(f"poisoned_pages {dev.store.injected_poison}")
        return faults

    def media_delay(self, write: bool, nbytes: int, now: float) -> float:
        """Seconds a request of `nbytes` should take beyond the device's own work, on
        the emulated media: each page's latency, then its transfer at `bandwidth`,
        which requests share one after another (a link busy until `link_free`)."""
        c = self.dev.config
        latency = (c.write_latency if write else c.read_latency) * (
            -(-nbytes // PAGE_SIZE)) / 1e6
        if not c.bandwidth:
            return latency
        start = max(now + latency, self.link_free)
        self.link_free = start + nbytes / (c.bandwidth * 1e6)
        return self.link_free - now
