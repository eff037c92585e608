"""Every statistic the device reports, described once.

`status`, `stat`, `stat.json`, `metrics`, cramctl's columns and the swap
experiment's sampler are all produced from this table, as the settings are
from config.SETTINGS: a name, its unit, counter or gauge, help text, the zram
or zswap name it mirrors, and its Prometheus name. Device.stats() supplies
the values under the same names.
"""

from __future__ import annotations

from dataclasses import dataclass

BYTES, PAGES, RATIO, FRACTION, COUNT, TEXT = "bytes", "pages", "ratio", "fraction", "count", "text"
GAUGE, COUNTER, INFO = "gauge", "counter", "info"
# Decimals of the ratios (ratio, required_ratio, fill) in stat.json and the metrics:
# enough to tell 1.0032 from 1 when comparing runs.
RATIO_DECIMALS = 4


@dataclass(frozen=True)
class Stat:
    name: str          # in stat, stat.json and status
    unit: str          # bytes, pages, ratio, fraction, count or text
    kind: str          # gauge, counter, or info (text, shown as a label)
    help: str
    kernel: str = ""   # the zram (mm_stat, io_stat) or zswap name it mirrors
    metric: str = ""   # Prometheus name without the cramfs_ prefix (counters end in _total)
    status: bool = True

    @property
    def metric_name(self) -> str:
        return "cramfs_" + (self.metric or self.name)


def _g(name: str, unit: str, help_: str, kernel: str = "", metric: str = "",
       status: bool = True) -> Stat:
    return Stat(name, unit, GAUGE, help_, kernel, metric, status)


def _c(name: str, metric: str, help_: str, kernel: str = "", unit: str = PAGES) -> Stat:
    return Stat(name, unit, COUNTER, help_, kernel, metric, status=False)


STATS: tuple[Stat, ...] = (
    _g("advertised", BYTES, "Static capacity the device claims.", metric="advertised_bytes"),
    _g("physical", BYTES, "Real capacity.", "zram mem_limit", "physical_bytes"),
    _g("physical_used", BYTES, "Bytes the device really holds: every page of its zspages and "
       "huge pages, plus injected cost.", "zram mem_used_total", "physical_used_bytes"),
    _g("logical_stored", BYTES, "Bytes of page slots the device holds, same-filled pages "
       "included.", "zram orig_data_size", "logical_stored_bytes"),
    _g("compressed_bytes", BYTES, "Sum of the stored objects' lengths (huge pages count a "
       "page).", "zram compr_data_size"),
    _g("charged_bytes", BYTES, "Sum of the files' compressed charges: each object's size "
       "class, plus injected cost."),
    _g("unattributed_bytes", BYTES, "physical_used charged to no file: the unused tails and "
       "free slots of zspages."),
    _g("ratio", RATIO, "logical_stored / physical_used; below 1 while a few pages hold whole "
       "zspages.", metric="compression_ratio"),
    _g("required_ratio", RATIO, "advertised / physical: the ratio needed to fill the "
       "advertised size.", metric="required_compression_ratio"),
    _g("effective_capacity", BYTES, "physical x ratio.", metric="effective_capacity_bytes"),
    _g("fill", FRACTION, "physical_used / physical.", metric="fill_ratio"),
    Stat("danger", TEXT, INFO, "Danger level: ok, warn, critical or full."),
    _g("danger_level", COUNT, "Danger level as a number: 0 ok, 1 warn, 2 critical, 3 full.",
       status=False),
    _g("pressure", COUNT, "The RFC's pressure, 0-1000 in steps of 50: 0 at ok, linear in fill "
       "from warn_at to critical_at, 1000 (write control refuses) at critical or worse."),
    _g("overflow_at_ratio", BYTES, "Physical bytes short if the advertised size were filled "
       "at today's ratio.", metric="overflow_at_ratio_bytes"),
    Stat("compressor", TEXT, INFO, "Compressor of new pages."),
    Stat("mode", TEXT, INFO, "zswap (every access faults) or direct."),
    Stat("engine", TEXT, INFO, "Engine keeping the pages: native (compiled) or python."),
    _g("mem_used_max", BYTES, "Peak physical_used.", "zram mem_used_max", "mem_used_max_bytes"),
    _g("files", COUNT, "Slot files on the mount."),
    _g("stored_pages", PAGES, "Pages the device holds: same-filled, compressed, huge and "
       "written back.",
       "zswap stored_pages"),
    _g("same_filled_pages", PAGES, "Pages kept as their repeated word, with no allocation.",
       "zram same_pages"),
    _g("compressed_pages", PAGES, "Pages stored compressed."),
    _g("stored_incompressible_pages", PAGES, "Pages stored whole (huge).",
       "zram huge_pages, zswap stored_incompressible_pages"),
    _g("fallback_pages", PAGES, "Pages write control refused, kept in host memory."),
    _g("fallback_bytes", BYTES, "Host memory those pages take (their size classes)."),
    _g("pending_release_pages", PAGES, "Freed pages still charged: release_delay has not "
       "passed yet."),
    _g("pending_release_bytes", BYTES, "Their size classes, still in physical_used."),
    _g("promoted_pages", PAGES, "Pages in the host-DRAM tier.", metric="dram_tier_pages"),
    _g("promoted_bytes", BYTES, "Whole pages in the DRAM tier, as charged against dram."),
    _g("poisoned_now", PAGES, "Poisoned pages: reads give EIO until they are rewritten.",
       metric="poisoned_now_pages"),
    _g("written_back_pages", PAGES, "Pages in the backing file (still in logical_stored, "
       "out of physical_used)."),
    _g("bd_count", PAGES, "Blocks of the backing file in use, pages on their way included.",
       "zram bd_stat bd_count", "backing_pages"),
    _g("writeback_limit", PAGES, "Pages writeback may still write while "
       "writeback_limit_enable is 1.", "zram writeback_limit", "writeback_limit_pages",
       status=False),
    _c("reads", "read_pages_total", "Pages read."),
    _c("writes", "written_pages_total", "Pages written."),
    _c("faults", "faults_total", "Accesses that faulted (every zswap-mode read of a stored "
       "page, every direct-mode write to one).", unit=COUNT),
    _c("promotions", "promoted_pages_total", "Pages promoted into the DRAM tier."),
    _c("demotions", "demoted_pages_total", "Pages demoted from the DRAM tier onto the device."),
    _c("promotions_skipped", "promotions_skipped_total", "Faults served in place because the "
       "tier was full and could not demote.", unit=COUNT),
    _c("reject_write_control", "write_control_rejected_pages_total", "Pages write control "
       "refused (to fallback, ENOSPC, or kept in DRAM)."),
    _c("fallback_limit_hit", "fallback_limit_hit_total", "Refused pages that found host memory "
       "for fallback full (ENOSPC).", "zswap pool_limit_hit", COUNT),
    _c("failed_reads", "failed_reads_total", "Reads that failed (poisoned pages).",
       "zram io_stat failed_reads", COUNT),
    _c("failed_writes", "failed_writes_total", "Writes that failed with ENOSPC.",
       "zram io_stat failed_writes", COUNT),
    _c("invalid_io", "invalid_io_total", "Requests that made no sense.",
       "zram io_stat invalid_io", COUNT),
    _c("notify_free", "notify_free_pages_total", "Pages discarded: every page of each "
       "range within its file, held or not, as zram counts a discard.",
       "zram io_stat notify_free"),
    _c("discards", "discard_requests_total", "Discard requests: .cram/discard lines, punch "
       "holes and zero ranges (blkdiscard, swapon --discard through a loop device).",
       unit=COUNT),
    _c("poisoned_pages", "poisoned_pages_total", "Pages poisoned (overflow=poison or "
       "injected)."),
    _c("dropped_writes", "dropped_pages_total", "Pages dropped (overflow=drop)."),
    _c("discarded_pages", "discarded_pages_total", "Pages released by discard."),
    _c("zero_released_pages", "zero_released_pages_total", "Stored pages released by a write "
       "of zeros."),
    _c("huge_pages_since", "huge_pages_total", "Pages ever stored whole.",
       "zram huge_pages_since"),
    _c("pages_compacted", "compacted_pages_total", "Pages compaction gave back.",
       "zram pages_compacted"),
    _c("recompressed_pages", "recompressed_pages_total", "Pages recompressed with the "
       "secondary algorithm and kept so."),
    _c("recompress_saved_bytes", "recompress_saved_bytes_total", "Compressed bytes those "
       "pages shed.", unit=BYTES),
    _c("recompress_skipped_pages", "recompress_skipped_pages_total", "Pages recompression "
       "tried without gain, marked until rewritten."),
    _c("bd_reads", "backing_read_pages_total", "Pages read from the backing file.",
       "zram bd_stat bd_reads"),
    _c("bd_writes", "backing_written_pages_total", "Pages written to the backing file.",
       "zram bd_stat bd_writes"),
    _c("bd_failed", "backing_failed_pages_total", "Backing-file page reads and writes that "
       "failed (EIO or ENOSPC for that page)."),
    _c("bd_full", "backing_full_pages_total", "Pages that found the backing file full or "
       "writeback_limit spent."),
    _c("writeback_dropped", "writeback_dropped_pages_total", "Pages written back while a "
       "write, discard or fault released them: the finished writeback was dropped."),
    _c("writeback_fallback", "writeback_fallback_pages_total", "Pages write control "
       "refused and fallback=writeback placed in the backing file."),
    _c("reclaim_compactions", "reclaim_compactions_total", "Compactions reclaim ran before "
       "a refusal.", unit=COUNT),
    _c("reclaim_written", "reclaim_written_pages_total", "Pages reclaim wrote back before "
       "a refusal."),
    _c("reclaim_rescued", "reclaim_rescued_pages_total", "Pages stored because reclaim made "
       "room."),
    _c("reclaim_failed", "reclaim_failed_pages_total", "Pages refused although reclaim ran."),
)
BY_NAME: dict[str, Stat] = {s.name: s for s in STATS}
NUMERIC = tuple(s for s in STATS if s.unit != TEXT)

# zram's files, field by field, named as zram's documentation names them
MM_STAT = ("orig_data_size", "compr_data_size", "mem_used_total", "mem_limit", "mem_used_max",
           "same_pages", "pages_compacted", "huge_pages", "huge_pages_since")
IO_STAT = ("failed_reads", "failed_writes", "invalid_io", "notify_free")
