"""Device semantics through a real mount: levels, poll, write control, tiers, faults."""

from __future__ import annotations

import errno
import json
import os
import select
import threading

import pytest

from cramfs.engine import ENGINES

from .helpers import random_page, text_page

P = 4096
# 64 pages of real capacity: every incompressible page is 1/64 of the device.
SMALL = ("-o", "advertised=16M,physical=256K")


def write_pages(path, pages, start=0):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for i, page in enumerate(pages):
            os.pwrite(fd, page, (start + i) * P)
    finally:
        os.close(fd)


@pytest.fixture(params=ENGINES)
def mount_options(request) -> tuple[str, ...]:
    """Every test here runs on both engines: the semantics must not depend on which."""
    return ("-o", f"engine={request.param}")


def test_danger_moves_through_every_level_and_back(mounter):
    m = mounter(*SMALL, "-o", "write_control=off")
    path = m.path / "f"
    seen = [m.ctl("danger").strip()]
    for i in range(64):
        write_pages(path, [random_page(i)], start=i)
        level = m.ctl("danger").strip()
        if level != seen[-1]:
            seen.append(level)
    with pytest.raises(OSError) as e:
        write_pages(path, [random_page(99)], start=64)
    assert e.value.errno == errno.ENOSPC
    assert m.ctl("danger") == "full\n"
    assert seen == ["ok", "warn", "critical", "full"]
    # release with zeros, from the top: levels fall back, held by hysteresis
    for i in reversed(range(64)):
        write_pages(path, [bytes(P)], start=i)
        level = m.ctl("danger").strip()
        if level != seen[-1]:
            seen.append(level)
            fill = i / 64
            threshold = {"critical": 1.0, "warn": 0.90, "ok": 0.75}[level]
            assert fill < threshold - 0.05, (level, fill)
    assert seen == ["ok", "warn", "critical", "full", "critical", "warn", "ok"]
    assert int(m.stat()["zero_released_pages"]) == 64
    events = m.ctl("events")
    assert events.count(" level ") == 6 and "ENOSPC" in events


def test_poll_wakes_on_level_change(mounter):
    m = mounter(*SMALL)
    fd = os.open(m.path / ".cram" / "danger", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"ok\n"
        p = select.poll()
        p.register(fd, select.POLLPRI | select.POLLERR)
        assert p.poll(0) == [], "nothing changed yet"
        woke: list[list[tuple[int, int]]] = []
        waiter = threading.Thread(target=lambda: woke.append(p.poll(20000)))
        waiter.start()
        write_pages(m.path / "f", [random_page(i) for i in range(50)])   # 78%: warn
        waiter.join(30)
        assert woke and woke[0] and woke[0][0][1] & select.POLLPRI
        os.lseek(fd, 0, os.SEEK_SET)
        assert os.read(fd, 100) == b"warn\n"
        assert p.poll(0) == [], "reading again clears the notification"
    finally:
        os.close(fd)


def test_pressure_file_polls_only_on_a_step_change(mounter):
    """64 pages of physical; warn at 75% (48 pages), critical at 90% (57.6): each
    incompressible page past warn moves the RFC's pressure by a step or more."""
    m = mounter(*SMALL)
    fd = os.open(m.path / ".cram" / "pressure", os.O_RDONLY)
    danger = os.open(m.path / ".cram" / "danger", os.O_RDONLY)
    try:
        assert os.read(fd, 100) == b"0\n" and os.read(danger, 100) == b"ok\n"
        p = select.poll()
        p.register(fd, select.POLLPRI | select.POLLERR)
        write_pages(m.path / "f", [random_page(i) for i in range(30)])     # 47%: ok
        assert p.poll(0) == [], "no step changed"
        write_pages(m.path / "f", [random_page(i) for i in range(30, 52)], start=30)
        assert p.poll(0) and p.poll(0)[0][1] & select.POLLPRI
        os.lseek(fd, 0, os.SEEK_SET)
        value = int(os.read(fd, 100))
        assert 0 < value < 1000 and value % 50 == 0
        assert p.poll(0) == [], "reading again clears the notification"
        write_pages(m.path / "f", [random_page(i) for i in range(52, 60)], start=52)
        os.lseek(fd, 0, os.SEEK_SET)
        assert os.read(fd, 100) == b"1000\n" and m.ctl("danger") == "critical\n"
        s = m.stat()
        assert s["pressure"] == 1000 and "pressure: 1000" in m.ctl("status")
        assert "cramfs_pressure 1000" in m.ctl("metrics")
    finally:
        os.close(fd)
        os.close(danger)


def test_bavail_falls_to_zero_while_refusing(mounter):
    m = mounter(*SMALL)
    assert os.statvfs(m.path).f_bavail > 0
    write_pages(m.path / "f", [random_page(i) for i in range(60)])
    assert m.ctl("danger") == "critical\n"
    st = os.statvfs(m.path)
    assert st.f_bavail == 0 and st.f_bfree > 0


def test_zswap_read_releases_and_direct_read_does_not(mounter):
    z = mounter(*SMALL)
    write_pages(z.path / "f", [text_page(i) for i in range(4)])
    before = z.stat()["physical_used"]
    assert before > 0
    assert (z.path / "f").read_bytes() == b"".join(text_page(i) for i in range(4))
    s = z.stat()
    assert s["physical_used"] == 0 and s["promotions"] == 4 and s["faults"] == 4
    assert os.getxattr(z.path / "f", "user.cram.promoted_pages") == b"4"

    d = mounter(*SMALL, "-o", "mode=direct")
    write_pages(d.path / "f", [text_page(i) for i in range(4)])
    d.set("demote", "all")
    before = d.stat()
    assert before["physical_used"] > 0
    assert (d.path / "f").read_bytes() == b"".join(text_page(i) for i in range(4))
    s = d.stat()
    assert s["physical_used"] == before["physical_used"] and s["promotions"] == 0
    write_pages(d.path / "f", [text_page(9)], start=1)      # a write fault
    s = d.stat()
    # the compressed copy is freed (its zspage may stay, holding the other pages)
    assert s["compressed_bytes"] < before["compressed_bytes"]
    assert s["faults"] == 1 and s["promoted_pages"] == 1


def test_demote(mounter):
    m = mounter(*SMALL)
    write_pages(m.path / "f", [text_page(i) for i in range(6)])
    (m.path / "f").read_bytes()
    assert m.stat()["promoted_pages"] == 6
    m.set("demote", "2")
    s = m.stat()
    assert s["promoted_pages"] == 4 and s["demotions"] == 2
    m.set("demote", "all")
    s = m.stat()
    assert s["promoted_pages"] == 0 and s["stored_pages"] == 6
    assert "demote all: 4 pages demoted" in m.ctl("events")


@pytest.mark.parametrize(("knob", "bad"), [
    ("warn_at", "95%"), ("critical_at", "120%"), ("hysteresis", "abc"),
    ("write_control", "2"), ("fallback", "disk"), ("overflow", "melt"), ("mode", "tier"),
    ("dram", "4X"), ("compressor", "lzma"), ("reset", "2"), ("mem_used_max", "9"),
    ("demote", "many"), ("discard", "nofile 0 4K"), ("inject", "ratio 100"),
])
def test_every_knob_rejects_bad_input_with_einval(mnt, knob, bad):
    before = mnt.ctl(knob) if knob not in ("reset", "demote", "discard") else None
    with pytest.raises(OSError) as e:
        mnt.set(knob, bad)
    assert e.value.errno == errno.EINVAL
    if before is not None:
        assert mnt.ctl(knob) == before
    assert f"rejected {knob}:" in mnt.ctl("events").splitlines()[-1]


def test_reset_is_busy_while_a_file_is_open(mnt):
    with open(mnt.path / "f", "wb") as f:
        f.write(text_page(1))
        f.flush()
        with pytest.raises(OSError) as e:
            mnt.set("reset", "1")
        assert e.value.errno == errno.EBUSY
    mnt.set("reset", "1")
    assert os.listdir(mnt.path) == [".cram"]
    assert mnt.stat()["physical_used"] == 0


def test_inject_ratio_then_physical_drives_write_control_and_fallback(mounter):
    m = mounter("-o", "advertised=64M,physical=4M,dram=0")
    path = m.path / "f"
    write_pages(path, [text_page(i) for i in range(64)])
    s = m.stat()
    assert s["fallback_pages"] == 0 and m.ctl("danger") == "ok\n"
    m.set("inject", "ratio 8")
    write_pages(path, [text_page(i) for i in range(64, 128)], start=64)
    used = m.stat()["physical_used"]
    m.set("inject", f"physical {int(used * 1.05)}")
    assert m.ctl("danger") == "critical\n"
    assert "ratio 8" in m.ctl("inject") and "physical" in m.ctl("inject")
    write_pages(path, [text_page(i) for i in range(128, 140)], start=128)
    s = m.stat()
    assert s["fallback_pages"] == 12 and s["reject_write_control"] == 12
    assert s["physical_used"] <= int(m.ctl("physical"))
    assert path.read_bytes() == b"".join(text_page(i) for i in range(140))
    assert "warning: at ratio" in m.ctl("status")
    m.set("inject", "clear")
    assert m.ctl("inject") == "none\n" and m.ctl("physical") == f"{4 << 20}\n"


def test_inject_poison_gives_eio_until_overwritten(mnt):
    write_pages(mnt.path / "f", [text_page(1), text_page(2)])
    mnt.set("inject", "poison f 1")
    fd = os.open(mnt.path / "f", os.O_RDWR)
    try:
        assert os.pread(fd, P, 0) == text_page(1)
        with pytest.raises(OSError) as e:
            os.pread(fd, P, P)
        assert e.value.errno == errno.EIO
        os.pwrite(fd, text_page(3), P)
        assert os.pread(fd, P, P) == text_page(3)
    finally:
        os.close(fd)
    assert mnt.ctl("io_stat").split()[0] == "1"


def test_discard_control_file(mnt):
    write_pages(mnt.path / "f", [text_page(i) for i in range(8)])
    mnt.set("discard", f"f {P} 16K")
    s = mnt.stat()
    assert s["discarded_pages"] == 4 and s["stored_pages"] == 4
    assert (mnt.path / "f").read_bytes()[P:5 * P] == bytes(4 * P)
    assert mnt.ctl("io_stat").split()[3] == "4"


def test_xattrs(mounter):
    m = mounter(*SMALL, "-o", "dram=0")
    write_pages(m.path / "f", [text_page(1), random_page(2), bytes(P)])
    names = sorted(os.listxattr(m.path / "f"))
    assert names == sorted(f"user.cram.{n}" for n in (
        "stored_pages", "physical_bytes", "promoted_pages", "charge_full",
        "charge_compressed", "charge_scaled"))
    x = {n.rsplit(".", 1)[1]: int(os.getxattr(m.path / "f", n)) for n in names}
    assert x["stored_pages"] == 3 and x["charge_full"] == 3 * P
    assert x["physical_bytes"] == x["charge_compressed"] <= m.stat()["physical_used"]
    assert x["physical_bytes"] > P
    assert x["charge_scaled"] == pytest.approx(3 * P / float(m.ctl("ratio")), rel=0.01)
    with pytest.raises(OSError):
        os.getxattr(m.path / "f", "user.cram.nothing")


def test_events_can_be_followed(mnt):
    """`tail -f` polls st_size and reads from where it was."""
    fd = os.open(mnt.path / ".cram" / "events", os.O_RDONLY)
    try:
        first = os.read(fd, 1 << 16)
        size = os.fstat(fd).st_size
        assert size == len(first)
        mnt.set("warn_at", "70%")
        assert os.fstat(fd).st_size > size
        new = os.pread(fd, 1 << 16, size)
        assert new.decode().strip().endswith("knob warn_at=70%")
    finally:
        os.close(fd)


def test_pool_table_and_compaction(mounter):
    m = mounter("-o", "dram=0")
    pages = [text_page(i) for i in range(512)]
    write_pages(m.path / "f", pages)
    write_pages(m.path / "f", [bytes(P)] * 256, start=0)       # free half: sparse zspages
    for i in range(256, 512, 2):
        write_pages(m.path / "f", [bytes(P)], start=i)
    table = m.ctl("pool").splitlines()
    assert table[0].split() == ["class", "size", "obj_allocated", "obj_used", "pages_used",
                                "pages_per_zspage", "freeable"]
    total = table[-1].split()
    assert total[0] == "Total" and int(total[-1]) > 0, "fragmented zspages are freeable"
    used = int(m.ctl("mm_stat").split()[2])
    m.set("compact", "1")
    mm = m.ctl("mm_stat").split()
    assert int(mm[6]) > 0 and int(mm[2]) == used - int(mm[6]) * P
    assert int(m.ctl("pool").splitlines()[-1].split()[-1]) < int(total[-1])
    data = (m.path / "f").read_bytes()
    for i in range(257, 512, 2):
        assert data[i * P:(i + 1) * P] == pages[i]
    with pytest.raises(OSError) as e:
        m.set("compact", "2")
    assert e.value.errno == errno.EINVAL


def test_the_engine_is_shown_and_fixed(mounter, mount_options):
    m = mounter()
    name = mount_options[1].removeprefix("engine=")
    assert m.ctl("engine") == name + "\n"
    assert json.loads(m.ctl("stat.json"))["engine"] == name
    assert f'engine="{name}"' in m.ctl("metrics")
    with pytest.raises(PermissionError):
        (m.path / ".cram" / "engine").write_text("python\n")
    write_pages(m.path / "f", [text_page(1), random_page(2)])
    assert (m.path / "f").read_bytes() == text_page(1) + random_page(2)
