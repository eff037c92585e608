"""Fidelity: the same pages into kernel zram (lz4) and into cramfs (lz4, dram=0) give
the same mm_stat, before and after freeing three pages in four and compacting.

The kernel is the oracle. Its lz4 and python-lz4 may compress a page to different
sizes, so pages meant to sit on a class boundary or at the huge threshold are
first probed on zram one by one, and only those whose size there is the one
meant are kept. The geometry itself is checked against zsmalloc's algorithm for
every chain size (golden figures from the kernel's Documentation/mm/zsmalloc.rst).
"""

from __future__ import annotations

import mmap
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from cramfs.compressors import COMPRESSORS
from cramfs.config import DeviceConfig
from cramfs.device import Device, same_word
from cramfs.lab import zram
from cramfs.pool import ArenaPool
from cramfs.units import PAGE_SIZE
from cramfs.zsgeometry import CHAIN_SIZES, ZS_HANDLE_SIZE, geometry

from .conftest import Mount, mount_unavailable

P = PAGE_SIZE

# The top ("watermark") class per chain size, from the kernel's zsmalloc.rst.
WATERMARK = {4: 3264, 5: 3408, 6: 3504, 7: 3584, 8: 3632, 9: 3680, 10: 3712, 11: 3744,
             12: 3776, 13: 3792, 14: 3808, 15: 3840, 16: 3840}


@pytest.mark.parametrize("chain", list(CHAIN_SIZES))
def test_geometry_matches_zsmalloc(chain):
    g = geometry(chain)
    top = g.classes[-2]                       # the last class below the page-sized one
    assert top.size == WATERMARK[chain]
    assert g.huge_class_size == WATERMARK[chain] - (ZS_HANDLE_SIZE - 1)
    assert g.classes[-1].size == P and g.classes[-1].objs_per_zspage == 1
    for c in g.classes:
        assert 1 <= c.pages_per_zspage <= chain
        assert c.objs_per_zspage == c.pages_per_zspage * P // c.size
    sizes = [c.size for c in g.classes]
    assert sizes == sorted(sizes) and len(set(sizes)) == len(sizes)


def test_geometry_examples_from_the_kernel_docs():
    # zsmalloc.rst: with chains of 4, classes #95-99 merge into #100 (1632 bytes, 2 pages,
    # 5 objects); longer chains give #96 (1568 bytes) a zspage of 5 pages and 13 objects.
    g4, g8 = geometry(4), geometry(8)
    assert g4.class_of(1568 - ZS_HANDLE_SIZE).index == 100
    assert (g4.class_of(1568 - ZS_HANDLE_SIZE).pages_per_zspage,
            g4.class_of(1568 - ZS_HANDLE_SIZE).objs_per_zspage) == (2, 5)
    c = g8.class_of(1568 - ZS_HANDLE_SIZE)
    assert (c.index, c.size, c.pages_per_zspage, c.objs_per_zspage) == (96, 1568, 5, 13)
    # the top of the table for chains of 8, index by index
    top8 = [(c.index, c.size, c.pages_per_zspage) for c in g8.classes[-6:]]
    assert top8 == [(202, 3264, 4), (211, 3408, 5), (217, 3504, 6), (222, 3584, 7),
                    (225, 3632, 8), (254, 4096, 1)]
    # ANCHORS: the huge threshold for chains of 4, 8 and 16
    assert [geometry(n).huge_class_size for n in (4, 8, 16)] == [3257, 3625, 3833]


def test_pool_takes_the_fullest_zspage_first():
    pool = ArenaPool()
    c = geometry(8).class_of(1000)                # 4 objects per zspage
    per = c.objs_per_zspage
    hs = [pool.put(bytes(1000)) for _ in range(3 * per)]
    assert pool.used_bytes == 3 * c.pages_per_zspage * P
    # leave zspage 0 with one object, 1 with per - 1, 2 with per - 2
    for h in hs[1:per] + hs[per + per - 1:2 * per] + hs[2 * per + per - 2:3 * per]:
        pool.free(h)
    h = pool.put(bytes(1000))
    assert (h >> 23 & ((1 << 26) - 1)) == 1, "the fullest non-full zspage takes it"
    pool.close()


# ------------------------------------------------------------ against the kernel

def _oracle_unavailable() -> str | None:
    return mount_unavailable() or zram.unavailable("lz4")


needs_zram = pytest.mark.skipif(_oracle_unavailable() is not None,
                                reason=_oracle_unavailable() or "")


def _lz4_len(page: bytes) -> int:
    return len(COMPRESSORS["lz4"].compress(page))


def page_compressing_to(target: int, seed: int) -> bytes | None:
    """A page that python-lz4 compresses to exactly `target` bytes, or None:
    `r` random bytes then a run of one repeated byte, `r` found by bisection."""
    rng = random.Random(seed)
    noise = rng.randbytes(P)
    fill = bytes([rng.randrange(256)])
    lo, hi = 0, P
    while lo < hi:
        mid = (lo + hi) // 2
        if _lz4_len(noise[:mid] + fill * (P - mid)) < target:
            lo = mid + 1
        else:
            hi = mid
    for r in range(max(0, lo - 3), min(P, lo + 3) + 1):
        page = noise[:r] + fill * (P - r)
        if _lz4_len(page) == target:
            return page
    return None


def boundary_targets(chain: int) -> list[int]:
    """Object sizes on both sides of every class boundary and of the huge threshold."""
    g = geometry(chain)
    out = set()
    for c in g.classes[:-1]:
        out |= {c.size - ZS_HANDLE_SIZE, c.size - ZS_HANDLE_SIZE + 1}
    h = g.huge_class_size
    out |= {h - 2, h - 1, h, h + 1, h + 2}
    return sorted(t for t in out if 40 <= t < P)


def _write_zram(fd: int, buf: mmap.mmap, pages: list[bytes], first: int) -> None:
    for k in range(0, len(pages), 256):
        chunk = b"".join(pages[k:k + 256])
        buf[:len(chunk)] = chunk
        assert os.pwritev(fd, [memoryview(buf)[:len(chunk)]], (first + k) * P) == len(chunk)


def probed_boundary_pages(dev: str, chain: int) -> list[bytes]:
    """Boundary pages whose compressed size on the kernel's lz4 is the one meant."""
    kept = []
    fd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    buf = mmap.mmap(-1, 256 * P)
    try:
        for n, target in enumerate(boundary_targets(chain)):
            page = page_compressing_to(target, n)
            if page is None:
                continue
            before = zram.mm_stat()["compr_data_size"]
            _write_zram(fd, buf, [page], n)
            got = zram.mm_stat()["compr_data_size"] - before
            huge = target >= geometry(chain).huge_class_size
            if got == (P if huge else target):
                kept.append(page)
    finally:
        os.close(fd)
        buf.close()
    return kept


def real_pages(limit: int) -> list[bytes]:
    """Binaries, libraries and text from this machine, in whole pages."""
    names = ["/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/bin/perl", "/usr/bin/python3",
             "/usr/share/common-licenses/GPL-3", "/usr/share/dict/words", "/usr/bin/bash",
             "/usr/lib/x86_64-linux-gnu/libcrypto.so.3", "/usr/bin/ls", "/usr/bin/tar"]
    data = b""
    for name in names:
        path = Path(name).resolve()
        if path.is_file():
            data += path.read_bytes()[: limit - len(data)]
        if len(data) >= limit:
            break
    return [data[i:i + P].ljust(P, b"\0") for i in range(0, len(data), P)]


def synthetic_pages(count: int) -> list[bytes]:
    rng = random.Random(9)
    words = b"alpha beta gamma delta page slot swap zram tier node ".split()
    out = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            out.append(bytes(P))
        elif kind == 1:
            out.append(rng.randbytes(8) * (P // 8))              # same-filled, not zero
        elif kind == 2:
            out.append(b" ".join(rng.choice(words) for _ in range(900))[:P].ljust(P, b"."))
        elif kind == 3:
            out.append(rng.randbytes(P))                          # incompressible
        else:
            half = rng.randbytes(rng.randrange(200, 3800))
            out.append(half + bytes(P - len(half)))
    return out


def _record(what: str, kernel: dict[str, int], ours: dict[str, int]) -> None:
    """With FIDELITY_REPORT=FILE, append the comparison as markdown table rows (the
    fidelity table of docs/fidelity.md comes from such a run)."""
    out = os.environ.get("FIDELITY_REPORT")
    if not out:
        return
    with open(out, "a") as f:
        for key in ("orig_data_size", "compr_data_size", "mem_used_total", "same_pages",
                    "pages_compacted", "huge_pages"):
            if key in kernel and key in ours:
                diff = (ours[key] - kernel[key]) / kernel[key] * 100 if kernel[key] else 0.0
                f.write(f"| {what} | {key} | {kernel[key]:,} | {ours[key]:,} | "
                        f"{diff:+.2f}% |\n")


def _compare(kernel: dict[str, int], ours: dict[str, int], exact: tuple[str, ...],
             close: tuple[str, ...], tolerance: float) -> None:
    for key in exact:
        assert ours[key] == kernel[key], (key, kernel, ours)
    for key in close:
        assert abs(ours[key] - kernel[key]) <= tolerance * max(kernel[key], 1), \
            (key, kernel[key], ours[key])


def _mm_stat(m: Mount) -> dict[str, int]:
    values = m.ctl("mm_stat").split()
    return dict(zip(zram.MM_STAT_FIELDS, map(int, values), strict=False))


def _run_both(mounter: Callable[..., Mount], dev: str, pages: list[bytes], chain: int,
              algorithm: str = "lz4",
              ) -> tuple[dict[str, int], dict[str, int], dict[str, int], dict[str, int]]:
    """Write `pages` to zram and to a cramfs file; then free three in four and compact."""
    m = mounter("-o", f"advertised=4G,physical=2G,dram=0,chain_size={chain},"
                f"compressor={algorithm}")
    buf = mmap.mmap(-1, 256 * P)
    zfd = os.open(dev, os.O_RDWR | os.O_DIRECT)
    cfd = os.open(m.path / "data", os.O_RDWR | os.O_CREAT | os.O_DIRECT, 0o600)
    try:
        _write_zram(zfd, buf, pages, 0)
        _write_zram(cfd, buf, pages, 0)
        written = (zram.mm_stat(), _mm_stat(m))
        lines = []
        for i in range(len(pages)):
            if i % 4:
                zram.discard(zfd, i * P, P)
                lines.append(f"data {i * P} {P}\n")
        for k in range(0, len(lines), 100):
            m.set("discard", "".join(lines[k:k + 100]).rstrip("\n"))
        zram.compact()
        m.set("compact", "1")
        return (*written, zram.mm_stat(), _mm_stat(m))
    finally:
        os.close(zfd)
        os.close(cfd)
        buf.close()


@pytest.mark.mount          # zram needs root too
@needs_zram
@pytest.mark.parametrize("data", ["synthetic", "boundaries"])
def test_same_pages_same_mm_stat_as_kernel_zram(mounter, data):
    """The whole stack, kernel path included, on pages both lz4s compress alike."""
    chain = zram.kernel_chain_size()
    if data == "synthetic":
        pages = synthetic_pages(2000)
    else:
        with zram.borrowed(1 << 30, "lz4") as dev:
            pages = probed_boundary_pages(dev, chain)
        assert len(pages) > len(boundary_targets(chain)) // 2, "most boundary pages probe true"
        pages = pages * 8            # enough of each size to fill several zspages
        random.Random(3).shuffle(pages)
    with zram.borrowed(1 << 30, "lz4") as dev:
        kz, kc, az, ac = _run_both(mounter, dev, pages, chain)
    _record(f"{data}, written", kz, kc)
    _record(f"{data}, 3 in 4 freed, compacted", az, ac)
    _compare(kz, kc, ("orig_data_size", "same_pages"),
             ("compr_data_size", "mem_used_total", "huge_pages"), 0.01)
    _compare(az, ac, ("orig_data_size", "same_pages"), ("mem_used_total",), 0.02)


@pytest.mark.mount          # zram needs root too
@needs_zram
def test_real_data_replayed_with_the_kernels_sizes_is_exact():
    """Real binaries and text. The kernel's lz4 (lib/lz4) and lz4 1.9.4 parse real
    data differently, so here cramfs's device is given the kernel's own compressed
    size of each page: everything from there on (same-filled pages, the huge
    threshold, classes, zspage choice, compaction) must give zram's numbers exactly."""
    chain = zram.kernel_chain_size()
    pages = real_pages(8 << 20)
    assert len(pages) > 1000, "this machine has the binaries and texts named"
    pages += synthetic_pages(500)
    random.Random(5).shuffle(pages)
    with zram.borrowed(1 << 30, "lz4") as dev:
        sizes = zram.compressed_sizes(dev, pages)
        written = zram.mm_stat()
        fd = os.open(dev, os.O_RDWR)
        try:
            for i in range(len(pages)):
                if i % 4:
                    zram.discard(fd, i * P, P)
        finally:
            os.close(fd)
        zram.compact()
        compacted = zram.mm_stat()

    dev_ = Device(DeviceConfig(advertised=4 << 30, physical=2 << 30, dram=0,
                               chain_size=chain))
    by_page = dict(zip(pages, sizes, strict=True))
    none = COMPRESSORS["none"].ident

    def kernel_encode(page: bytes):
        word = same_word(page)
        if word is not None:
            return word, b"", 0, False
        size = by_page[page]
        return (None, page, none, True) if size == P else (None, bytes(size), 0, False)

    dev_.encode = kernel_encode           # the one thing replaced: the compressor
    dev_.paths.configure()                # (the compiled paths copy it)
    table = dev_.table("data")
    for i, page in enumerate(pages):
        dev_.write(table, i * P, page)
    ours = dict(zip(zram.MM_STAT_FIELDS, map(int, dev_.mm_stat().split()), strict=True))
    _record("real + synthetic, kernel's sizes, written", written, ours)
    for key in ("orig_data_size", "compr_data_size", "mem_used_total", "same_pages",
                "huge_pages", "huge_pages_since"):
        assert ours[key] == written[key], (key, written, ours)
    for i in range(len(pages)):
        if i % 4:
            dev_.discard(table, i, 1)
    dev_.compact()
    ours = dict(zip(zram.MM_STAT_FIELDS, map(int, dev_.mm_stat().split()), strict=True))
    _record("real + synthetic, kernel's sizes, 3 in 4 freed, compacted", compacted, ours)
    for key in ("orig_data_size", "compr_data_size", "mem_used_total", "pages_compacted",
                "huge_pages"):
        assert ours[key] == compacted[key], (key, compacted, ours)
    dev_.close()


@pytest.mark.mount          # zram needs root too
@needs_zram
@pytest.mark.parametrize("algorithm", ["lz4", "lzo", "lzo-rle"])
def test_real_data_through_the_mount(mounter, algorithm):
    """The whole stack on real data, each side with its own compressor: cramfs's lz4,
    lzo and lzo-rle compress as lib/lz4 and lib/lzo do (cramfs/_lz4k, cramfs/_lzok), so
    compr_data_size and all that follows from it are zram's, written and after three in
    four are freed and both compact."""
    why = zram.unavailable(algorithm)
    if why and "in use" not in why:
        pytest.skip(f"zram0 cannot compare {algorithm} here: {why}")
    pages = real_pages(8 << 20)
    with zram.borrowed(1 << 30, algorithm) as dev:
        kz, kc, az, ac = _run_both(mounter, dev, pages, zram.kernel_chain_size(), algorithm)
    _record(f"real, {algorithm}, through the mount (each side its own), written", kz, kc)
    _record(f"real, {algorithm}, through the mount, 3 in 4 freed, compacted", az, ac)
    _compare(kz, kc, ("orig_data_size", "same_pages", "huge_pages", "compr_data_size"),
             ("mem_used_total",), 0.0005)
    _compare(az, ac, ("orig_data_size", "same_pages", "huge_pages", "compr_data_size"),
             ("mem_used_total",), 0.0005)
