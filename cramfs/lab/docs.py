"""The generated parts of docs/: tables made from the code's own tables and from a run.

    scripts/gen-docs            rewrite the generated blocks of docs/*.md in place
    scripts/gen-docs --check    exit 1, naming the stale files, if any block is stale

A page marks each generated block with HTML comments, which markdown does not show:

    <!-- generated: NAME -->
    ...
    <!-- end generated -->

and everything outside the markers is prose, left as written. The blocks:

    settings, control-files, statistics   from config.SETTINGS, control.ATTRIBUTES and
                                          stats.STATS (docs/reference.md)
    bench-jobs, bench-figures, bench-swap from docs/bench-results.json, the run that
                                          scripts/bench wrote (docs/performance.md)

tests/test_docs.py fails when a committed page differs from what this makes of it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import DEFAULT_DRAM, SETTINGS, WHILE_EMPTY, DeviceConfig
from ..control import ATTRIBUTES, Attribute
from ..metrics import INFO_NAME
from ..stats import STATS, TEXT
from ..units import spell_size
from ..zsgeometry import DEFAULT_CHAIN_SIZE, geometry
from .benchreport import jobs_table

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = ("reference.md", "performance.md")
BENCH_RESULTS = DOCS / "bench-results.json"

BLOCK = re.compile(r"(<!-- generated: ([a-z-]+) -->\n)(.*?)(<!-- end generated -->)", re.S)

# Settings whose default depends on other settings or on the build: DeviceConfig holds a
# placeholder (-1 or ""), resolved when a device is made.
DERIVED = {
    "engine": "`native` if built, else `python`",
    "huge_threshold": f"from `chain_size`: {geometry(DEFAULT_CHAIN_SIZE).huge_class_size} "
                      f"for {DEFAULT_CHAIN_SIZE}",
    "dram": f"`{spell_size(DEFAULT_DRAM)}`, or `advertised` if smaller",
    "fallback_limit": "`physical`",
}


def _cell(text: str) -> str:
    """Text as one markdown table cell: a `|` would end it."""
    return re.sub(r"(?<!\\)\|", r"\\|", text)


def _default(name: str) -> str:
    if name in DERIVED:
        return DERIVED[name]
    field = next(f for f in dataclasses.fields(DeviceConfig) if f.name == name)
    if field.default in (-1, "") and name not in WHILE_EMPTY:
        raise ValueError(f"{name}'s default is a placeholder; say what it becomes in DERIVED")
    return f"`{SETTINGS[name].spelled(field.default)}`"


def settings() -> list[str]:
    lines = ["| setting | default | changed | meaning |", "|---|---|---|---|"]
    for s in SETTINGS.values():
        when = ("live (`.cram/" + s.name + "`)" if s.runtime else
                "while the device is empty" if s.name in WHILE_EMPTY else "at mount only")
        lines.append(f"| `{s.name}` | {_default(s.name)} | {when} | {_cell(s.help)} |")
    return lines


def _access(a: Attribute) -> str:
    what = {0o444: "r", 0o644: "rw", 0o200: "w", 0o400: "r, root only",
            0o600: "rw, root only"}[a.mode]
    return f"`{a.mode:04o}` {what}"


def control_files() -> list[str]:
    lines = ["| file | mode | content |", "|---|---|---|"]
    for a in ATTRIBUTES.values():
        if not a.help:
            raise ValueError(f".cram/{a.name} has no help text (control.ATTRIBUTES)")
        lines.append(f"| `{a.name}` | {_access(a)} | {_cell(a.help)} |")
    return lines


def statistics() -> list[str]:
    lines = ["| name | unit | kind | Prometheus | zram / zswap | meaning |",
             "|---|---|---|---|---|---|"]
    for st in STATS:
        prom = f"`{st.metric_name}`" if st.unit != TEXT else f"label of `{INFO_NAME}`"
        lines.append(f"| `{st.name}` | {st.unit} | {st.kind} | {prom} | {st.kernel or '-'} | "
                     f"{_cell(st.help)} |")
    return lines


def _bench() -> dict[str, Any]:
    results: dict[str, Any] = json.loads(BENCH_RESULTS.read_text())
    return results


def _mib(n: int) -> str:
    return f"{round(n / (1 << 20))} MiB"


def bench_jobs() -> list[str]:
    return jobs_table(_bench()["jobs"])


def bench_figures() -> list[str]:
    r = _bench()
    rd, fd, wc, rc, md = (r["real_data"], r["fio_data"], r["write_cost"], r["read_cost"],
                          r["metadata"])
    lf, lr = r["lz4_fio_data"], r["lz4_real_data"]
    lines = [
        f"- real data ({_mib(rd['bytes'])} of this machine's binaries, libraries and text, "
        f"`dd bs=1M` direct, on a fresh mount): cramfs writes {round(rd['cramfs']['write_mbps'])}"
        f" MB/s and reads {round(rd['cramfs']['read_mbps'])} MB/s (baseline "
        f"{round(rd['baseline']['write_mbps'])} and {round(rd['baseline']['read_mbps'])}); "
        f"single-threaded lz4 compresses this data at {round(lr['compress_mbps'])} MB/s;",
        f"- ratio reached: {fd['ratio']} on fio's data, {rd['ratio']} on the real data (lz4 "
        f"alone: {lr['ratio']}; pages that compress to "
        f"{geometry(DEFAULT_CHAIN_SIZE).huge_class_size} bytes or more are stored whole, "
        f"zram's threshold for chains of {DEFAULT_CHAIN_SIZE});",
        f"- pool overhead, mem_used_total / compr_data_size on the real data: "
        f"{rd['pool_overhead']};",
        f"- single-threaded `lz4.block` on the same pages: compression "
        f"{round(lf['compress_mbps'])} MB/s on fio's data and {round(lr['compress_mbps'])} MB/s "
        f"on the real data; decompression {round(lf['decompress_mbps'])} and "
        f"{round(lr['decompress_mbps'])} MB/s;",
        f"- daemon RSS: {_mib(rd['daemon_rss'])} while holding {_mib(rd['physical_used'])} of "
        f"physical_used (peak {_mib(r['cramfs_peak_rss'])} during fio);",
        f"- one 4 KiB write in process without FUSE (`write_cost`): {wc['write_us']} µs, of "
        f"which lz4 {wc['lz4_us']} µs and bookkeeping {wc['bookkeeping_us']} µs: "
        f"{wc['write_us'] / wc['lz4_us']:.2f}× lz4 alone. Recording a trace adds "
        f"{wc['trace_overhead']:.1%} to it ({wc['write_us_untraced']} to "
        f"{wc['write_us_traced']} µs on fio's data, 50,000 writes), keeping zstd's blocks "
        f"too {wc['trace_zstd_overhead']:.1%} ({wc['write_us_traced_zstd']} µs; see "
        f"[Costs](trace.md#costs));",
        f"- one page of an 8-page swap-in in process (fault, promotion, the demotion it "
        f"causes): {rc['native_us']} µs native, {rc['python_us']} µs on the Python engine, of "
        f"which lz4 decompression {rc['lz4_us']} µs;",
        f"- metadata with 2^{md['pages'].bit_length() - 1} pages of the real data stored (in a "
        f"fresh process): {md['counted_bytes_per_page']} bytes per page by the tables' own "
        f"count, {md['rss_bytes_per_page']} bytes per page of RSS growth;",
    ]
    asked = [(row["asked_us"], row["added_us"]) for row in r["jobs"].values()
             if "added_us" in row]
    if asked:
        lines.append("- the configured media latency is what is added: " + "; ".join(
            f"asked {a} µs, added {b} µs" for a, b in asked) + ".")
    return lines


def bench_swap() -> list[str]:
    sw = _bench()["swap"]
    names = {"baseline": "baseline file", "cramfs": "cramfs, defaults", "zram": "zram"}
    lines = ["| target | wall time s, median (range) | ratio at peak (while running) |",
             "|---|---|---|"]
    for key, name in names.items():
        t = sw[key]
        lo, hi = t["wall_range"]
        lines.append(f"| {name} | {t['wall_s']} ({lo}-{hi}) | {t['ratio_at_peak'] or '-'} |")
    vb, vz, rz = sw["cramfs_vs_baseline"], sw["cramfs_vs_zram"], sw["ratio_vs_zram"]
    cram = sw["cramfs"]
    lines += ["", f"cramfs takes {vb['median']}× the baseline ({vb['range'][0]}-"
              f"{vb['range'][1]} over the rounds) and {vz['median']}× zram, with a ratio at "
              f"peak {rz['median']}× zram's. The daemon's RSS peaked at "
              f"{_mib(cram['peak_daemon_rss'])}, at most {_mib(cram['daemon_overhead_max'])} "
              "more than an empty mount's RSS plus physical_used, the promoted pages and the "
              "fallback pages at the same moment (the `daemon_overhead` column of the "
              "experiment's samples)."]
    return lines


GENERATORS: dict[str, Callable[[], list[str]]] = {
    "settings": settings,
    "control-files": control_files,
    "statistics": statistics,
    "bench-jobs": bench_jobs,
    "bench-figures": bench_figures,
    "bench-swap": bench_swap,
}


def render(text: str) -> str:
    """The page with every generated block made again."""
    def block(m: re.Match[str]) -> str:
        make = GENERATORS.get(m.group(2))
        if make is None:
            raise ValueError(f"no generator for block {m.group(2)!r}")
        return m.group(1) + "\n".join(make()) + "\n" + m.group(4)

    return BLOCK.sub(block, text)


def stale() -> list[Path]:
    """The pages whose generated blocks differ from what render() makes."""
    return [p for p in (DOCS / name for name in PAGES) if render(p.read_text()) != p.read_text()]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="scripts/gen-docs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true",
                   help="change nothing; exit 1 if a page is stale")
    args = p.parse_args(argv)
    if args.check:
        old = stale()
        for path in old:
            print(f"gen-docs: {path.relative_to(ROOT)} is stale: run scripts/gen-docs",
                  file=sys.stderr)
        return 1 if old else 0
    for name in PAGES:
        path = DOCS / name
        text = path.read_text()
        new = render(text)
        if new != text:
            path.write_text(new)
            print(f"gen-docs: wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
