"""cramfs-trace: look at a recorded trace, replay it, and ask what-if.

    cramfs-trace show TRACE [--limit N]       the calls, one per line
    cramfs-trace stats TRACE                  a summary
    cramfs-trace replay TRACE [-o k=v,...]    into a fresh in-process device; mm_stat at the end
    cramfs-trace pages TRACE [--limit N]      every page's outcome, from an exact replay
    cramfs-trace whatif TRACE --physical 256M,512M,1G --compressor lz4,zstd [--plot FILE]

Record one with `echo start /var/tmp/run.trace > /mnt/cram/.cram/trace` (and `stop`).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from pathlib import Path

from . import pagelog, replay, trace
from .cli import Parser, UsageError
from .units import format_size

# the settings whatif can vary, each a --flag of the same name
WHATIF = ("physical", "compressor", "warn_at", "critical_at", "dram", "mode", "write_control",
          "fallback")


def _options(items: list[str]) -> dict[str, str]:
    out = {}
    for item in ",".join(items).split(","):
        if not item:
            continue
        name, eq, value = item.partition("=")
        if not eq:
            raise UsageError(f"-o wants name=value, got {item!r}")
        out[name] = value
    return out


def cmd_show(args: argparse.Namespace) -> int:
    header, records = trace.read_trace(args.trace)
    s = header["settings"]
    print(f"# settings: {' '.join(f'{k}={v}' for k, v in s.items())}")
    print(f"# started {'empty' if header['empty'] else 'NOT empty'}; mm_stat {header['mm_stat']}")
    for n, r in enumerate(records):
        if args.limit is not None and n >= args.limit:
            break
        what = ""
        if r.op == trace.WRITE:
            what = f"{r.size} bytes"
        elif r.op in (trace.CREATE, trace.UNLINK, trace.RENAME):
            what = repr(r.text().replace("\0", " -> "))
        elif r.op == trace.CONTROL:
            name, _, value = r.text().partition("\0")
            what = f"{name}={value.strip()!r}"
        elif r.op == trace.STOP:
            what = r.text()
        result = f"-{os.strerror(-r.result)}" if r.result < 0 else str(r.result)
        print(f"{r.time:11.6f} {r.name:8} ino={r.ino} a={r.a} b={r.b} -> {result} {what}"
              .rstrip())
    return 0


def cmd_pages(args: argparse.Namespace) -> int:
    """Each page transition of the recorded run, as the replay makes it again: the
    trace holds the device's inputs, and the device decides the same way twice."""
    header, records = trace.read_trace(args.trace)
    counts: collections.Counter[str] = collections.Counter()
    shown = 0
    print("# time op file page size result")

    def observe(e: pagelog.PageEvent) -> None:
        nonlocal shown
        counts[e.result] += 1
        if args.limit is None or shown < args.limit:
            shown += 1
            print(f"{e.time:11.6f} {e.op:10} {e.file!r} {e.page} {e.size} {e.result}")

    out = replay.replay(header, records, _options(args.options), observe=observe)
    print("# " + " ".join(f"{r}={counts[r]}" for r in pagelog.RESULTS if counts[r]))
    if out.recorded_mm_stat is not None:
        print(f"# replay {'matches' if out.exact else 'DIFFERS FROM'} the recorded mm_stat")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    header, records = trace.read_trace(args.trace)
    ops: collections.Counter[str] = collections.Counter()
    errors: collections.Counter[str] = collections.Counter()
    written = read = 0
    end = None
    duration = 0.0
    for r in records:
        if r.op == trace.STOP:
            end = r
            duration = r.time
            break
        ops[r.name] += 1
        duration = r.time
        if r.result < 0:
            errors[f"{r.name} {os.strerror(-r.result)}"] += 1
        if r.op == trace.WRITE and r.result > 0:
            written += r.result
        elif r.op == trace.READ and r.result > 0:
            read += r.result
    print(f"duration: {duration:.3f} s; started {'empty' if header['empty'] else 'NOT empty'}"
          f"; {'ended with stop' if end else 'cut short (no stop record)'}")
    print(f"settings: {' '.join(f'{k}={v}' for k, v in header['settings'].items())}")
    print("pages kept as: " + ", ".join(["lz4", *header.get("compressors", ())]))
    print("calls: " + ", ".join(f"{n} {c}" for n, c in ops.most_common()))
    print(f"written: {format_size(written)}; read: {format_size(read)}")
    print("errors: " + (", ".join(f"{n} x{c}" for n, c in errors.most_common()) or "none"))
    if end is not None:
        print(f"final mm_stat: {json.loads(end.payload)['mm_stat']}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    header, records = trace.read_trace(args.trace)
    overrides = _options(args.options)
    try:
        replay.config_of(header, overrides)
    except ValueError as e:
        raise UsageError(str(e)) from None
    print(f"{'time s':>9} {'fill':>7} {'ratio':>6} level")

    def show(s: replay.Sample) -> None:
        ratio = "inf" if s.ratio == float("inf") else f"{s.ratio:.2f}"
        print(f"{s.time:9.3f} {s.fill:7.2%} {ratio:>6} {s.level}")

    out = replay.replay(header, records, overrides, args.every, show)
    print(f"mm_stat: {out.mm_stat}")
    if header.get("lz4") != trace.LZ4_KIND:
        print("note: recorded before cramfs's lz4 compressed as the kernel's does: the "
              "pages it kept are python-lz4's blocks, so this mm_stat is the recording's "
              "compressor's, and cramfs's lz4 today can differ by a few bytes a page")
    if out.recorded_mm_stat is not None:
        if out.exact:
            print("the recorded run ended in the same mm_stat")
        else:
            print(f"the recorded run ended in: {out.recorded_mm_stat}")
    speed = f" ({out.duration / out.elapsed:.1f}x the recorded run's pace)" if out.elapsed else ""
    print(f"replayed {out.records} calls of {out.duration:.2f} s in {out.elapsed:.2f} s{speed}; "
          f"{out.diverged} results differ from the recording, {out.skipped} skipped")
    return 0


def cmd_whatif(args: argparse.Namespace) -> int:
    header, _ = trace.read_trace(args.trace)
    axes: dict[str, list[str]] = {}
    for name in WHATIF:
        values = getattr(args, name)
        if values:
            axes[name] = [v for v in values.split(",") if v]
    if not axes:
        raise UsageError("give at least one of " + ", ".join(
            f"--{f.replace('_', '-')}" for f in WHATIF))
    combos = replay.grid(axes)
    for combo in combos:
        try:
            replay.config_of(header, combo)
        except ValueError as e:
            raise UsageError(f"{combo}: {e}") from None
    kept = ("lz4", "none", *header.get("compressors", ()))
    for name in axes.get("compressor", ()):
        if name not in kept:
            print(f"# compressor={name}: this trace did not keep its blocks, so every written "
                  f"page is compressed again (record with 'compressors={name}' to skip that)")
    results = []
    for combo in combos:
        _, records = trace.read_trace(args.trace)
        results.append(replay.replay(header, records, combo, args.every))
    cols = list(axes)
    print("| " + " | ".join(cols) + " | peak fill | s in warn | s in critical | refused pages "
          "| peak fallback pages | overflowed | replay s |")
    print("|" + "---|" * (len(cols) + 7))
    for combo, out in zip(combos, results, strict=True):
        print("| " + " | ".join(combo[c] for c in cols) + f" | {out.peak_fill:.1%} | "
              f"{out.seconds_in.get('warn', 0):.2f} | {out.seconds_in.get('critical', 0):.2f} | "
              f"{out.refused_pages} | {out.peak_fallback_pages} | "
              f"{'yes' if out.overflowed else 'no'} | {out.elapsed:.2f} |")
    if "physical" in axes:
        # the capacity planner's answer, for each combination of the other settings
        others: dict[tuple[tuple[str, str], ...], list[tuple[int, str]]] = {}
        for c, o in zip(combos, results, strict=True):
            key = tuple((k, v) for k, v in c.items() if k != "physical")
            calm = not o.seconds_in.get("critical") and not o.seconds_in.get("full")
            others.setdefault(key, [])
            if calm:
                others[key].append((replay.config_of(header, c).physical, c["physical"]))
        for key, calm_sizes in others.items():
            where = (" with " + " ".join(f"{k}={v}" for k, v in key)) if key else ""
            if calm_sizes:
                print(f"smallest physical that stays out of critical{where}: "
                      f"{min(calm_sizes)[1]}")
            else:
                print(f"no physical size tried stays out of critical{where}")
    if args.plot is not None:
        _plot(combos, results, args.plot)
        print(f"plot: {args.plot}")
    return 0


def _plot(combos: list[dict[str, str]], results: list[replay.Outcome], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib (pip install 'cramfs[lab]')") from None
    fig, ax = plt.subplots(figsize=(10, 5))
    for combo, out in zip(combos, results, strict=True):
        ax.plot([s.time for s in out.samples], [s.fill * 100 for s in out.samples],
                label=" ".join(f"{k}={v}" for k, v in combo.items()))
    ax.set_xlabel("recorded time, s")
    ax.set_ylabel("fill, % of physical")
    ax.set_title("what-if: the same recorded requests against other settings")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> Parser:
    p = Parser(prog="cramfs-trace", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    s = sub.add_parser("show", help="the recorded calls, one per line")
    s.add_argument("trace", type=Path)
    s.add_argument("--limit", type=int, help="at most this many")
    s.set_defaults(func=cmd_show)
    s = sub.add_parser("stats", help="a summary of a trace")
    s.add_argument("trace", type=Path)
    s.set_defaults(func=cmd_stats)
    s = sub.add_parser("replay", help="replay into a fresh in-process device")
    s.add_argument("trace", type=Path)
    s.add_argument("-o", dest="options", action="append", default=[],
                   help="settings to change, as mount options (k=v,...)")
    s.add_argument("--every", type=float, default=0.5, help="timeline step, recorded seconds")
    s.set_defaults(func=cmd_replay)
    s = sub.add_parser("pages", help="every page's outcome (stored, same, huge, fallback, "
                       "refused, promoted, demoted, discarded, ...), from an exact replay")
    s.add_argument("trace", type=Path)
    s.add_argument("--limit", type=int, help="print at most this many (all are counted)")
    s.add_argument("-o", dest="options", action="append", default=[],
                   help="settings to change, as mount options (k=v,...)")
    s.set_defaults(func=cmd_pages)
    s = sub.add_parser("whatif", help="replay under every combination of the given settings")
    s.add_argument("trace", type=Path)
    for flag in WHATIF:
        s.add_argument(f"--{flag.replace('_', '-')}", dest=flag, metavar="V1,V2,...")
    s.add_argument("--every", type=float, default=0.5, help="timeline step, recorded seconds")
    s.add_argument("--plot", type=Path, help="also plot fill over time (needs matplotlib)")
    s.set_defaults(func=cmd_whatif)
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.func(args))
    except UsageError as e:
        print(f"cramfs-trace: {e}", file=sys.stderr)
        return 2
    except trace.TraceError as e:
        print(f"cramfs-trace: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:          # `cramfs-trace show | head`: before OSError
        os._exit(0)
    except OSError as e:
        print(f"cramfs-trace: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
