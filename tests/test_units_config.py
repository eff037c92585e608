import re

import pytest

from cramfs.compressors import COMPRESSORS, describe
from cramfs.config import DeviceConfig
from cramfs.pool import class_size
from cramfs.units import format_size, parse_onoff, parse_percent, parse_size, spell_size


@pytest.mark.parametrize(("text", "value"), [
    ("4096", 4096), ("64K", 64 << 10), ("1G", 1 << 30), ("2t", 2 << 40), ("8GiB", 8 << 30),
    (" 3M ", 3 << 20),
])
def test_parse_size(text, value):
    assert parse_size(text) == value


@pytest.mark.parametrize("text", ["", "1.5G", "-1", "G", "12Q", "1 G B"])
def test_parse_size_rejects(text):
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def test_format_size():
    assert format_size(0) == "0B"
    assert format_size(1536) == "1.5K"
    assert format_size(8 << 30) == "8G"


def test_percent_and_onoff():
    assert parse_percent("75%") == 0.75
    assert parse_percent("90") == 0.9
    for bad in ("101%", "-1", "x"):
        with pytest.raises(ValueError):
            parse_percent(bad)
    assert parse_onoff("on") is True and parse_onoff("off") is False
    with pytest.raises(ValueError):
        parse_onoff("maybe")


def test_config_cross_checks():
    DeviceConfig().check()
    with pytest.raises(ValueError, match="must not exceed advertised"):
        DeviceConfig(physical=2 << 30, advertised=1 << 30).check()
    cfg = DeviceConfig()
    with pytest.raises(ValueError, match="warn_at < critical_at"):
        cfg.with_value("warn_at", "95%")
    assert cfg.warn_at == 0.75, "a rejected value must leave the old one"
    assert cfg.with_value("dram", "0").dram == 0


def test_compressors_round_trip():
    page = (b"hello world " * 400)[:4096]
    for comp in COMPRESSORS.values():
        assert comp.decompress(comp.compress(page)) == page
    assert describe("zstd") == "lzo-rle lzo lz4 [zstd] none"


def test_class_size():
    # zs_malloc adds the 8-byte handle before the lookup, and merged classes take
    # the larger class's size
    assert class_size(1) == 32 and class_size(24) == 32
    assert class_size(25) == 48
    assert class_size(3624) == 3632
    assert class_size(4000) == 4096 and class_size(4096) == 4096


@pytest.mark.parametrize(("n", "text"), [
    (8 << 30, "8G"), (1 << 30, "1G"), (64 << 20, "64M"), (3 << 40, "3T"), (1536, "1536"),
    (4096, "4K"), (3625, "3625"), (0, "0"), ((1 << 30) + (512 << 20), "1536M"),
])
def test_spell_size_is_exact_and_parses_back(n, text):
    assert spell_size(n) == text
    assert parse_size(text) == n


def test_help_shows_sizes_as_a_user_writes_them():
    """--help gives 8G, not 8589934592; the control files keep bytes, as zram's do."""
    from cramfs.cli import build_parser

    text = build_parser().format_help().split("\noptions:", 1)[1]
    entries = {e.split()[0]: " ".join(e.split()) for e in re.split(r"\n  (?=-)", text) if e.strip()}
    for flag, default in (("--advertised", "8G"), ("--physical", "1G"), ("--dram", "64M"),
                          ("--fallback-limit", "1G")):
        assert entries[flag].startswith(f"{flag} SIZE") and \
            entries[flag].endswith(f"(default {default})"), entries[flag]
    assert str(8 << 30) not in text and str(1 << 30) not in text
    assert DeviceConfig().show("advertised") == str(8 << 30)
