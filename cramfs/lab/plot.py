"""The experiment plot: the device against its capacity, ratio, live swap, traffic, tiers."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")   # no display on these machines; must precede pyplot
import matplotlib.pyplot as plt

MIB = 1 << 20
BAND = {"warn": "#fff3b0", "critical": "#ffc9a8", "full": "#ff9b9b"}
STYLE = {"cramfs": "-", "zram": "--", "zswap": "-."}


def _rate(rows: list[dict[str, Any]], key: str, pages: bool = False) -> list[float]:
    """A counter of pages turned into MiB/s (or pages/s)."""
    scale = 1.0 if pages else 4096 / MIB
    out = [0.0]
    for a, b in itertools.pairwise(rows):
        dt = b["time"] - a["time"] or 1e-9
        out.append((b[key] - a[key]) * scale / dt)
    return out


def _bands(ax: Any, rs: list[dict[str, Any]]) -> None:
    """Shade the time cramfs spent above ok under its own physical-used line, and only
    there: the peers ran at other times on the same axis, so a band across the panel
    would lie behind their lines too."""
    t = [r["time"] for r in rs]
    used = [r["physical_used"] / MIB for r in rs]
    for level, colour in BAND.items():
        where = [r["danger"] == level for r in rs]
        if any(where):
            ax.fill_between(t, 0, used, where=where, color=colour, lw=0, step="post",
                            label=f"cramfs in {level}")


# A ratio over a few pages is the zspages' emptiness, not the data's compressibility:
# draw it once the device holds this much.
RATIO_FROM = 4 * MIB


def plot_timeline(rows: list[dict[str, Any]], path: Path, limit: int,
                  marks: list[tuple[float, str]] | None = None,
                  notes: dict[str, str] | None = None) -> None:
    """Six panels over time: each device's memory against its own limit (cramfs's
    thresholds and danger levels under its own line), the ratio, the kernel's swap Used
    against what each device holds, swap traffic, cramfs's refused, DRAM-tier and
    fallback pages, and the workload's memory. `marks` are cramfs's scheduled control
    writes; `notes` say what went wrong on a target (refused writes, a killed workload),
    written at the end of its line."""
    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig, axes = plt.subplots(6, 1, figsize=(10, 16), sharex=True)
    ax_mem, ax_ratio, ax_live, ax_swap, ax_tier, ax_rss = axes
    for name in targets:
        rs = [r for r in rows if r["target"] == name]
        t = [r["time"] for r in rs]
        ls = STYLE.get(name, ":")
        ax_mem.plot(t, [r["logical_stored"] / MIB for r in rs], ls, color="tab:blue",
                    label=f"{name} logical")
        ax_mem.plot(t, [r["physical_used"] / MIB for r in rs], ls, color="tab:red",
                    label=f"{name} physical used")
        own = max((r.get("physical") or 0 for r in rs), default=0)
        if own:
            what = {"cramfs": "physical", "zram": "mem_limit", "zswap": "max pool"}.get(
                name, "limit")
            ax_mem.axhline(own / MIB, color="black", lw=1, ls=ls, label=f"{name} {what}")
        ratios = [r["ratio"] if r["logical_stored"] >= RATIO_FROM
                  and r["ratio"] != float("inf") else None for r in rs]
        ax_ratio.plot(t, [x if x is not None else float("nan") for x in ratios], ls,
                      color="tab:green", label=f"{name} ratio")
        ax_live.plot(t, [r["swap_used"] / MIB for r in rs], ls, color="tab:purple",
                     label=f"{name}: kernel's swap Used")
        ax_live.plot(t, [r["device_held"] / MIB for r in rs], ls, color="tab:blue",
                     label=f"{name}: pages the device holds (DRAM tier and fallback too)")
        exited = next((r["time"] for r in rs if not r["running"]), None)
        if exited is not None:
            ax_live.axvline(exited, color="tab:gray", lw=0.8, ls=":")
            ax_live.annotate(f"{name} workload exits", (exited, 0.95),
                             xycoords=("data", "axes fraction"), fontsize="small",
                             color="tab:gray", ha="right", va="top")
        ax_swap.plot(t, _rate(rs, "pswpout"), ls, color="tab:purple", label=f"{name} out")
        ax_swap.plot(t, _rate(rs, "pswpin"), ls, color="tab:orange", label=f"{name} in")
        ax_rss.plot(t, [r["rss"] / MIB for r in rs], ls, color="tab:gray",
                    label=f"{name} workload RSS")
        if notes and name in notes and rs:
            # one line per target, stacked at the panel's lower left: nothing overlaps
            k = targets.index(name)
            ax_mem.annotate(f"{name}: {notes[name]}", (0.01, 0.04 + 0.09 * k),
                            xycoords="axes fraction", fontsize="small", color="darkred",
                            ha="left", va="bottom",
                            bbox={"boxstyle": "round", "fc": "white", "ec": "darkred"})
        if name == "cramfs":
            ax_tier.plot(t, [r["promoted_pages"] for r in rs], color="tab:green",
                         label="DRAM-tier pages")
            ax_tier.plot(t, [r["fallback_pages"] for r in rs], color="tab:red",
                         label="fallback pages (host memory)")
            ax_tier.plot(t, _rate(rs, "reject_write_control", pages=True), color="black",
                         lw=0.8, label="write-control refusals per second")
            if own:
                for key, colour in (("warn_at", "#c9a000"), ("critical_at", "#d9480f")):
                    if rs[-1].get(key) is not None:
                        ax_mem.axhline(own / MIB * float(rs[-1][key]), color=colour, lw=1,
                                       ls="--", label=f"cramfs {key.removesuffix('_at')}")
            _bands(ax_mem, rs)
    for k, (when, what) in enumerate(marks or [], 1):
        for ax in (ax_mem, ax_tier):
            ax.axvline(when, color="tab:brown", lw=0.8, ls="-.")
        # numbered, level and staggered, so that marks close in time stay legible
        ax_mem.annotate(f"{k}: {what}", (when, 0.97 - 0.07 * ((k - 1) % 4)),
                        xycoords=("data", "axes fraction"), fontsize="small",
                        color="tab:brown", ha="left", va="top",
                        bbox={"boxstyle": "round", "fc": "white", "ec": "tab:brown",
                              "alpha": 0.85})
    ax_rss.axhline(limit / MIB, color="black", lw=0.8, ls=":", label="cgroup limit")
    ax_mem.set_ylabel("MiB")
    ax_mem.set_title("each device's memory against its own limit (cramfs's danger levels "
                     "shaded under its line)")
    ax_ratio.set_ylabel("ratio")
    ax_ratio.set_title(f"compression ratio (logical / physical), drawn once a device holds "
                       f"{RATIO_FROM // MIB} MiB")
    ax_live.set_ylabel("MiB")
    ax_live.set_title("the kernel's swap Used next to what each device holds (swapon "
                      "--discard)")
    ax_swap.set_ylabel("MiB/s")
    ax_swap.set_title("swap traffic (pswpout, pswpin)")
    ax_tier.set_ylabel("pages")
    ax_tier.set_title("cramfs: DRAM tier, fallback and write-control refusals")
    ax_rss.set_ylabel("MiB")
    ax_rss.set_title("workload memory")
    ax_rss.set_xlabel("seconds")
    for ax in axes:
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(loc="upper right", fontsize="x-small", ncol=2 if len(handles) > 6 else 1)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
