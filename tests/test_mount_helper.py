"""mount(8), fstab and the daemon's hardening, with the installed helper."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cramfs.procfs import mounts, status_bytes

from .conftest import is_mounted, unmount
from .test_cli import _daemon_pid, _wait_gone

pytestmark = pytest.mark.mount
ROOT = Path(__file__).resolve().parent.parent
HELPER = Path("/sbin/mount.fuse.cramfs")


@pytest.fixture
def helper():
    """The helper installed for this checkout; removed again if the test put it there."""
    had = HELPER.exists()
    before = HELPER.read_text() if had else None
    subprocess.run([ROOT / "mount_helper" / "install"], check=True, capture_output=True)
    yield HELPER
    if before is not None:
        HELPER.write_text(before)
    else:
        subprocess.run([ROOT / "mount_helper" / "uninstall"], check=True, capture_output=True)


def _mounted_then_unmounted(mp: Path, physical: int) -> None:
    try:
        assert is_mounted(mp)
        assert (mp / ".cram" / "physical").read_text() == f"{physical}\n"
        source = [m.source for m in mounts() if m.mountpoint == str(mp)]
        assert source == ["cram"]
        pid = _daemon_pid(mp)
        assert pid is not None
        subprocess.run(["umount", str(mp)], check=True)
        assert not is_mounted(mp) and _wait_gone(pid)
    finally:
        unmount(mp)


def test_mount_t_fuse_cramfs(helper, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    # mount(8) gives the helper no PATH; the helper must still find everything
    subprocess.run(["env", "-i", "/bin/mount", "-t", "fuse.cramfs", "cram", str(mp), "-o",
                    "advertised=8G,physical=1G,compressor=lz4"], check=True)
    _mounted_then_unmounted(mp, 1 << 30)


def test_fstab_line(helper, tmp_path):
    mp = tmp_path / "mnt"
    mp.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"cram {mp} fuse.cramfs advertised=2G,physical=512M,noauto,nofail,"
                     "_netdev,x-systemd.automount 0 0\n")
    subprocess.run(["mount", "--fstab", str(fstab), str(mp)], check=True)
    _mounted_then_unmounted(mp, 512 << 20)


def _has_cap_sys_resource() -> bool:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("CapEff:"):
            return bool(int(line.split()[1], 16) & (1 << 24))
    return False


def test_daemon_is_locked_and_oom_protected(mnt):
    assert status_bytes(mnt.proc.pid, "VmLck") > 0, "mlockall must lock the daemon's memory"
    adj = Path(f"/proc/{mnt.proc.pid}/oom_score_adj").read_text().strip()
    log = mnt.log.read_text()
    if _has_cap_sys_resource():
        assert adj == "-1000"
        assert "PR_SET_IO_FLUSHER" not in log
    else:
        # Both need CAP_SYS_RESOURCE; without it each failure is logged with its reason.
        assert "cannot set oom_score_adj -1000: Permission denied" in log
        assert "prctl(PR_SET_IO_FLUSHER) failed: Operation not permitted" in log
