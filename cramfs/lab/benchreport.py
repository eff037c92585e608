"""The benchmark's report: its JSON results as the markdown tables and lines it prints.

scripts/bench prints table() of a run; docs/performance.md shows the same fio table,
generated from docs/bench-results.json by cramfs.lab.docs through jobs_table().
"""

from __future__ import annotations

from typing import Any

from ..units import format_size


def swap_table(sw: dict[str, Any]) -> list[str]:
    if "skipped" in sw:
        return [f"swap row skipped: {sw['skipped']}"]
    lines = [f"swap row ({sw['workload']}, median of {sw['rounds']} alternating rounds, "
             "range in brackets):", "",
             "| target | wall time s | ratio at peak | peak workload RSS |", "|---|---|---|---|"]
    for name in ("baseline", "cramfs", "zram"):
        if name in sw:
            t = sw[name]
            lo, hi = t["wall_range"]
            lines.append(f"| {name} | {t['wall_s']} ({lo}-{hi}) | {t['ratio_at_peak'] or '-'} | "
                         f"{format_size(t['peak_rss'])} |")
    cram = sw.get("cramfs", {})
    if "daemon_overhead_max" in cram:
        lines.append(f"cramfs daemon: peak RSS {format_size(cram['peak_daemon_rss'])}; at most "
                     f"{format_size(max(0, cram['daemon_overhead_max']))} beyond an empty "
                     "mount + physical_used + promoted + fallback bytes")
    for key in ("cramfs_vs_baseline", "cramfs_vs_zram", "ratio_vs_zram"):
        v = sw.get(key)
        if v:
            lines.append(f"{key.replace('_', ' ')}: {v['median']} ({v['range'][0]}-"
                         f"{v['range'][1]})")
    return lines


def jobs_table(jobs: dict[str, Any]) -> list[str]:
    """The fio jobs as a markdown table (docs/performance.md shows the same)."""
    lines = ["| workload | cramfs IOPS | cramfs MB/s | baseline IOPS | vs baseline (range) |"
             " vs 1-thread lz4 | zram IOPS |", "|---|---|---|---|---|---|---|"]
    for name, row in jobs.items():
        z = row.get("zram", {}).get("iops", "-")
        lo, hi = row["vs_baseline_range"]
        lines.append(f"| {name} | {row['cramfs']['iops']} | {row['cramfs']['mbps']} | "
                     f"{row['baseline']['iops']} | {row['vs_baseline']} ({lo}-{hi}) | "
                     f"{row.get('vs_lz4', '-')} | {z} |")
    return lines


def table(r: dict[str, Any]) -> str:
    if "jobs" not in r:
        return "\n".join(swap_table(r["swap"])) + "\n"
    lines = jobs_table(r["jobs"])
    for name, row in r["jobs"].items():
        if "added_us" in row:
            lines.append(f"{name}: asked {row['asked_us']} µs a page, added "
                         f"{row['added_us']} µs (mean completion latency "
                         f"{row['cramfs']['lat_us']} µs)")
    rd = r["real_data"]
    lines.append("")
    lines.append(f"real data ({format_size(rd['bytes'])} of this machine's files, dd 1 MiB "
                 f"direct): cramfs write {rd['cramfs']['write_mbps']} MB/s, read "
                 f"{rd['cramfs']['read_mbps']} MB/s; baseline write "
                 f"{rd['baseline']['write_mbps']}, read {rd['baseline']['read_mbps']}")
    fd = r["fio_data"]
    lines.append(f"ratio reached: fio data {fd['ratio']} ({format_size(fd['physical_used'])} "
                 f"physical_used), real data {rd['ratio']} ({format_size(rd['physical_used'])}); "
                 f"pool overhead (mem_used_total / compr_data_size) {rd['pool_overhead']}")
    for key in ("lz4_fio_data", "lz4_real_data"):
        z = r[key]
        lines.append(f"single-threaded lz4 on {key[4:].replace('_', ' ')}: compress "
                     f"{z['compress_mbps']} MB/s, decompress {z['decompress_mbps']} MB/s, "
                     f"ratio {z['ratio']}")
    if "compressors" in r:
        lines += ["", "page compressors on real data (µs per 4 KiB page, best of 5; the "
                  "Python call included):", "",
                  "| compressor | µs / page | against liblz4 | bytes |", "|---|---|---|---|"]
        for name, c in r["compressors"].items():
            lines.append(f"| {name} | {c['us_per_page']} | {c['vs_liblz4']}x | "
                         f"{c['bytes']:,} |")
        lines.append("")
    ts = r["thread_scaling"]
    lines.append(f"a second thread: lz4 on 1 MiB blocks {ts['lz4_1mib_blocks_two_threads']}x, "
                 f"the page encoder on a 256-page request {ts['encode_256_pages_split']}x")
    wc = r["write_cost"]
    lines.append(f"one 4 KiB write in process, no FUSE (fio data, random slots of 256 MiB): "
                 f"{wc['write_us']} µs, of which lz4 {wc['lz4_us']} µs and bookkeeping "
                 f"{wc['bookkeeping_us']} µs; recording a trace: {wc['write_us_untraced']} "
                 f"-> {wc['write_us_traced']} µs (+{wc['trace_overhead']:.1%}), keeping zstd's "
                 f"blocks too {wc['write_us_traced_zstd']} µs "
                 f"(+{wc['trace_zstd_overhead']:.1%})")
    rc = r["read_cost"]
    lines.append(f"one page of an 8-page swap-in in process (fault, promotion, demotion): "
                 f"{rc['native_us']} µs native, {rc['python_us']} µs python; lz4 "
                 f"decompression alone {rc['lz4_us']} µs")
    md = r["metadata"]
    lines.append(f"metadata with {md['pages']} pages stored: {md['counted_bytes_per_page']} "
                 f"bytes/page counted, {md['rss_bytes_per_page']} bytes/page of RSS growth")
    lines.append(f"peak RSS during fio: cramfs {format_size(r['cramfs_peak_rss'])}, baseline "
                 f"{format_size(r['baseline_peak_rss'])}; cramfs RSS holding the real data "
                 f"{format_size(rd['daemon_rss'])} for {format_size(rd['physical_used'])} "
                 "physical_used")
    if "swap" in r:
        lines += ["", *swap_table(r["swap"])]
    return "\n".join(lines) + "\n"
