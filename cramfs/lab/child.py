"""A filesystem daemon run in the foreground as a child process.

The benchmark, the swap experiment and the mount tests all start a daemon
(`cramfs --foreground`, or the benchmark's baseline) on a directory, wait for
the mount to appear, and must unmount it and reap the daemon whatever
happened in between. This is that, once. The daemon's stderr goes to a
temporary file, not a pipe: nothing reads a pipe while the daemon serves, and
a full one would block it mid-request.
"""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path

from ..procfs import is_mounted

__all__ = ["Daemon", "is_mounted", "unmount"]


def unmount(path: Path) -> None:
    """Unmount if mounted; lazily if something still holds the mount open."""
    if is_mounted(path):
        r = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


class Daemon:
    """`argv MOUNTPOINT` started and waited for until the mount is live."""

    def __init__(self, argv: list[str], mountpoint: Path, timeout: float = 30) -> None:
        self.mountpoint = mountpoint
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (lives until close())
        self.proc = subprocess.Popen([*argv, str(mountpoint)], stdout=subprocess.DEVNULL,
                                     stderr=self._stderr)
        deadline = time.monotonic() + timeout
        while not is_mounted(mountpoint):
            if self.proc.poll() is not None:
                err = self.stderr()
                self.close()
                raise RuntimeError(f"{argv[0]} exited with status {self.proc.returncode}: "
                                   f"{err}")
            if time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"{argv[0]} did not mount {mountpoint} within {timeout:g} s")
            time.sleep(0.02)

    def stderr(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read().decode(errors="replace").strip()

    def close(self, timeout: float = 30) -> None:
        """Unmount and reap the daemon, killing it if it does not exit; safe twice."""
        unmount(self.mountpoint)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._stderr.close()
