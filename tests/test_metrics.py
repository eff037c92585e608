"""One name per metric and label: `.cram/metrics` and `cramctl exporter` are built by one
function from the statistics table, and this holds them (and the docs) to it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cramfs import exporter
from cramfs.config import DeviceConfig
from cramfs.device import Device
from cramfs.metrics import INFO_LABELS, INFO_NAME
from cramfs.namespace import Namespace
from cramfs.stats import RATIO_DECIMALS, STATS, TEXT

from .helpers import random_page, text_page
from .test_namespace_control import show

P = 4096
DOCS = Path(__file__).resolve().parent.parent / "docs"


def shape(text: str, drop: str = "") -> dict[str, tuple[str, str, frozenset[str]]]:
    """Each family's type, help and label names, parsed as Prometheus parses them."""
    return {f.name: (f.type, f.documentation,
                     frozenset(k for s in f.samples for k in s.labels if k != drop))
            for f in text_string_to_metric_families(text)}


def values(text: str, drop: str = "") -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset((k, v) for k, v in s.labels.items() if k != drop)): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def device_with_data() -> Namespace:
    ns = Namespace(Device(DeviceConfig(advertised=64 << 20, physical=4 << 20)))
    f = ns.create("a", 0o600, 0, 0)
    for i in range(40):
        ns.write(f, i * P, random_page(i) if i % 3 else text_page(i))
    return ns


def exporter_text(ns: Namespace, monkeypatch: Any, mount: str = "/mnt/x") -> str:
    """What the exporter serves for this device, as if it were mounted at `mount`: it
    reads stat.json, so it is given this device's."""
    doc = json.loads(show(ns, "stat.json"))
    monkeypatch.setattr(exporter, "find_mounts", lambda: [mount])
    monkeypatch.setattr(exporter, "read_stats", lambda m: {**doc, "mountpoint": m})
    return generate_latest(exporter.registry()).decode()


def test_the_file_and_the_exporter_give_the_same_families_and_labels(monkeypatch):
    ns = device_with_data()
    text = show(ns, "metrics")
    served = exporter_text(ns, monkeypatch)
    # the exporter adds `mountpoint`, to tell the mounts it merges apart; nothing else
    assert shape(text) == shape(served, drop="mountpoint")
    assert {k for f in text_string_to_metric_families(served) for s in f.samples
            for k in s.labels} == {"mountpoint", *INFO_LABELS}
    assert values(text) == values(served, drop="mountpoint")
    # the TYPE lines, word for word: a counter is named with its _total in both
    assert [ln for ln in text.splitlines() if ln.startswith("# TYPE")] == \
        [ln for ln in served.splitlines() if ln.startswith("# TYPE")]
    (info,) = [s for f in text_string_to_metric_families(text) if f.name == INFO_NAME
               for s in f.samples]
    assert info.labels["compressor"] == "lz4" and "algorithm" not in info.labels


def test_ratios_keep_enough_decimals_to_compare(monkeypatch):
    """1.0032 is not 1: the ratios keep RATIO_DECIMALS in stat.json, the file and the
    exporter alike (the text files show two, for reading)."""
    ns = device_with_data()
    dev = ns.device
    assert round(dev.ratio, 2) != round(dev.ratio, RATIO_DECIMALS), "a ratio 2 decimals hide"
    want = round(dev.ratio, RATIO_DECIMALS)
    assert json.loads(show(ns, "stat.json"))["ratio"] == want
    for text in (show(ns, "metrics"), exporter_text(ns, monkeypatch)):
        got = {s.name: s.value for f in text_string_to_metric_families(text)
               for s in f.samples}
        assert got["cramfs_compression_ratio"] == want
        assert got["cramfs_fill_ratio"] == round(dev.fill, RATIO_DECIMALS)
    assert show(ns, "ratio") == f"{dev.ratio:.2f}\n"
    # whole numbers stay whole in the file, for a reader
    assert f"cramfs_advertised_bytes {64 << 20}\n" in show(ns, "metrics")


def test_the_docs_say_what_the_table_says():
    """The reference's statistics table is the table's rows (scripts/gen-docs makes it),
    and the reference and the metrics page name cramfs_info's labels as the file and the
    exporter do."""
    reference = (DOCS / "reference.md").read_text()
    for st in STATS:
        prom = f"`{st.metric_name}`" if st.unit != TEXT else f"label of `{INFO_NAME}`"
        assert (f"| `{st.name}` | {st.unit} | {st.kind} | {prom} | {st.kernel or '-'} | "
                f"{st.help} |") in reference, st.name
    assert f"`{INFO_NAME}{{{','.join(INFO_LABELS)}}}`" in reference
    page = (DOCS / "cramctl.md").read_text()
    (example,) = re.findall(r"^cramfs_info\{(.*)\} 1$", page, re.MULTILINE)
    assert tuple(re.findall(r'(\w+)="', example)) == INFO_LABELS
    assert "algorithm=" not in page.split("## Metrics for Prometheus")[1].split("\n## ")[0]
