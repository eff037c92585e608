"""Trace record, replay and what-if: in process first, then through a real mount."""

from __future__ import annotations

import collections
import contextlib
import errno
import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import lz4.block
import pytest

from cramfs import compressors, control, controltrace, trace
from cramfs.backing import run_inline
from cramfs.config import DeviceConfig
from cramfs.device import Device, DeviceError
from cramfs.namespace import Namespace
from cramfs.trace import outcomes, replay
from cramfs.trace.ring import PyTraceRing, native_available

from .helpers import random_page, text_page
from .test_namespace_control import store

P = 4096
TRACE_CLI = str(Path(sys.executable).parent / "cramfs-trace")




def workload(ns: Namespace) -> None:
    """A bit of everything the namespace and the control files do."""
    a = ns.create("a", 0o600, 0, 0)
    ns.opened(a)
    ns.resize(a, 256 * P)
    for i in range(120):
        page = (text_page(i), random_page(i), bytes(P), bytes([i % 7 + 1]) * P)[i % 4]
        with contextlib.suppress(DeviceError):
            ns.write(a, (i * 7 % 256) * P, page)
        if i % 5 == 0:
            ns.read(a, (i * 3 % 256) * P, 8 * P)
    ns.write(a, 10 * P + 100, b"partial")
    store(ns, "compressor", "zstd")
    b = ns.create("b", 0o600, 0, 0)
    ns.write(b, 0, b"".join(text_page(i + 500) for i in range(16)))
    store(ns, "idle", "all")
    store(ns, "recomp_algorithm", "algo=lz4")
    store(ns, "recompress", "type=idle")
    ns.discard(a, 0, 32 * P)
    ns.resize(a, 100 * P + 17)
    store(ns, "compact", "1")
    store(ns, "demote", "all")
    ns.rename("b", "c")
    ns.create("u", 0o640, 4_000_000_000, 3_999_999_999)      # ids past 2^31 round-trip
    with pytest.raises(DeviceError):
        store(ns, "warn_at", "99%")            # a refused control write is recorded too
    store(ns, "warn_at", "60%")
    ns.released(a)
    ns.unlink("a")


def fresh(**settings: object) -> Namespace:
    cfg = {"advertised": 16 << 20, "physical": 160 * P, "dram": 8 * P, **settings}
    return Namespace(Device(DeviceConfig(**cfg)))   # type: ignore[arg-type]


def record(ns: Namespace, path: Path, body=workload) -> trace.Recorder:
    store(ns, "trace", f"start {path}")
    rec = ns.recorder
    assert rec is not None and rec.active
    body(ns)
    store(ns, "trace", "stop")
    rec.join(10)
    assert rec.error is None
    return rec


@pytest.mark.parametrize("ring", ["native", "python"])
def test_a_replay_under_the_recorded_settings_ends_in_the_recorded_mm_stat(tmp_path, ring,
                                                                           monkeypatch):
    if ring == "python":        # the reference ring, as a checkout without the build has
        monkeypatch.setattr("cramfs.trace.ring.native_available", lambda: False)
    elif not native_available():
        pytest.fail("the compiled ring is not built: run scripts/setup")
    ns = fresh()
    rec = record(ns, tmp_path / "t.trace")
    assert isinstance(rec._ring, PyTraceRing) == (ring == "python")
    header, records = trace.read_trace(tmp_path / "t.trace")
    assert header["empty"] and header["settings"]["physical"] == str(160 * P)
    records = list(records)
    assert len(records) == rec.events and records[-1].op == trace.STOP
    ops = {r.op for r in records}
    assert {trace.CREATE, trace.WRITE, trace.READ, trace.RESIZE, trace.DISCARD,
            trace.CONTROL, trace.RENAME, trace.UNLINK, trace.OPENED, trace.RELEASED} <= ops
    assert any(r.op == trace.CONTROL and r.result == -errno.EINVAL for r in records)
    writes = [r for r in records if r.op == trace.WRITE]
    assert writes[0].data == text_page(0), "written data comes back byte for byte"
    assert writes[0].pages is not None, "a page-aligned write is kept page by page"
    partial = next(r for r in writes if r.a % P)
    assert partial.pages is None and partial.data == b"partial"
    created = next(r for r in records if r.op == trace.CREATE and r.text() == "u")
    assert (created.a & 0xFFFF, created.a >> 16, created.b) == (0o640, 4_000_000_000,
                                                                 3_999_999_999)
    out = replay.replay(header, iter(records))
    assert out.exact and out.mm_stat == ns.device.mm_stat()
    assert out.diverged == 0 and out.skipped == 0
    assert out.duration > 0 and out.samples


def test_what_if_equals_a_direct_run_with_that_setting(tmp_path):
    ns = fresh()
    record(ns, tmp_path / "t.trace")
    for override in ({"physical": str(64 * P)}, {"compressor": "zstd"},
                     {"physical": str(96 * P), "warn_at": "50%"}, {"dram": "0"},
                     {"mode": "direct"}, {"huge_threshold": "2000"}):
        header, records = trace.read_trace(tmp_path / "t.trace")
        # the same calls made directly on a device mounted with that setting
        direct = Namespace(Device(replay.config_of(header, override)))
        workload(direct)
        out = replay.replay(header, records, override)
        assert out.mm_stat == direct.device.mm_stat(), override
        assert out.refused_pages == direct.device.counters.reject_write_control


def test_trace_control_refuses_bad_input_and_reports_state(tmp_path):
    ns = fresh()
    show = control.ATTRIBUTES["trace"].show
    assert show is not None and show(ns) == "off\n"
    for bad in ("start relative/path", "begin /x", "stop", "", "start"):
        with pytest.raises(DeviceError) as e:
            store(ns, "trace", bad)
        assert e.value.errno == errno.EINVAL, bad
    store(ns, "trace", f"start {tmp_path / 'x.trace'}")
    with pytest.raises(DeviceError) as e:
        store(ns, "trace", f"start {tmp_path / 'y.trace'}")
    assert e.value.errno == errno.EBUSY
    assert show(ns).startswith(f"recording {tmp_path / 'x.trace'} ")
    rec = ns.recorder
    store(ns, "trace", "stop")
    assert rec is not None
    rec.join(10)
    assert show(ns) == "off\n"
    assert b"trace stopped: " in ns.device.events.text()


def test_an_existing_file_is_never_overwritten(tmp_path):
    ns = fresh()
    keep = tmp_path / "precious"
    keep.write_text("do not touch")
    with pytest.raises(DeviceError) as e:
        store(ns, "trace", f"start {keep}")
    assert e.value.errno == errno.EEXIST and ns.recorder is None
    assert b"trace: cannot start" in ns.device.events.text()
    assert keep.read_text() == "do not touch"
    store(ns, "trace", f"start {tmp_path / 'new.trace'}")     # a new start is allowed
    rec = ns.recorder
    assert rec is not None and rec.active
    store(ns, "trace", "stop")
    rec.join(10)
    assert (tmp_path / "new.trace").stat().st_mode & 0o777 == 0o600


def test_a_full_disk_stops_the_recording_and_never_fails_io(tmp_path, monkeypatch):
    ns = fresh()
    # /dev/full exists, so the trace's O_EXCL would refuse it: open it the plain way
    monkeypatch.setattr(controltrace.safepath, "create_exclusive",
                        lambda path, mode, refuse_dev: os.open(path, os.O_WRONLY))
    store(ns, "trace", "start /dev/full")
    rec = ns.recorder
    assert rec is not None
    f = ns.create("f", 0o600, 0, 0)
    for i in range(50):
        assert ns.write(f, i * P, text_page(i)) == P
    rec.stop({})
    rec.join(10)
    assert rec.error is not None and "No space" in rec.error
    control.check_trace(ns)
    assert b"trace recording stopped: " in ns.device.events.text()
    assert ns.read(f, 0, P) == text_page(0)


def test_whatif_cli_finds_the_smallest_calm_physical(tmp_path):
    ns = fresh(physical=256 * P)
    record(ns, tmp_path / "t.trace")
    r = subprocess.run([TRACE_CLI, "whatif", str(tmp_path / "t.trace"), "--physical",
                        "24K,100K,640K", "--compressor", "lz4,zstd", "--plot",
                        str(tmp_path / "w.png")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rows = [line for line in r.stdout.splitlines() if line.startswith("| 24K")
            or line.startswith("| 100K") or line.startswith("| 640K")]
    assert len(rows) == 6
    assert "smallest physical that stays out of critical with compressor=lz4: 640K" in r.stdout
    assert (tmp_path / "w.png").stat().st_size > 10_000
    for args in (["stats"], ["show", "--limit", "5"], ["replay"]):
        r = subprocess.run([TRACE_CLI, args[0], str(tmp_path / "t.trace"), *args[1:]],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
    assert "the recorded run ended in the same mm_stat" in r.stdout
    bad = subprocess.run([TRACE_CLI, "replay", str(tmp_path / "t.trace"), "-o", "colour=blue"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr
    assert "note: recorded before" not in r.stdout
    # the same trace as one recorded before the kernel's compressors: no "lz4" in its
    # header; its replay says that its mm_stat can differ from the recording's
    raw = (tmp_path / "t.trace").read_bytes()
    magic, version, n = trace.HEAD.unpack_from(raw)
    header = json.loads(raw[trace.HEAD.size:trace.HEAD.size + n])
    assert header.pop("lz4") == trace.LZ4_KIND
    body = json.dumps(header).encode()
    (tmp_path / "old.trace").write_bytes(trace.HEAD.pack(magic, version, len(body)) + body
                                         + raw[trace.HEAD.size + n:])
    r = subprocess.run([TRACE_CLI, "replay", str(tmp_path / "old.trace")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "note: recorded before cramfs's lz4, lzo and lzo-rle compressed as the kernel's" \
        in r.stdout
    junk = tmp_path / "junk"
    junk.write_bytes(b"not a trace at all")
    bad = subprocess.run([TRACE_CLI, "stats", str(junk)], capture_output=True, text=True)
    assert bad.returncode == 1 and "not a cramfs trace" in bad.stderr


def test_trace_through_a_mount(mounter, tmp_path):
    m = mounter("-o", "advertised=64M,physical=1M,dram=64K")
    path = tmp_path / "mount.trace"
    m.set("trace", f"start {path}")
    assert m.ctl("trace").startswith(f"recording {path} ")
    subprocess.run(["dd", "if=/usr/bin/python3", f"of={m.path / 'slots'}", "bs=4K",
                    "count=300", "oflag=direct", "status=none"], check=True)
    subprocess.run(["dd", f"if={m.path / 'slots'}", "of=/dev/null", "bs=32K", "iflag=direct",
                    "status=none"], check=True)
    m.set("compressor", "zstd")
    m.set("trace", "stop")
    recorded = m.ctl("mm_stat").strip()
    assert m.ctl("trace") == "off\n"
    r = subprocess.run([TRACE_CLI, "replay", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"mm_stat: {recorded}" in r.stdout
    assert "the recorded run ended in the same mm_stat" in r.stdout
    # a trace cannot be written onto the mount it records: refused at the write
    with pytest.raises(OSError) as e:
        m.set("trace", f"start {m.path / 'self.trace'}")
    assert e.value.errno == errno.EINVAL
    assert m.ctl("trace") == "off\n"
    assert not (m.path / "self.trace").exists()
    assert "is on this mount" in m.ctl("events")


def test_a_replay_with_a_backing_file_writes_to_a_scratch_copy(tmp_path):
    """Writeback, fallback=writeback and reclaim replay exactly, and never touch the
    recorded backing file: the replay gets a sparse scratch file of the same size."""
    backing = tmp_path / "backing"
    with open(backing, "wb") as f:
        f.truncate(512 * P)
    ns = fresh(backing_dev=str(backing), fallback="writeback", reclaim="writeback",
               reclaim_pages=8, physical=64 * P, dram=0)
    dev = ns.device

    def body(ns: Namespace) -> None:
        a = ns.create("a", 0o600, 0, 0)
        for i in range(150):                       # the adapter settles after each call
            page = (text_page(i), random_page(i), bytes([i % 5]) * P)[i % 3]
            with contextlib.suppress(DeviceError):
                ns.write(a, i * P, page)
            dev.settle()
        store(ns, "idle", "all")
        backing_job = control.store(ns, control.ATTRIBUTES["writeback"], b"idle")
        run_inline(backing_job)
        dev.settle()
        ns.read(a, 0, 40 * P)
        ns.discard(a, 50 * P, 20 * P)
        dev.settle()

    record(ns, tmp_path / "t.trace", body)
    assert dev.counters.bd_writes > 0 and dev.counters.reclaim_written > 0
    before = backing.read_bytes()
    header, records = trace.read_trace(tmp_path / "t.trace")
    assert header["backing_size"] == 512 * P
    out = replay.replay(header, records)
    assert out.exact and out.mm_stat == dev.mm_stat() and out.diverged == 0
    assert backing.read_bytes() == before, "the recorded backing file is left alone"
    assert not list(Path("/var/tmp").glob("cramfs-replay-*")), "the scratch file is gone"


def test_pages_gives_each_page_its_outcome_from_an_exact_replay(tmp_path):
    ns = fresh(physical=40 * P)                         # small enough to refuse pages
    record(ns, tmp_path / "t.trace")
    c = ns.device.counters
    events: list[outcomes.PageEvent] = []
    header, records = trace.read_trace(tmp_path / "t.trace")
    out = replay.replay(header, records, observe=events.append)
    assert out.exact, "watching the replay changes nothing"
    results = collections.Counter(e.result for e in events)
    assert set(results) <= set(outcomes.RESULTS)
    assert results["promoted"] == c.promotions > 0
    assert results["fallback"] + results["refused"] + results["kept_in_dram"] == \
        c.reject_write_control > 0
    assert results["same"] > 0 and results["huge"] > 0 and results["discarded"] > 0
    assert all(e.size > 0 for e in events if e.result in ("stored", "huge", "promoted"))
    assert {e.op for e in events} >= {"write", "read", "discard", "truncate", "unlink"}
    assert [e.time for e in events] == sorted(e.time for e in events)
    r = subprocess.run([TRACE_CLI, "pages", str(tmp_path / "t.trace"), "--limit", "3"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 6
    assert "# replay matches the recorded mm_stat" in r.stdout


def test_delayed_frees_replay_exactly_with_the_recorded_ticks(tmp_path):
    """With release_delay the daemon's housekeeping tick gives delayed frees back
    between requests; the tick is recorded, so a replay frees at the same moment and
    the next write near capacity is placed as it was."""
    clock = [1000.0]
    ns = Namespace(Device(DeviceConfig(advertised=16 << 20, physical=48 * P, dram=0,
                                       release_delay=50, write_control=False),
                          monotonic=lambda: clock[0]))
    store(ns, "trace", f"start {tmp_path / 't.trace'}")
    rec = ns.recorder
    assert rec is not None
    f = ns.create("f", 0o600, 0, 0)
    for i in range(48):                                      # the device is full
        ns.write(f, i * P, random_page(i))
        clock[0] += 0.001
    ns.discard(f, 0, 20 * P)                                 # 20 pages pending release
    clock[0] += 0.060
    ns.tick()                                                # they come back
    clock[0] += 0.001
    for i in range(20):
        ns.write(f, (48 + i) * P, random_page(100 + i))
        clock[0] += 0.001
    dev = ns.device
    assert dev.counters.failed_writes == 0, "the tick made room in time"
    store(ns, "trace", "stop")
    rec.join(10)
    header, records = trace.read_trace(tmp_path / "t.trace")
    records = list(records)
    assert [r.op for r in records].count(trace.TICK) == 1
    out = replay.replay(header, iter(records))
    assert out.exact and out.failed_writes == 0 and out.diverged == 0
    without = [r for r in records if r.op != trace.TICK]
    assert replay.replay(header, iter(without)).diverged > 0, "the tick matters"


def test_a_version_1_trace_still_reads(tmp_path):
    """Version 1 kept each write as one lz4 block; those traces replay as before."""
    header = {"settings": {}, "empty": True, "mm_stat": "", "device_age": 0.0}
    body = json.dumps(header).encode()
    data = text_page(1) + random_page(2)
    rec = struct.Struct("<dBIqqiI")
    payload = lz4.block.compress(data)
    path = tmp_path / "v1.trace"
    stop = b"{}"
    path.write_bytes(struct.pack("<8sHI", trace.MAGIC, 1, len(body)) + body
                     + rec.pack(0.5, trace.WRITE, 1000, 0, len(data), len(data), len(payload))
                     + payload + rec.pack(0.6, trace.STOP, 0, 0, 0, 0, len(stop)) + stop)
    _, records = trace.read_trace(path)
    r, end = list(records)
    assert r.op == trace.WRITE and r.pages is None and r.data == data and r.size == 2 * P
    assert end.op == trace.STOP


def _compress_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[int]:
    """Count the pages `name` compresses from now on (the device looks its compressor up
    when a device or an encoder is made, so patch before replaying)."""
    calls = [0]
    real = compressors.COMPRESSORS[name]

    def counted(data: bytes) -> bytes:
        calls[0] += 1
        return real.compress(data)

    monkeypatch.setitem(compressors.COMPRESSORS, name,
                        compressors.Compressor(real.name, real.ident, counted, real.decompress))
    return calls


def test_pages_kept_under_other_compressors_replay_without_compressing_again(
        tmp_path, monkeypatch):
    """`compressors=zstd,lzo` keeps each page as those compressors encode it, so a what-if
    under them stores exactly the blocks a direct run would, and compresses nothing again
    but the writes that were not whole pages."""
    ns = fresh()
    store(ns, "trace", f"start {tmp_path / 'k.trace'} compressors=zstd,lzo,zstd")
    show = control.ATTRIBUTES["trace"].show
    assert show is not None and show(ns).endswith(" (pages also as zstd,lzo)\n")
    rec = ns.recorder
    assert rec is not None
    workload(ns)
    store(ns, "trace", "stop")
    rec.join(10)
    assert rec.error is None
    assert (tmp_path / "k.trace").read_bytes()[8:10] == struct.pack("<H", trace.VERSION_ALSO)
    header, records = trace.read_trace(tmp_path / "k.trace")
    assert header["compressors"] == ["zstd", "lzo"]
    recorded = list(records)
    writes = [r for r in recorded if r.op == trace.WRITE and r.pages is not None]
    for r in writes:
        assert r.also is not None and set(r.also) == {"zstd", "lzo"}
        for name in r.also:
            blocks = r.also.get(name)
            assert blocks is not None and len(blocks) == len(r.pages)
            for (tag, _), block, page in zip(r.pages, blocks,
                                             (r.data[i:i + P] for i in range(0, r.size, P)),
                                             strict=True):
                if tag == trace.SAME_TAG:
                    assert block is None
                elif block is not None:
                    assert compressors.COMPRESSORS[name].decompress(block) == page
    # each write that is not whole pages touches at most two, and is compressed again
    partial_pages = 2 * sum(r.op == trace.WRITE and r.pages is None for r in recorded)
    assert partial_pages
    for name in ("zstd", "lzo", "none"):
        override = {"compressor": name}
        header, records = trace.read_trace(tmp_path / "k.trace")
        direct = Namespace(Device(replay.config_of(header, override)))
        workload(direct)
        calls = _compress_calls(monkeypatch, name)
        out = replay.replay(header, records, override)
        assert out.mm_stat == direct.device.mm_stat(), name
        assert out.diverged == 0
        assert calls[0] <= partial_pages, (name, calls[0])
    # a trace that kept lz4 alone compresses every written page again under zstd
    ns = fresh()
    record(ns, tmp_path / "plain.trace")
    assert (tmp_path / "plain.trace").read_bytes()[8:10] == struct.pack("<H", trace.VERSION)
    header, records = trace.read_trace(tmp_path / "plain.trace")
    assert "compressors" not in header
    calls = _compress_calls(monkeypatch, "zstd")
    replay.replay(header, records, {"compressor": "zstd"})
    assert calls[0] > 50
    assert writes[0].also is not None and writes[0].also.get("brotli") is None
    # a kept section cut short is a damaged trace, said so when a replay asks for it
    packed = trace.pack_write(0, writes[0].data, ("zstd",))
    _, _, cut = trace.unpack_write(packed[:-1], trace.VERSION_ALSO, ("zstd",))
    assert cut is not None
    with pytest.raises(trace.TraceError):
        cut.get("zstd")


def test_trace_compressors_refuse_what_cannot_be_kept(tmp_path):
    ns = fresh()
    for bad in ("compressors=lz5", "compressors=", "compressors=zstd,deflate",
                "compressors=lz4"):
        with pytest.raises(DeviceError) as e:
            store(ns, "trace", f"start {tmp_path / 'x.trace'} {bad}")
        assert e.value.errno == errno.EINVAL, bad
        assert ns.recorder is None
    # a path with a space in it is still a path
    store(ns, "trace", f"start {tmp_path / 'a b.trace'}")
    rec = ns.recorder
    assert rec is not None and rec.also == ()
    store(ns, "trace", "stop")
    rec.join(10)
    assert (tmp_path / "a b.trace").exists()


def test_a_mount_on_zstd_replays_exactly_from_the_kept_zstd_blocks(mounter, tmp_path):
    """Recorded through a real mount with `compressors=zstd`: the replay under the recorded
    settings (zstd) stores the kept blocks and ends in the mount's own mm_stat."""
    m = mounter("-o", "advertised=64M,physical=1M,dram=64K,compressor=zstd")
    path = tmp_path / "zstd.trace"
    m.set("trace", f"start {path} compressors=zstd")
    assert m.ctl("trace").endswith("(pages also as zstd)\n")
    subprocess.run(["dd", "if=/usr/bin/python3", f"of={m.path / 'slots'}", "bs=4K",
                    "count=300", "oflag=direct", "status=none"], check=True)
    subprocess.run(["dd", f"if={m.path / 'slots'}", "of=/dev/null", "bs=32K", "iflag=direct",
                    "status=none"], check=True)
    m.set("trace", "stop")
    recorded = m.ctl("mm_stat").strip()
    r = subprocess.run([TRACE_CLI, "stats", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and "pages kept as: lz4, zstd" in r.stdout, r.stderr
    r = subprocess.run([TRACE_CLI, "replay", str(path)], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert f"mm_stat: {recorded}" in r.stdout
    with pytest.raises(OSError) as e:
        m.set("trace", f"start {tmp_path / 'x.trace'} compressors=brotli")
    assert e.value.errno == errno.EINVAL


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRACE_CLI, *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_a_short_trace_is_sampled_to_its_end_and_plotted_with_thresholds(tmp_path):
    """A trace far shorter than any fixed step still gets a timeline: the default step
    is the trace's length over a number of samples, and the end is always sampled."""
    from cramfs.trace import cli as trace_cli

    ns = fresh(physical=64 * P)
    record(ns, tmp_path / "t.trace")
    extent = trace.scan(tmp_path / "t.trace")
    assert extent.whole and extent.stopped and 0 < extent.duration < 0.5
    header, records = trace.read_trace(tmp_path / "t.trace")
    # a step past the whole trace: the start and the end, no more
    out = replay.replay(header, records, every=10.0)
    assert [s.time for s in out.samples] == [out.samples[0].time, extent.duration]
    assert out.samples[-1].fill == round(ns.device.fill, 4), "the end is the final state"
    r = cli("replay", tmp_path / "t.trace")
    assert r.returncode == 0, r.stderr
    rows = [ln for ln in r.stdout.splitlines() if ln[:1] == " " and ln.split()[0][0].isdigit()]
    # a row a step (where a call falls in it), and the end
    assert 10 <= len(rows) <= trace_cli.TIMELINE_ROWS + 2
    assert float(rows[-1].split()[0]) == pytest.approx(extent.duration, abs=1e-3)
    combos = [{"physical": "256K", "warn_at": "60%"}, {"physical": "640K", "warn_at": "70%"}]
    results = []
    for combo in combos:
        header, records = trace.read_trace(tmp_path / "t.trace")
        results.append(replay.replay(header, records, combo, replay.default_step(
            extent.duration, trace_cli.PLOT_POINTS)))
    fig = trace_cli.figure(header, combos, results)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    for combo, out in zip(combos, results, strict=True):
        drawn = lines[" ".join(f"{k}={v}" for k, v in combo.items())]
        assert list(drawn.get_xdata()) == [s.time for s in out.samples]
        assert len(out.samples) >= 50, "a line, not a dot"
        assert drawn.get_xdata()[-1] == pytest.approx(extent.duration)
    for label, y in (("warn at 60%", 60), ("warn at 70%", 70), ("critical at 90%", 90)):
        assert list(lines[label].get_ydata()) == [y, y], label
    r = cli("whatif", tmp_path / "t.trace", "--physical", "256K,640K", "--plot",
            tmp_path / "w.png")
    assert r.returncode == 0 and (tmp_path / "w.png").stat().st_size > 10_000, r.stderr


def test_a_cut_off_or_damaged_trace_is_an_error_unless_partial(tmp_path):
    ns = fresh()
    record(ns, tmp_path / "t.trace")
    whole = (tmp_path / "t.trace").read_bytes()
    cut = tmp_path / "cut.trace"
    cut.write_bytes(whole[:5000])                      # head -c 5000 run.trace
    extent = trace.scan(cut)
    assert not extent.whole and 0 < extent.end < 5000 and extent.records > 0
    for args in (("replay",), ("pages",), ("stats",), ("show",),
                 ("whatif", "--physical", "64K")):
        r = cli(args[0], cut, *args[1:])
        assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, (args, r.stderr)
        assert (f"cramfs-trace: {cut}: cut off at byte 5000, inside a record: the last "
                f"whole record ends at byte {extent.end}") in r.stderr, r.stderr
        assert f"--partial reads the {extent.records} whole records before byte " \
            f"{extent.end}" in r.stderr
    with pytest.raises(trace.TraceError, match="cut off at byte 5000"):
        trace.read_trace(cut)
    # --partial replays what is there, and says where it stops
    r = cli("replay", cut, "--partial")
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(f"cramfs-trace: warning: {cut}: cut off at byte 5000")
    assert f"reading the {extent.records} whole records before byte {extent.end}" in r.stderr
    assert f"replayed {extent.records} calls" in r.stdout
    r = cli("stats", cut, "--partial")
    assert r.returncode == 0 and "cut short: cut off at byte 5000" in r.stdout
    # cut on a record's boundary: whole records, but no stop record
    (tmp_path / "early.trace").write_bytes(whole[:extent.end])
    r = cli("replay", tmp_path / "early.trace")
    assert r.returncode == 1
    assert f"ends at byte {extent.end} with no stop record" in r.stderr
    # cut inside the header: nothing to replay, --partial or not
    for n in (40, 10):
        (tmp_path / "head.trace").write_bytes(whole[:n])
        r = cli("replay", tmp_path / "head.trace", "--partial")
        assert r.returncode == 1 and f"cut off at byte {n}, inside its header" in r.stderr
    # a damaged record: its kind overwritten
    at = extent.end                                     # a record starts there
    bad = bytearray(whole)
    bad[at + 8] = 200
    (tmp_path / "bad.trace").write_bytes(bad)
    r = cli("replay", tmp_path / "bad.trace")
    assert r.returncode == 1
    assert f"damaged at byte {at}: a record of no known kind (200)" in r.stderr
    # a write whose lz4 block does not decode: found as it is read, with its offset
    at, n = next((at, n) for at, op, n in offsets(whole)
                 if op == trace.WRITE and whole[at + REC.size] == trace.WHOLE)
    garbled = bytearray(whole)
    garbled[at + REC.size + 1:at + REC.size + n] = b"\xff" * (n - 1)
    (tmp_path / "garbled.trace").write_bytes(garbled)
    r = cli("replay", tmp_path / "garbled.trace")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1, r.stderr
    assert f"damaged at byte {at}: a write record's payload does not decode" in r.stderr
    r = cli("replay", tmp_path / "garbled.trace", "--partial")
    assert r.returncode == 0 and f"damaged at byte {at}" in r.stderr
    before = sum(1 for o, _, _ in offsets(whole) if o < at)
    assert f"replayed {before} calls" in r.stdout


REC = struct.Struct("<dBIqqiI")


def offsets(data: bytes) -> list[tuple[int, int, int]]:
    """Each record of a trace's bytes: its offset, kind and payload length."""
    (size,) = struct.unpack_from("<I", data, 10)
    pos, out = 14 + size, []
    while pos + REC.size <= len(data):
        _, op, _, _, _, _, n = REC.unpack_from(data, pos)
        out.append((pos, op, n))
        pos += REC.size + n
    return out


def test_errors_name_the_option_and_the_value(tmp_path):
    ns = fresh()
    record(ns, tmp_path / "t.trace")
    t = tmp_path / "t.trace"
    for args, line in (
            (("whatif", t, "--physical", "1.5G"),
             "cramfs-trace: --physical 1.5G: not a size: '1.5G' (use bytes or a K/M/G/T "
             "suffix)"),
            (("whatif", t, "--physical", "64K,2T"),
             f"cramfs-trace: --physical 2T: physical ({2 << 40}) must not exceed advertised "
             f"({16 << 20})"),
            (("whatif", t, "--warn-at", "95%"),
             "cramfs-trace: --warn-at 95%: need 0% < warn_at < critical_at < 100%"),
            (("replay", t, "-o", "colour=blue"),
             "cramfs-trace: -o colour=blue: unknown setting 'colour'"),
            (("pages", t, "-o", "physical=lots"),
             "cramfs-trace: -o physical=lots: not a size: 'lots' (use bytes or a K/M/G/T "
             "suffix)"),
            (("replay", t, "--every", "0"),
             "cramfs-trace: --every 0: the step must be above 0 seconds")):
        r = cli(*args)
        assert r.returncode == 2 and r.stderr == line + "\n", (args, r.stderr)
        assert "{" not in r.stderr
