"""The device's settings: one table that serves mount options and control knobs.

Each setting has one parser and one formatter. The CLI builds `--name VALUE`
and `-o name=VALUE` from this table, and `.cram/NAME` writes go through the same
parser, so a value that mounts is a value the knob accepts, and vice versa.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import engine as engines
from .compressors import COMPRESSORS
from .parallel import MAX_WORKERS
from .units import (
    PAGE_SIZE,
    format_onoff,
    format_percent,
    parse_int,
    parse_onoff,
    parse_percent,
    parse_size,
    shown,
    spell_size,
)
from .zsgeometry import CHAIN_SIZES, DEFAULT_CHAIN_SIZE, geometry

DEFAULT_DRAM = 64 << 20
MAX_LATENCY_US = 10_000_000      # 10 s a page: past that it is a typo
MAX_BANDWIDTH = 1_000_000        # MB/s
MODES = ("zswap", "direct")
FALLBACKS = ("host", "none", "writeback")
RECLAIMS = ("off", "compact", "writeback")
OVERFLOWS = ("refuse", "poison", "drop")


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        s = text.strip(" \t\n")
        if s not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {shown(s)}")
        return s

    return parse


def _int_in(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = parse_int(text)
        if not low <= value <= high:
            raise ValueError(f"{name} must be {low}-{high}, got {value}")
        return value

    return parse


def _parse_backing(text: str) -> str:
    s = text.strip(" \t\n")
    if s == "none":
        return ""
    if not s.startswith("/") or "\0" in s:
        raise ValueError(f"expected an absolute path or 'none', got {shown(s)}")
    return s


@dataclass(frozen=True)
class Setting:
    """How one setting is spelled, parsed and shown, and whether it may change live."""

    name: str
    parse: Callable[[str], Any]
    show: Callable[[Any], str]
    help: str
    runtime: bool = True

    @property
    def is_size(self) -> bool:
        return self.parse is parse_size

    def spelled(self, value: Any) -> str:
        """The value as a user writes it, for --help: a size as 8G where `show`, the
        control file's form, gives 8589934592 (bytes, as zram's sysfs files do)."""
        return spell_size(value) if self.is_size else self.show(value)


# not runtime knobs, yet changeable through .cram/ while the device holds no page
WHILE_EMPTY = ("backing_dev",)

SETTINGS: dict[str, Setting] = {
    s.name: s
    for s in (
        Setting("advertised", parse_size, str, "static capacity the device claims", False),
        Setting("physical", parse_size, str,
                "real capacity (change it live: 'physical SIZE' into .cram/inject)", False),
        Setting("compressor", _choice(*COMPRESSORS), str,
                "lz4, lzo, lzo-rle (each as zram compresses), zstd or none"),
        Setting("chain_size", _int_in("chain_size", CHAIN_SIZES[0], CHAIN_SIZES[-1]), str,
                "zsmalloc's CONFIG_ZSMALLOC_CHAIN_SIZE: the most pages in a zspage", False),
        Setting("engine", _choice(*engines.ENGINES), str,
                "native (compiled, the default when built) or python (the reference "
                "implementation); the same decisions either way, only the speed differs",
                False),
        Setting("huge_threshold", _int_in("huge_threshold", 1, PAGE_SIZE), str,
                "compressed pages at least this big are stored uncompressed (default and "
                "most: what chain_size implies, as in zram)", False),
        Setting("warn_at", parse_percent, format_percent, "fill that raises 'warn'"),
        Setting("critical_at", parse_percent, format_percent, "fill that raises 'critical'"),
        Setting("hysteresis", parse_percent, format_percent,
                "how far fill must drop below a level's threshold to leave it"),
        Setting("write_control", parse_onoff, format_onoff,
                "refuse new pages at critical or worse"),
        Setting("fallback", _choice(*FALLBACKS), str,
                "where refused pages go: host (memory), none (ENOSPC) or writeback (the "
                "backing file)"),
        Setting("overflow", _choice(*OVERFLOWS), str,
                "with write control off, what a full device does: refuse, poison or drop"),
        Setting("mode", _choice(*MODES), str, "zswap (every access faults) or direct"),
        Setting("dram", parse_size, str, "budget of the host-DRAM tier of promoted pages"),
        Setting("fallback_limit", parse_size, str,
                "most host memory refused pages may take, physical's size unless set; "
                "past it a refused page gets ENOSPC"),
        Setting("comp_threads", _int_in("comp_threads", 0, MAX_WORKERS), str,
                "worker threads compressing large writes (on the python engine also "
                "decompressing large reads); 0 keeps them inline"),
        Setting("read_latency", _int_in("read_latency", 0, MAX_LATENCY_US), str,
                "microseconds added per page read, emulating slower media"),
        Setting("write_latency", _int_in("write_latency", 0, MAX_LATENCY_US), str,
                "microseconds added per page written"),
        Setting("bandwidth", _int_in("bandwidth", 0, MAX_BANDWIDTH), str,
                "MB/s the emulated media moves at most, over all requests; 0: no cap"),
        Setting("release_delay", _int_in("release_delay", 0, 60_000), str,
                "milliseconds a freed page stays charged (pending release) before the "
                "device gets it back, as the RFC's sample driver batches its frees"),
        Setting("backing_dev", _parse_backing, lambda v: v or "none",
                "a regular file written-back pages go to (zram's backing_dev); 'none' for "
                "none. Changed live only while the device is empty (.cram/backing_dev)",
                False),
        Setting("reclaim", _choice(*RECLAIMS), str,
                "what the device tries before write control refuses a page: off, compact, "
                "or compact then writeback of the coldest pages"),
        Setting("reclaim_interval", _int_in("reclaim_interval", 0, 3_600_000), str,
                "milliseconds between two compactions reclaim may run"),
        Setting("reclaim_pages", _int_in("reclaim_pages", 1, 1 << 20), str,
                "pages reclaim may write back per refused page"),
    )
}


@dataclass
class DeviceConfig:
    """Every device setting with its default. Cross-field rules live in check()."""

    advertised: int = 8 << 30
    physical: int = 1 << 30
    compressor: str = "lz4"
    chain_size: int = DEFAULT_CHAIN_SIZE
    engine: str = ""                  # "": native if it was built, else python
    huge_threshold: int = -1          # -1: zsmalloc's huge class size for chain_size
    warn_at: float = 0.75
    critical_at: float = 0.90
    hysteresis: float = 0.05
    write_control: bool = True
    fallback: str = "host"
    overflow: str = "refuse"
    mode: str = "zswap"
    dram: int = -1                    # -1: 64 MiB, or advertised if smaller
    fallback_limit: int = -1          # -1: as large as physical
    comp_threads: int = 0
    read_latency: int = 0
    write_latency: int = 0
    bandwidth: int = 0
    release_delay: int = 0
    backing_dev: str = ""
    reclaim: str = "off"
    reclaim_interval: int = 1000
    reclaim_pages: int = 256

    def __post_init__(self) -> None:
        # defaults that depend on other settings, resolved once, at construction
        if not self.engine:
            self.engine = engines.default_engine()
        if self.huge_threshold < 0:
            self.huge_threshold = geometry(self.chain_size).huge_class_size
        if self.dram < 0:
            self.dram = min(DEFAULT_DRAM, self.advertised)
        if self.fallback_limit < 0:
            self.fallback_limit = self.physical

    def check(self) -> None:
        """Raise ValueError if the settings contradict each other."""
        if self.advertised < PAGE_SIZE:
            raise ValueError(f"advertised must be at least {PAGE_SIZE} bytes")
        if self.physical < PAGE_SIZE:
            raise ValueError(f"physical must be at least {PAGE_SIZE} bytes")
        if self.physical > self.advertised:
            raise ValueError(
                f"physical ({self.physical}) must not exceed advertised ({self.advertised})"
            )
        if not 0 < self.warn_at < self.critical_at < 1:
            raise ValueError("need 0% < warn_at < critical_at < 100%")
        if not 0 <= self.hysteresis < self.warn_at:
            raise ValueError("need 0% <= hysteresis < warn_at")
        engines.check(self.engine)
        for name in ("fallback", "reclaim"):
            if getattr(self, name) == "writeback" and not self.backing_dev:
                raise ValueError(f"{name}=writeback needs a backing_dev")
        most = geometry(self.chain_size).huge_class_size
        if self.huge_threshold > most:
            raise ValueError(f"huge_threshold ({self.huge_threshold}) must not exceed {most}, "
                             f"zsmalloc's huge class size for chain_size {self.chain_size}")
        for name in ("dram", "fallback_limit"):
            if getattr(self, name) > self.advertised:
                raise ValueError(f"{name} ({getattr(self, name)}) must not exceed advertised "
                                 f"({self.advertised})")

    def with_value(self, name: str, text: str) -> DeviceConfig:
        """A checked copy with one setting parsed from text; self is left untouched."""
        setting = SETTINGS.get(name)
        if setting is None:
            raise ValueError(f"unknown setting {name!r}")
        new = dataclasses.replace(self, **{name: setting.parse(text)})
        new.check()
        return new

    def show(self, name: str) -> str:
        return SETTINGS[name].show(getattr(self, name))

    def spelled(self, name: str) -> str:
        return SETTINGS[name].spelled(getattr(self, name))
