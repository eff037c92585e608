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


def _bands(axes: Any, rs: list[dict[str, Any]]) -> None:
    """Shade each stretch the device spent above ok, on every panel."""
    start = None
    end = rs[-1]["time"] if rs else 0
    for i, r in enumerate([*rs, {"danger": "ok", "time": end}]):
        level = r["danger"]
        if start is not None and level != rs[start]["danger"]:
            for ax in axes:
                ax.axvspan(rs[start]["time"], r["time"], color=BAND[rs[start]["danger"]], lw=0)
            start = None
        if start is None and level in BAND and i < len(rs):
            start = i


def plot_timeline(rows: list[dict[str, Any]], path: Path, limit: int,
                  marks: list[tuple[float, str]] | None = None) -> None:
    """Six panels over time: the device's memory against its capacity and thresholds,
    the ratio, the kernel's live swap next to what the device still stores, swap
    traffic, the refused, DRAM-tier and fallback pages, and the workload's memory."""
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
        ratios = [r["ratio"] if r["physical_used"] and r["ratio"] != float("inf") else None
                  for r in rs]
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
        if name == "cramfs":
            ax_tier.plot(t, [r["promoted_pages"] for r in rs], color="tab:green",
                         label="DRAM-tier pages")
            ax_tier.plot(t, [r["fallback_pages"] for r in rs], color="tab:red",
                         label="fallback pages (host memory)")
            ax_tier.plot(t, _rate(rs, "reject_write_control", pages=True), color="black",
                         lw=0.8, label="write-control refusals per second")
            if rs and rs[-1].get("physical"):
                physical = rs[-1]["physical"] / MIB
                ax_mem.axhline(physical, color="black", lw=1, label="physical capacity")
                for key, colour in (("warn_at", "#c9a000"), ("critical_at", "#d9480f")):
                    if rs[-1].get(key) is not None:
                        ax_mem.axhline(physical * float(rs[-1][key]), color=colour, lw=1,
                                       ls="--", label=f"{key.removesuffix('_at')} threshold")
            _bands(axes, rs)
    for when, what in marks or []:
        for ax in axes:
            ax.axvline(when, color="tab:brown", lw=0.8, ls="-.")
        ax_mem.annotate(what, (when, 1), xycoords=("data", "axes fraction"), rotation=90,
                        va="top", ha="right", fontsize="x-small", color="tab:brown")
    ax_rss.axhline(limit / MIB, color="black", lw=0.8, ls=":", label="cgroup limit")
    ax_mem.set_ylabel("MiB")
    ax_mem.set_title("device: logical stored and physical used against capacity and thresholds"
                     " (bands: warn/critical/full)")
    ax_ratio.set_ylabel("ratio")
    ax_ratio.set_title("compression ratio (logical / physical)")
    ax_live.set_ylabel("MiB")
    ax_live.set_title("the kernel's swap Used next to what the device holds (freed slots "
                      "reach cramfs as discards: swapon --discard)")
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
            ax.legend(loc="upper right", fontsize="x-small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
