import pytest

from cramfs.compressors import COMPRESSORS, describe
from cramfs.config import DeviceConfig
from cramfs.pool import class_size
from cramfs.units import format_size, parse_onoff, parse_percent, parse_size


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
    assert describe("zstd") == "lz4 [zstd] none lzo"


def test_class_size():
    # zs_malloc adds the 8-byte handle before the lookup, and merged classes take
    # the larger class's size
    assert class_size(1) == 32 and class_size(24) == 32
    assert class_size(25) == 48
    assert class_size(3624) == 3632
    assert class_size(4000) == 4096 and class_size(4096) == 4096
