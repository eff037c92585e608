"""Swap on a cramfs slot file, through a direct-I/O loop device, and its teardown.

    python -m cramfs.lab.swap up /mnt/cram 1G      # truncate, losetup, mkswap, swapon
    python -m cramfs.lab.swap down /mnt/cram       # swapoff, losetup -d, rm

Every step is printed as the command a person could retype. Teardown finds its
loop devices by their backing file (/sys/block/loop*/loop/backing_file), so it
is safe twice, safe after a half-finished set-up, and never touches a swap or
loop device that does not sit on this slot file.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ..units import parse_size
from .cgroup import CgroupUnavailable, detect

Echo = Callable[[str], None]
DEFAULT_NAME = "swap0"


def _echo(line: str) -> None:
    print(line, flush=True)


def run(cmd: list[str], echo: Echo) -> str:
    echo(shlex.join(cmd))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)}: {r.stderr.strip() or f'exit {r.returncode}'}")
    return r.stdout.strip()


def active_swaps() -> dict[str, int]:
    """Swap device -> priority, from /proc/swaps."""
    lines = Path("/proc/swaps").read_text().splitlines()[1:]
    return {f[0]: int(f[4]) for f in (line.split() for line in lines)}


def swap_used(device: str) -> int:
    """The kernel's Used for one swap device, in bytes (0 if it is not a swap)."""
    if not device:
        return 0
    for fields in (line.split() for line in Path("/proc/swaps").read_text().splitlines()[1:]):
        if fields[0] == device:
            return int(fields[3]) * 1024
    return 0


def loops_backed_by(path: Path) -> list[str]:
    found = []
    for backing in Path("/sys/block").glob("loop*/loop/backing_file"):
        name = backing.read_text().strip().removesuffix(" (deleted)")
        if name == str(path):
            found.append(f"/dev/{backing.parent.parent.name}")
    return sorted(found)


def unavailable() -> str | None:
    """Why swap through a loop device in a memory cgroup cannot run here, or None."""
    if os.geteuid() != 0:
        return "swap needs root"
    for tool in ("losetup", "mkswap", "swapon", "swapoff"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/dev/loop-control").exists():
        return "no loop devices (/dev/loop-control missing)"
    try:
        detect()
    except CgroupUnavailable as e:
        return str(e)
    return None


def top_priority() -> int:
    """A priority above every active swap, so the kernel fills this one first."""
    prios = list(active_swaps().values())
    return min(32767, max(prios) + 10) if prios else 100


def swap_up(mount: Path, size: int, name: str = DEFAULT_NAME, priority: int | None = None,
            echo: Echo = _echo, any_fs: bool = False, discard: bool = True) -> str:
    """Swap on a slot file of a cramfs mount (of any filesystem with `any_fs`, as the
    benchmark's baseline does).

    With `discard` (the default) swapon gets --discard with no policy, so both: the
    whole area is discarded once at swapon, and each cluster of slots once the kernel
    has freed all of it. Through the loop device these arrive as punch holes, so the
    device lets go of freed swap as zram does (zram hears of each slot at once)."""
    path = mount / name
    if loops_backed_by(path) or path.exists():
        raise RuntimeError(f"{path} is already set up; run `swap down {mount}` first")
    if not any_fs and not (mount / ".cram").is_dir():
        raise RuntimeError(f"{mount} is not a cramfs mount")
    prio = priority if priority is not None else top_priority()
    try:
        run(["truncate", "-s", str(size), str(path)], echo)
        loop = run(["losetup", "--direct-io=on", "--show", "-f", str(path)], echo)
        run(["mkswap", loop], echo)
        run(["swapon", *(["--discard"] if discard else []), "-p", str(prio), loop], echo)
    except (RuntimeError, OSError):
        echo("# set-up failed; undoing what was done")
        swap_down(mount, name, echo)
        raise
    return loop


def swap_down(mount: Path, name: str = DEFAULT_NAME, echo: Echo = _echo) -> None:
    path = mount / name
    swaps = active_swaps()
    for loop in loops_backed_by(path):
        if loop in swaps:
            run(["swapoff", loop], echo)
        run(["losetup", "-d", loop], echo)
    if path.exists():
        run(["rm", "-f", str(path)], echo)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cramfs.lab.swap", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="create the slot file and swap on it")
    up.add_argument("mount", type=Path)
    up.add_argument("size", type=parse_size)
    up.add_argument("--name", default=DEFAULT_NAME)
    up.add_argument("--priority", type=int)
    up.add_argument("--no-discard", dest="discard", action="store_false",
                    help="swapon without --discard: freed swap slots then stay on the "
                    "device until overwritten")
    down = sub.add_parser("down", help="undo `up`; safe to run twice")
    down.add_argument("mount", type=Path)
    down.add_argument("--name", default=DEFAULT_NAME)
    args = p.parse_args(argv)
    try:
        if args.action == "up":
            swap_up(args.mount.resolve(), args.size, args.name, args.priority,
                    discard=args.discard)
        else:
            swap_down(args.mount.resolve(), args.name)
    except (RuntimeError, OSError) as e:
        print(f"cramfs swap: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
