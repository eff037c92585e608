"""A throw-away memory-limited cgroup: v2 (memory.max) where it is, v1 otherwise."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup/memory")


class CgroupUnavailable(Exception):
    pass


def detect() -> tuple[int, Path]:
    """(version, root) of the memory controller this machine offers."""
    controllers = V2_ROOT / "cgroup.controllers"
    if controllers.exists() and "memory" in controllers.read_text().split():
        return 2, V2_ROOT
    if (V1_ROOT / "memory.limit_in_bytes").exists():
        return 1, V1_ROOT
    raise CgroupUnavailable("no cgroup memory controller (neither v2 memory.max nor v1)")


class MemoryCgroup:
    def __init__(self, name: str, limit: int) -> None:
        self.version, root = detect()
        self.path = root / name
        self.path.mkdir()
        try:
            if self.version == 2:
                (self.path / "memory.max").write_text(str(limit))
            else:
                (self.path / "memory.limit_in_bytes").write_text(str(limit))
                # let the limit push anonymous memory to swap as readily as it would globally
                (self.path / "memory.swappiness").write_text("100")
        except OSError:
            self.path.rmdir()
            raise

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except OSError:
            return []

    def rss(self) -> int:
        """Anonymous memory resident in the cgroup, in bytes."""
        key = "anon" if self.version == 2 else "rss"
        try:
            for line in (self.path / "memory.stat").read_text().splitlines():
                name, value = line.split()
                if name == key:
                    return int(value)
        except OSError:
            pass
        return 0

    def remove(self) -> None:
        """Kill what is left inside and remove the group; safe to call twice."""
        deadline = time.monotonic() + 10
        while self.path.exists():
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            try:
                self.path.rmdir()
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
