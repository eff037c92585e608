"""scripts/link, which scripts/setup runs: the machine-wide commands and the mount helper
point at a checkout only where none exists yet (or points at nothing), or when asked.
Run against a fake /usr/local/bin and /sbin (CRAMFS_BINDIR, CRAMFS_SBINDIR)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = ("cramfs", "cramctl", "cramfs-trace")
HERE = ROOT / ".venv" / "bin"


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    bindir, sbindir = tmp_path / "bin", tmp_path / "sbin"
    bindir.mkdir()
    sbindir.mkdir()
    return bindir, sbindir


def link(dirs: tuple[Path, Path], *args: str) -> str:
    env = {**os.environ, "CRAMFS_BINDIR": str(dirs[0]), "CRAMFS_SBINDIR": str(dirs[1])}
    r = subprocess.run([ROOT / "scripts" / "link", *args], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert r.stdout.count("\n") == 1, "one line"
    return r.stdout.strip()


def helper_runs(sbindir: Path) -> str:
    text = (sbindir / "mount.fuse.cramfs").read_text()
    (line,) = [ln for ln in text.splitlines() if ln.startswith("exec ")]
    return line.split('"')[1]


def other_clone(tmp_path: Path) -> Path:
    """Another checkout's .venv/bin, its commands there."""
    bin_ = tmp_path / "other" / ".venv" / "bin"
    bin_.mkdir(parents=True)
    for name in COMMANDS:
        (bin_ / name).write_text("#!/bin/sh\n")
        (bin_ / name).chmod(0o755)
    return bin_


def test_a_fresh_machine_gets_every_link(dirs):
    bindir, sbindir = dirs
    line = link(dirs)
    assert line.startswith("pointed ") and line.endswith(f" at {ROOT}")
    for name in COMMANDS:
        assert os.readlink(bindir / name) == str(HERE / name)
        assert f"{bindir / name}" in line
    assert helper_runs(sbindir) == str(HERE / "cramfs")
    assert link(dirs) == ("cramfs, cramctl, cramfs-trace and the mount helper already point "
                          f"at {ROOT}")


def test_another_clones_links_are_left_unless_asked(dirs, tmp_path):
    bindir, sbindir = dirs
    other = other_clone(tmp_path)
    for name in COMMANDS:
        (bindir / name).symlink_to(other / name)
    env = {**os.environ, "CRAMFS_SBINDIR": str(sbindir), "CRAMFS": str(other / "cramfs")}
    subprocess.run([ROOT / "mount_helper" / "install"], check=True, env=env,
                   capture_output=True)
    line = link(dirs)
    assert line.startswith("left ") and line.endswith("(scripts/setup --link points them here)")
    for name in COMMANDS:
        assert os.readlink(bindir / name) == str(other / name), "left as it was"
        assert f"{bindir / name} -> {other / name}" in line
    assert helper_runs(sbindir) == str(other / "cramfs")
    assert f"{sbindir / 'mount.fuse.cramfs'} -> {other / 'cramfs'}" in line
    # asked: everything points here
    line = link(dirs, "--force")
    assert line == (f"pointed {', '.join(str(bindir / n) for n in COMMANDS)}, "
                    f"{sbindir / 'mount.fuse.cramfs'} at {ROOT}")
    assert all(os.readlink(bindir / n) == str(HERE / n) for n in COMMANDS)
    assert helper_runs(sbindir) == str(HERE / "cramfs")


def test_links_to_nothing_are_replaced_and_files_are_left(dirs, tmp_path):
    bindir, sbindir = dirs
    gone = tmp_path / "removed-clone" / ".venv" / "bin"
    (bindir / "cramfs").symlink_to(gone / "cramfs")           # a clone since removed
    (bindir / "cramctl").write_text("#!/bin/sh\n")           # someone's own file
    (sbindir / "mount.fuse.cramfs").write_text(f'#!/bin/sh\nexec "{gone}/cramfs" "$@"\n')
    line = link(dirs)
    assert os.readlink(bindir / "cramfs") == str(HERE / "cramfs")
    assert os.readlink(bindir / "cramfs-trace") == str(HERE / "cramfs-trace")
    assert not (bindir / "cramctl").is_symlink()
    assert helper_runs(sbindir) == str(HERE / "cramfs"), "its cramfs was gone"
    assert line == (f"pointed {bindir / 'cramfs'}, {bindir / 'cramfs-trace'}, "
                    f"{sbindir / 'mount.fuse.cramfs'} at {ROOT}; left {bindir / 'cramctl'} "
                    "(a file, not a link) (scripts/setup --link points them here)")


def test_setup_links_only_through_scripts_link():
    """scripts/setup touches the machine-wide places only by running scripts/link, with
    --force only when asked (--link or CRAMFS_LINK=1)."""
    setup = (ROOT / "scripts" / "setup").read_text()
    body = "\n".join(ln for ln in setup.splitlines() if not ln.lstrip().startswith("#"))
    assert "/usr/local/bin" not in body and "mount_helper/install" not in body
    assert 'line=$(scripts/link "${link_args[@]}")' in body
    assert "--link) link_args=(--force)" in body
    assert 'if [ "${CRAMFS_LINK:-0}" = 1 ]; then' in body
