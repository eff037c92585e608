"""Fixtures that run the real `cramfs` command on a temp dir.

Every mount is torn down, and its daemon reaped, whatever the test did: the
teardown unmounts (lazily if a test left something open) and kills the daemon
if it does not exit by itself.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cramfs.lab.child import Daemon, is_mounted, unmount

__all__ = ["CRAMFS", "Mount", "is_mounted", "mount_unavailable", "start_mount", "unmount"]

CRAMFS = str(Path(sys.executable).parent / "cramfs")


def mount_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "real-mount tests need root"
    if not os.path.exists("/dev/fuse"):
        return "this machine has no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed"
    return None


class Mount:
    """A live cramfs mount and the daemon behind it."""

    def __init__(self, path: Path, *args: str) -> None:
        self.path = path
        self.log = path.with_suffix(".log")
        self.daemon = Daemon([CRAMFS, "--foreground", "--log", str(self.log), *args], path)
        self.proc = self.daemon.proc

    def ctl(self, name: str) -> str:
        return (self.path / ".cram" / name).read_text()

    def set(self, name: str, value: str) -> None:
        with open(self.path / ".cram" / name, "w") as f:
            f.write(value + "\n")

    def stat(self) -> dict[str, float]:
        return {k: float(v) for k, v in (line.split() for line in self.ctl("stat").splitlines())}

    def close(self) -> None:
        self.daemon.close(timeout=15)


def start_mount(path: Path, *args: str) -> Mount:
    path.mkdir(exist_ok=True)
    return Mount(path, *args)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """One rule for the `mount` marker: every test that mounts (through the fixtures or
    by its own mark) carries it, so `pytest -m "not mount"` runs every layer that needs
    no root; and each one skips, saying why, where this machine cannot mount."""
    reason = mount_unavailable()
    for item in items:
        if {"mounter", "mnt"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.mount)
        if reason and item.get_closest_marker("mount"):
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture
def mount_options() -> tuple[str, ...]:
    """Options every mount of a test gets first; a module overrides this fixture to
    run its tests on each engine, say."""
    return ()


@pytest.fixture
def mounter(tmp_path: Path, mount_options: tuple[str, ...]) -> Iterator[Callable[..., Mount]]:
    mounts: list[Mount] = []

    def make(*args: str) -> Mount:
        m = start_mount(tmp_path / f"mnt{len(mounts)}", *mount_options, *args)
        mounts.append(m)
        return m

    yield make
    for m in mounts:
        m.close()


@pytest.fixture
def mnt(mounter: Callable[..., Mount]) -> Mount:
    return mounter()
