"""The zswap helper's own logic, on a stand-in parameter folder: it must put every
parameter back as it was, because zswap's parameters are global to the machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from cramfs.lab import zswap


@pytest.fixture
def params(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    d = tmp_path / "parameters"
    d.mkdir()
    for name, value in [("enabled", "N"), ("compressor", "lzo-rle"), ("max_pool_percent", "20"),
                        ("accept_threshold_percent", "90"), ("shrinker_enabled", "Y")]:
        (d / name).write_text(value + "\n")
    monkeypatch.setattr(zswap, "PARAMS", d)
    return d


def test_restore_puts_every_parameter_back(params):
    saved = zswap.save()
    zswap.apply({"compressor": "lzo", "max_pool_percent": "4", "enabled": "Y"})
    assert (params / "enabled").read_text() == "Y\n"
    assert zswap.restore(saved) == []
    assert zswap.save() == saved


def test_restore_reports_what_did_not_come_back(params, monkeypatch):
    saved = zswap.save()
    real_apply = zswap.apply

    def stubborn(values):
        real_apply({k: v for k, v in values.items() if k != "max_pool_percent"})

    zswap.apply({"max_pool_percent": "7"})
    monkeypatch.setattr(zswap, "apply", stubborn)
    assert zswap.restore(saved) == ["max_pool_percent"]


def test_pool_percent_is_the_nearest_whole_percent():
    gib = 1 << 30
    assert zswap.pool_percent(gib, 24 * gib) == 4           # 4.17%
    assert zswap.pool_percent(256 << 20, 24 * gib) == 1     # 1.04%
    assert zswap.pool_percent(1, 24 * gib) == 1             # never 0: zswap would take nothing
    assert zswap.pool_percent(48 * gib, 24 * gib) == 100


def test_the_kernel_algorithm_closest_to_cramfs(monkeypatch):
    monkeypatch.setattr(zswap, "crypto_compressors", lambda: {"lzo", "lzo-rle", "deflate"})
    assert zswap.closest_compressor("lz4") == "lzo"
    assert zswap.closest_compressor("zstd") == "lzo"
    assert zswap.closest_compressor("lzo") == "lzo"


def test_meminfo_is_in_bytes():
    m = zswap.meminfo()
    assert m["MemTotal"] > 1 << 28 and m["MemTotal"] % 1024 == 0
