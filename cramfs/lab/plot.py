"""The experiment plot: device usage, ratio, danger bands and swap traffic over time."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")   # no display on these machines; must precede pyplot
import matplotlib.pyplot as plt

MIB = 1 << 20
BAND = {"warn": "#fff3b0", "critical": "#ffc9a8", "full": "#ff9b9b"}
STYLE = {"cramfs": "-", "zram": "--"}


def _rate(rows: list[dict[str, Any]], key: str) -> list[float]:
    """Pages per sample turned into MiB/s."""
    out = [0.0]
    for a, b in itertools.pairwise(rows):
        dt = b["time"] - a["time"] or 1e-9
        out.append((b[key] - a[key]) * 4096 / MIB / dt)
    return out


def plot_timeline(rows: list[dict[str, Any]], path: Path, limit: int) -> None:
    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig, axes = plt.subplots(4, 1, figsize=(10, 11), sharex=True)
    ax_mem, ax_ratio, ax_swap, ax_rss = axes
    for name in targets:
        rs = [r for r in rows if r["target"] == name]
        t = [r["time"] for r in rs]
        ls = STYLE.get(name, ":")
        ax_mem.plot(t, [r["logical_stored"] / MIB for r in rs], ls, color="tab:blue",
                    label=f"{name} logical")
        ax_mem.plot(t, [r["physical_used"] / MIB for r in rs], ls, color="tab:red",
                    label=f"{name} physical")
        ratios = [r["ratio"] if r["physical_used"] and r["ratio"] != float("inf") else None
                  for r in rs]
        ax_ratio.plot(t, [x if x is not None else float("nan") for x in ratios], ls,
                      color="tab:green", label=f"{name} ratio")
        ax_swap.plot(t, _rate(rs, "pswpout"), ls, color="tab:purple", label=f"{name} out")
        ax_swap.plot(t, _rate(rs, "pswpin"), ls, color="tab:orange", label=f"{name} in")
        ax_rss.plot(t, [r["rss"] / MIB for r in rs], ls, color="tab:gray",
                    label=f"{name} workload RSS")
        if name == "cramfs":
            # danger bands: shade each stretch spent above ok
            start = None
            for i, r in enumerate([*rs, {"danger": "ok", "time": t[-1] if t else 0}]):
                level = r["danger"]
                if start is not None and level != rs[start]["danger"]:
                    for ax in axes:
                        ax.axvspan(rs[start]["time"], r["time"],
                                   color=BAND[rs[start]["danger"]], lw=0)
                    start = None
                if start is None and level in BAND and i < len(rs):
                    start = i
    ax_rss.axhline(limit / MIB, color="black", lw=0.8, ls=":", label="cgroup limit")
    ax_mem.set_ylabel("MiB")
    ax_mem.set_title("device: logical stored vs physical used (bands: warn/critical/full)")
    ax_ratio.set_ylabel("ratio")
    ax_ratio.set_title("compression ratio (logical / physical)")
    ax_swap.set_ylabel("MiB/s")
    ax_swap.set_title("swap traffic (pswpout, pswpin)")
    ax_rss.set_ylabel("MiB")
    ax_rss.set_title("workload memory")
    ax_rss.set_xlabel("seconds")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
