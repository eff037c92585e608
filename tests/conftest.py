"""Fixtures that run the real `cramfs` command on a temp dir.

Every mount is torn down, and its daemon reaped, whatever the test did: the
teardown unmounts (lazily if a test left something open) and kills the daemon
if it does not exit by itself.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

CRAMFS = str(Path(sys.executable).parent / "cramfs")


def mount_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "real-mount tests need root"
    if not os.path.exists("/dev/fuse"):
        return "this machine has no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    return None


def is_mounted(path: Path) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == str(path) for line in f)


def unmount(path: Path) -> None:
    if is_mounted(path):
        r = subprocess.run(["fusermount3", "-u", str(path)], capture_output=True)
        if r.returncode != 0:
            subprocess.run(["fusermount3", "-u", "-z", str(path)], capture_output=True)


class Mount:
    """A live cramfs mount and the daemon behind it."""

    def __init__(self, path: Path, proc: subprocess.Popen[bytes], log: Path) -> None:
        self.path = path
        self.proc = proc
        self.log = log

    def ctl(self, name: str) -> str:
        return (self.path / ".cram" / name).read_text()

    def set(self, name: str, value: str) -> None:
        with open(self.path / ".cram" / name, "w") as f:
            f.write(value + "\n")

    def stat(self) -> dict[str, float]:
        return {k: float(v) for k, v in (line.split() for line in self.ctl("stat").splitlines())}

    def close(self) -> None:
        unmount(self.path)
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_mount(path: Path, *args: str) -> Mount:
    path.mkdir(exist_ok=True)
    log = path.with_suffix(".log")
    proc = subprocess.Popen([CRAMFS, "--foreground", "--log", str(log), *args, str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not is_mounted(path):
        if proc.poll() is not None:
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise RuntimeError(f"cramfs exited with {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError("cramfs did not mount within 30 s")
        time.sleep(0.02)
    return Mount(path, proc, log)


@pytest.fixture
def mounter(tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    reason = mount_unavailable()
    if reason:
        pytest.skip(reason)
    mounts: list[Mount] = []

    def make(*args: str) -> Mount:
        m = start_mount(tmp_path / f"mnt{len(mounts)}", *args)
        mounts.append(m)
        return m

    yield make
    for m in mounts:
        m.close()


@pytest.fixture
def mnt(mounter: Callable[..., Mount]) -> Mount:
    return mounter()
