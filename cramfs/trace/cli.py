"""cramfs-trace: look at a recorded trace, replay it, and ask what-if.

    cramfs-trace show TRACE [--limit N]       the calls, one per line
    cramfs-trace stats TRACE                  a summary
    cramfs-trace replay TRACE [-o k=v,...]    into a fresh in-process device; mm_stat at the end
    cramfs-trace pages TRACE [--limit N]      every page's outcome, from an exact replay
    cramfs-trace whatif TRACE --physical 256M,512M,1G --compressor lz4,zstd [--plot FILE]

Record one with `echo start /var/tmp/run.trace > /mnt/cram/.cram/trace` (and `stop`).
A trace cut off or damaged (no stop record, a record cut short) is an error naming
the byte where it ends; --partial reads the whole records before it, with a warning.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import trace
from ..cli import Parser, UsageError
from ..units import format_percent, format_size
from . import outcomes, replay

# the settings whatif can vary, each a --flag of the same name
WHATIF = ("physical", "compressor", "warn_at", "critical_at", "dram", "mode", "write_control",
          "fallback")
# samples a default --every gives, over the trace's whole length: rows of replay's
# timeline, points of each line of whatif's plot
TIMELINE_ROWS = 20
PLOT_POINTS = 400


def _flag(name: str) -> str:
    return f"--{name.replace('_', '-')}"


_TOLD: set[str] = set()


def _warn(text: str) -> None:
    """A warning on stderr, once: whatif reads the trace again for every combination."""
    if text not in _TOLD:
        _TOLD.add(text)
        print(f"cramfs-trace: warning: {text}", file=sys.stderr)


def _read(args: argparse.Namespace) -> tuple[dict[str, Any], Iterator[trace.Record],
                                             trace.Extent]:
    """The trace's header, records and extent. Cut off or damaged, it is an error naming
    where it ends, unless --partial asks for the whole records before that (a warning
    says where they stop)."""
    extent = trace.scan(args.trace)
    if extent.problem is not None and not args.partial:
        raise trace.TraceError(f"{args.trace}: {extent.problem}; --partial reads the "
                               f"{extent.records} whole records before byte {extent.end}")
    header, records = trace.read_trace(args.trace, partial=args.partial, warn=_warn)
    return header, records, extent


def _every(args: argparse.Namespace, extent: trace.Extent, samples: int) -> float:
    if args.every is None:
        return replay.default_step(extent.duration, samples)
    if not args.every > 0:
        raise UsageError(f"--every {args.every:g}: the step must be above 0 seconds")
    return float(args.every)


def _check(header: dict[str, Any], changes: dict[str, str],
           spelled: Callable[[str, str], str]) -> None:
    """Each change alone, then all of them together, as the device would take them; an
    error names the options and values as the user wrote them (`spelled`)."""
    for name, value in changes.items():
        try:
            replay.config_of(header, {name: value})
        except ValueError as e:
            raise UsageError(f"{spelled(name, value)}: {e}") from None
    try:
        replay.config_of(header, changes)
    except ValueError as e:
        raise UsageError(f"{' '.join(spelled(n, v) for n, v in changes.items())}: {e}") \
            from None


def _o(name: str, value: str) -> str:
    return f"-o {name}={value}"


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
    header, records, _ = _read(args)
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
    header, records, _ = _read(args)
    overrides = _options(args.options)
    _check(header, overrides, _o)
    counts: collections.Counter[str] = collections.Counter()
    shown = 0
    print("# time op file page size result")

    def observe(e: outcomes.PageEvent) -> None:
        nonlocal shown
        counts[e.result] += 1
        if args.limit is None or shown < args.limit:
            shown += 1
            print(f"{e.time:11.6f} {e.op:10} {e.file!r} {e.page} {e.size} {e.result}")

    out = replay.replay(header, records, overrides, observe=observe)
    print("# " + " ".join(f"{r}={counts[r]}" for r in outcomes.RESULTS if counts[r]))
    if out.recorded_mm_stat is not None:
        print(f"# replay {'matches' if out.exact else 'DIFFERS FROM'} the recorded mm_stat")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    header, records, extent = _read(args)
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
          f"; {'ended with stop' if end else f'cut short: {extent.problem}'}")
    print(f"settings: {' '.join(f'{k}={v}' for k, v in header['settings'].items())}")
    print("pages kept as: " + ", ".join(["lz4", *header.get("compressors", ())]))
    print("calls: " + ", ".join(f"{n} {c}" for n, c in ops.most_common()))
    print(f"written: {format_size(written)}; read: {format_size(read)}")
    print("errors: " + (", ".join(f"{n} x{c}" for n, c in errors.most_common()) or "none"))
    if end is not None:
        print(f"final mm_stat: {json.loads(end.payload)['mm_stat']}")
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    header, records, extent = _read(args)
    overrides = _options(args.options)
    _check(header, overrides, _o)
    every = _every(args, extent, TIMELINE_ROWS)
    print(f"{'time s':>9} {'fill':>7} {'ratio':>6} level")

    def show(s: replay.Sample) -> None:
        ratio = "inf" if s.ratio == float("inf") else f"{s.ratio:.2f}"
        print(f"{s.time:9.3f} {s.fill:7.2%} {ratio:>6} {s.level}")

    out = replay.replay(header, records, overrides, every, show)
    print(f"mm_stat: {out.mm_stat}")
    if header.get("lz4") != trace.LZ4_KIND:
        print("note: recorded before cramfs's lz4, lzo and lzo-rle compressed as the "
              "kernel's do: the pages it kept as lz4 are python-lz4's blocks, and lzo is "
              "compressed again by today's lzo, so this mm_stat can differ from the "
              "recording's by a few bytes a page")
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
    header, _, extent = _read(args)
    every = _every(args, extent, PLOT_POINTS)
    axes: dict[str, list[str]] = {}
    for name in WHATIF:
        values = getattr(args, name)
        if values:
            axes[name] = [v for v in values.split(",") if v]
    if not axes:
        raise UsageError("give at least one of " + ", ".join(map(_flag, WHATIF)))
    combos = replay.grid(axes)
    for combo in combos:
        _check(header, combo, lambda name, value: f"{_flag(name)} {value}")
    kept = ("lz4", "none", *header.get("compressors", ()))
    for name in axes.get("compressor", ()):
        if name not in kept:
            print(f"# compressor={name}: this trace did not keep its blocks, so every written "
                  f"page is compressed again (record with 'compressors={name}' to skip that)")
    results = []
    for combo in combos:
        _, records, _ = _read(args)
        results.append(replay.replay(header, records, combo, every))
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
        _plot(header, combos, results, args.plot)
        print(f"plot: {args.plot}")
    return 0


def _plot(header: dict[str, Any], combos: list[dict[str, str]],
          results: list[replay.Outcome], path: Path) -> None:
    fig = figure(header, combos, results)
    fig.savefig(path, dpi=100)
    import matplotlib.pyplot as plt

    plt.close(fig)


def figure(header: dict[str, Any], combos: list[dict[str, str]],
           results: list[replay.Outcome]) -> Any:
    """Fill over recorded time, a line for each combination, over the warn and critical
    thresholds each one ran under (a dashed line per distinct value): where a line
    crosses them is where the device would have warned or refused."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError("--plot needs matplotlib (pip install 'cramfs[lab]')") from None
    fig, ax = plt.subplots(figsize=(10, 5))
    for combo, out in zip(combos, results, strict=True):
        ax.plot([s.time for s in out.samples], [s.fill * 100 for s in out.samples],
                marker="." if len(out.samples) < 3 else None,     # one or two: still seen
                label=" ".join(f"{k}={v}" for k, v in combo.items()))
    configs = [replay.config_of(header, combo) for combo in combos]
    for name, colour in (("warn_at", "orange"), ("critical_at", "red")):
        for value in sorted({getattr(c, name) for c in configs}):
            ax.axhline(value * 100, color=colour, linestyle="--", linewidth=1,
                       label=f"{name.removesuffix('_at')} at {format_percent(value)}")
    ax.set_xlabel("recorded time, s")
    ax.set_ylabel("fill, % of physical")
    ax.set_title("what-if: the same recorded requests against other settings")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def build_parser() -> Parser:
    p = Parser(prog="cramfs-trace", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    partial = Parser(add_help=False)
    partial.add_argument("--partial", action="store_true",
                         help="read a trace cut off or damaged up to where it ends (a "
                         "warning says where), rather than refuse it")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    s = sub.add_parser("show", parents=[partial], help="the recorded calls, one per line")
    s.add_argument("trace", type=Path)
    s.add_argument("--limit", type=int, help="at most this many")
    s.set_defaults(func=cmd_show)
    s = sub.add_parser("stats", parents=[partial], help="a summary of a trace")
    s.add_argument("trace", type=Path)
    s.set_defaults(func=cmd_stats)
    s = sub.add_parser("replay", parents=[partial], help="replay into a fresh in-process device")
    s.add_argument("trace", type=Path)
    s.add_argument("-o", dest="options", action="append", default=[],
                   help="settings to change, as mount options (k=v,...)")
    s.add_argument("--every", type=float, help="timeline step, recorded seconds (default: "
                   f"the trace's length / {TIMELINE_ROWS})")
    s.set_defaults(func=cmd_replay)
    s = sub.add_parser("pages", parents=[partial],
                       help="every page's outcome (stored, same, huge, fallback, refused, "
                       "promoted, demoted, discarded, ...), from an exact replay")
    s.add_argument("trace", type=Path)
    s.add_argument("--limit", type=int, help="print at most this many (all are counted)")
    s.add_argument("-o", dest="options", action="append", default=[],
                   help="settings to change, as mount options (k=v,...)")
    s.set_defaults(func=cmd_pages)
    s = sub.add_parser("whatif", parents=[partial],
                       help="replay under every combination of the given settings")
    s.add_argument("trace", type=Path)
    for flag in WHATIF:
        s.add_argument(f"--{flag.replace('_', '-')}", dest=flag, metavar="V1,V2,...")
    s.add_argument("--every", type=float, help="sample step, recorded seconds (default: "
                   f"the trace's length / {PLOT_POINTS}); the end is always sampled")
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
