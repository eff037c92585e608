"""The kernel-exact LZO1X-1 codec (cramfs/_lzok.pyx): `lzo` and `lzo-rle` as zram
writes them, and a decompressor for both that stays inside its buffers.

Three oracles: liblzo2's lzo1x_1_15_compress (byte for byte, lzo only: nothing
outside the kernel writes lzo-rle), python-lzo's decompressor (it reads our lzo
blocks back), and the kernel itself: the same pages written one at a time to zram0
with `lzo` and with `lzo-rle` grow compr_data_size by exactly our block's length.
"""

from __future__ import annotations

import ctypes
import os
import random
from collections.abc import Iterator
from pathlib import Path

import lzo
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cramfs import _lzok
from cramfs.lab import zram
from cramfs.zsgeometry import geometry

# (by name: the module has no .pyi yet, so to mypy it is Any)

P = 4096
RLE_HEADER = b"\x11\x01"          # 17, then bitstream version 1 (lzodefs.h's LZO_VERSION)
END = b"\x11\x00\x00"             # M4 with distance 0: the end of every stream


# ------------------------------------------------------------------ liblzo2 by ctypes

def _liblzo2() -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL("liblzo2.so.2")
    except OSError:
        return None
    for name in ("lzo1x_1_15_compress", "lzo1x_decompress_safe"):
        fn = getattr(lib, name)
        fn.restype = ctypes.c_int
        fn.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
                       ctypes.POINTER(ctypes.c_size_t), ctypes.c_void_p]
    return lib


LIBLZO2 = _liblzo2()
needs_liblzo2 = pytest.mark.skipif(LIBLZO2 is None, reason="liblzo2.so.2 is not installed")
# lzo1x.h: LZO1X_1_15_MEM_COMPRESS is 32768 * lzo_sizeof_dict_t, a pointer's size
_WRKMEM = ctypes.create_string_buffer(32768 * ctypes.sizeof(ctypes.c_void_p))


def liblzo2_compress(data: bytes) -> bytes:
    assert LIBLZO2 is not None
    out = ctypes.create_string_buffer(_lzok.bound(len(data)))
    size = ctypes.c_size_t(len(out))
    assert LIBLZO2.lzo1x_1_15_compress(data, len(data), out, ctypes.byref(size), _WRKMEM) == 0
    return out.raw[:size.value]


def liblzo2_decompress(blob: bytes, capacity: int) -> bytes | None:
    assert LIBLZO2 is not None
    out = ctypes.create_string_buffer(max(capacity, 1))
    size = ctypes.c_size_t(capacity)
    if LIBLZO2.lzo1x_decompress_safe(blob, len(blob), out, ctypes.byref(size), None) != 0:
        return None
    return out.raw[:size.value]


# --------------------------------------------------------------------------- corpus

def _same_filled(page: bytes) -> bool:
    return page == page[:8] * (P // 8)


def file_pages(path: str | Path, count: int) -> list[bytes]:
    """`count` whole pages spread evenly over a file (same-filled ones left out:
    zram stores those without its compressor)."""
    p = Path(path).resolve()
    if not p.is_file():
        return []
    data = p.read_bytes()
    total = len(data) // P
    step = max(1, total // count)
    pages = [data[i * P:(i + 1) * P] for i in range(0, total, step)][:count]
    return [pg for pg in pages if not _same_filled(pg)]


def stdlib_text_pages(count: int) -> list[bytes]:
    """Python's own stdlib sources, concatenated, in whole pages."""
    text = bytearray()
    for f in sorted(Path(os.__file__).parent.glob("*.py")):
        text += f.read_bytes()
        if len(text) >= count * P:
            break
    return [bytes(text[i:i + P]) for i in range(0, len(text) - P + 1, P)][:count]


def zero_run_pages(count: int, seed: int = 5) -> list[bytes]:
    """Text, code or noise cut by runs of zero bytes: runs of every length that
    matters to lzo-rle (3, 4, 5, around 2051, most of the page), anywhere,
    including the last 20 bytes where the kernel no longer looks for them."""
    rng = random.Random(seed)
    words = b"the of swap page zram lzo run zero tier slot class huge 0x00 ".split()
    runs = [1, 2, 3, 4, 5, 7, 8, 9, 16, 31, 64, 255, 260, 2047, 2050, 2051, 2052, 2060, 3000]
    out: list[bytes] = []
    while len(out) < count:
        page = bytearray()
        while len(page) < P:
            kind = rng.randrange(4)
            if kind == 0:
                page += b" ".join(rng.choice(words) for _ in range(rng.randrange(1, 60)))
            elif kind == 1:
                page += rng.randbytes(rng.randrange(1, 300))
            elif kind == 2:
                page += rng.randbytes(rng.randrange(1, 9)) * rng.randrange(1, 40)
            page += bytes(rng.choice(runs) if rng.random() < 0.7 else rng.randrange(1, 4000))
        page = page[:P]
        if rng.random() < 0.2:                          # a run into the page's last bytes
            cut = rng.randrange(1, 40)
            page[P - cut:] = bytes(cut)
        if not _same_filled(bytes(page)):
            out.append(bytes(page))
    return out


def synthetic_pages(count: int, seed: int = 9) -> list[bytes]:
    rng = random.Random(seed)
    words = b"alpha beta gamma delta page slot swap zram tier node ".split()
    out = []
    for i in range(count):
        kind = i % 5
        if kind == 0:
            page = b" ".join(rng.choice(words) for _ in range(900))[:P].ljust(P, b".")
        elif kind == 1:
            page = rng.randbytes(P)                                  # incompressible
        elif kind == 2:                                              # noise, then a fill
            r = rng.randrange(0, P)
            page = rng.randbytes(r) + bytes([rng.randrange(1, 256)]) * (P - r)
        elif kind == 3:                                              # short periods
            page = (rng.randbytes(rng.randrange(2, 64)) * P)[:P]
        else:                                                        # a block repeated
            block = rng.randbytes(rng.randrange(100, 2100))
            page = (block + rng.randbytes(rng.randrange(0, 50)) + block)[:P].ljust(P, b"\1")
        if not _same_filled(page):
            out.append(page)
    return out


def corpus() -> dict[str, list[bytes]]:
    lib = "/usr/lib/x86_64-linux-gnu/"
    return {
        "perl": file_pages("/usr/bin/perl", 250),
        "libc.so.6": file_pages(lib + "libc.so.6", 250),
        "libstdc++": file_pages(lib + "libstdc++.so.6", 250),
        "libcrypto": file_pages(lib + "libcrypto.so.3", 250),
        "stdlib text": stdlib_text_pages(200),
        "zero runs": zero_run_pages(200),
        "synthetic": synthetic_pages(120),
    }


# ------------------------------------------------------------------------ round trips

def _segment() -> st.SearchStrategy[bytes]:
    text = st.text(alphabet="etaoin shrdlu\n", min_size=1, max_size=600).map(str.encode)
    return st.one_of(
        st.integers(1, 3000).map(bytes),                                     # zero runs
        st.binary(min_size=1, max_size=600),                                 # noise
        text,
        st.tuples(st.binary(min_size=1, max_size=16), st.integers(1, 300))   # repeats
        .map(lambda t: t[0] * t[1]),
        st.tuples(st.integers(1, 255), st.integers(1, 3000)).map(lambda t: bytes([t[0]]) * t[1]),
    )


pages_up_to_8k = st.lists(_segment(), max_size=12).map(lambda parts: b"".join(parts)[:8192])


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=pages_up_to_8k)
def test_round_trip_both_formats(data):
    for rle in (False, True):
        blob = _lzok.compress(data, rle)
        assert len(blob) <= _lzok.bound(len(data))
        assert blob.startswith(RLE_HEADER) == rle and blob.endswith(END)
        assert _lzok.decompress(blob, len(data)) == data
        # exactly the room it needs is enough, one byte less is not
        assert _lzok._checked_compress(data, len(blob), rle) == blob
        assert _lzok._checked_compress(data, len(blob) - 1, rle) is None
        assert _lzok._checked_decompress(blob, len(data)) == data
        if data:
            assert _lzok._checked_decompress(blob, len(data) - 1) == -5    # output overrun


@needs_liblzo2
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=pages_up_to_8k)
def test_lzo_is_liblzo2s_lzo1x_1_15_and_python_lzo_reads_it(data):
    blob = _lzok.compress(data)
    assert blob == liblzo2_compress(data)
    assert lzo.decompress(blob, False, max(len(data), 1)) == data


@needs_liblzo2
@pytest.mark.parametrize("size", [0, 1, 20, 21, 22, 238, 239, 4096, 0xbfff, 0xc000, 0xc001,
                                  0xc000 + 21, 3 * 0xc000 + 5, 200_000])
def test_lzo_long_inputs_in_kernel_chunks(size):
    """Inputs longer than one chunk (0xc000 bytes): the literals pending at a chunk's
    end carry into the next, and the table starts empty again."""
    rng = random.Random(size)
    parts = [rng.randbytes(rng.randrange(1, 5000)) if rng.random() < 0.4
             else rng.randbytes(rng.randrange(1, 30)) * rng.randrange(1, 200)
             for _ in range(size // 500 + 1)]
    data = b"".join(parts)[:size]
    for rle in (False, True):
        assert _lzok.decompress(_lzok.compress(data, rle), size) == data
    assert _lzok.compress(data) == liblzo2_compress(data)


def _short(kind: str, n: int) -> bytes:
    rng = random.Random(n)
    if kind == "zeros":
        return bytes(n)
    if kind == "pairs":
        return (b"ab" * n)[:n]
    if kind == "text":
        return (b"the page and the slot and the page again; " * 10)[:n]
    return rng.randbytes(n)


@needs_liblzo2
@pytest.mark.parametrize("kind", ["zeros", "pairs", "text", "random"])
def test_every_short_length(kind):
    """Below 32 bytes the kernel looks for no match at all (its wrap-around guard,
    ptr + (pending + chunk) / 32 <= ptr, holds there): one literal run."""
    for n in range(400):
        data = _short(kind, n)
        blob = _lzok.compress(data)
        assert blob == liblzo2_compress(data), n
        if n < 32:
            plain = (bytes([17 + n]) + data if n else b"") + END
            assert blob == plain
            assert _lzok.compress(data, rle=True) == RLE_HEADER + plain
        assert _lzok.decompress(_lzok.compress(data, rle=True), n) == data


@needs_liblzo2
@pytest.mark.parametrize("kind", ["zeros", "pairs"])
def test_short_last_chunks(kind):
    """A last chunk of 21..40 bytes after a long match: the same wrap-around guard
    counts the literals still pending from the chunk before."""
    for n in list(range(0xc000 + 15, 0xc000 + 45)) + list(range(2 * 0xc000 + 15, 2 * 0xc000 + 45)):
        data = _short(kind, n)
        assert _lzok.compress(data) == liblzo2_compress(data), n
        for rle in (False, True):
            assert _lzok.decompress(_lzok.compress(data, rle), n) == data


def test_zero_runs_become_run_instructions():
    # 4 zero bytes after a literal: one run of 4 (L = 0, 4th byte 0), after the
    # literal's own length
    data = b"abcdefgh" + bytes(100) + b"ijklmnopqrstuvwxyz0123456789"
    blob = _lzok.compress(data, rle=True)
    run = 100 - 4
    assert blob[:2] == RLE_HEADER
    assert bytes([0x18 | run & 7, 0xfc, 0xff, run >> 3]) in blob
    assert _lzok.decompress(blob, len(data)) == data
    # no run instruction in lzo, and lzo-rle's runs stop at 2051 bytes
    assert b"\xfc\xff" not in _lzok.compress(data)
    big = b"x" * 30 + bytes(5000) + b"y" * 30
    blob = _lzok.compress(big, rle=True)
    assert blob.count(bytes([0x18 | 7, 0xfc, 0xff, 255])) == 2        # 2051 + 2051 + rest
    assert _lzok.decompress(blob, len(big)) == big


@needs_liblzo2
def test_lzo_rle_cuts_the_copies_that_would_read_as_a_run():
    """An M4 copy of 264 bytes at distance 0x803f, then 3 literals and a zero run.
    Uncut, lzo-rle would write its length byte as 0xff and its first distance byte
    as 0xfc | 3 (the literals' count): the run marker. The kernel cuts every such
    copy (261..264 bytes, distance bits 0x403f set) to 260 bytes, whatever follows;
    lzo keeps 264."""
    rng = random.Random(261)
    x = bytes(rng.randrange(0x80, 0x100) for _ in range(264))
    filler = (b"abcdefgh" * 5000)[:0x803f - len(x)]
    data = x + filler + x + b"\x01\x02\x03" + bytes(64) + rng.randbytes(40)
    lzo_blob, rle_blob = _lzok.compress(data), _lzok.compress(data, rle=True)
    # M4 with H = 1 and L = 0; 9 + 255 bytes; distance bytes; 4 literals follow
    assert b"\x18\xff\xfc\x00\x01" in lzo_blob
    # 9 + 251 bytes; the 4 bytes cut off and the 3 after them: 7 literals
    assert b"\x18\xfb\xfc\x00\x04" + x[260:] + b"\x01\x02\x03" in rle_blob
    assert lzo_blob == liblzo2_compress(data)
    assert lzo.decompress(lzo_blob, False, len(data)) == data
    for blob in (lzo_blob, rle_blob):
        assert _lzok.decompress(blob, len(data)) == data


def test_api_edges():
    assert _lzok.compress(b"") == END
    assert _lzok.compress(b"", rle=True) == RLE_HEADER + END
    assert _lzok.decompress(END, 0) == b""
    assert _lzok.decompress(RLE_HEADER + END, 10) == b""
    assert _lzok.compress(bytearray(b"abc")) == _lzok.compress(memoryview(b"abc"))
    assert _lzok.bound(4096) == 4096 + 256 + 64 + 3 + 2
    assert _lzok.WORKMEM == 8192 * 2                   # LZO1X_1_MEM_COMPRESS
    for bad in (b"", b"\x11\x00", END + b"\x00", b"\x11\x00\x01", b"\x12\x41\x11\x00"):
        with pytest.raises(ValueError, match="corrupt LZO block"):
            _lzok.decompress(bad, 100)
    with pytest.raises(ValueError):
        _lzok.decompress(END, -1)
    with pytest.raises(TypeError):
        _lzok.compress("text")


# ------------------------------------------------------------------- hostile input

def _mutations(blob: bytes, rng: random.Random) -> Iterator[bytes]:
    yield blob[:rng.randrange(len(blob) + 1)]                              # truncated
    b = bytearray(blob)
    for _ in range(rng.randrange(1, 4)):
        b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)                   # bit flips
    yield bytes(b)
    b = bytearray(blob)
    b[rng.randrange(len(b))] = rng.choice([0, 0x11, 0x18, 0x1f, 0x20, 0xfc, 0xff, 0x40])
    yield bytes(b)
    i = rng.randrange(len(blob) + 1)
    yield blob[:i] + rng.randbytes(rng.randrange(1, 8)) + blob[i:]          # inserted
    i = rng.randrange(len(blob))
    yield blob[:i] + blob[i + rng.randrange(1, 8):]                         # deleted
    yield RLE_HEADER + blob[2:] if blob.startswith(RLE_HEADER) else RLE_HEADER + blob


def _sources(rng: random.Random) -> list[bytes]:
    out = zero_run_pages(8, seed=rng.randrange(1000)) + synthetic_pages(10, rng.randrange(99))
    out += [rng.randbytes(rng.randrange(0, 300)) + bytes(rng.randrange(0, 3000)),
            b"ab" * rng.randrange(1, 3000), bytes(rng.randrange(0, 9000))]
    return out


def test_decompressor_never_leaves_its_buffers():
    """Mutated, truncated and random blocks: an error code or bytes, never a write
    past the output's end (a guard after it must stay intact) and, built with
    AddressSanitizer, never a read past the input's end (each input is an
    exact-size heap copy)."""
    rng = random.Random(2024)
    cases = 0
    for _ in range(40):
        for data in _sources(rng):
            for rle in (False, True):
                blob = _lzok.compress(data, rle)
                for bad in _mutations(blob, rng):
                    for cap in (len(data), rng.randrange(len(data) + 1), 2 * len(data) + 64):
                        got = _lzok._checked_decompress(bad, cap)
                        assert isinstance(got, int) or len(got) <= cap
                        cases += 1
    for _ in range(20_000):
        head = rng.choice([b"", RLE_HEADER, b"\x11", b"\x00", b"\x16"])
        junk = head + rng.randbytes(rng.randrange(0, 64))
        got = _lzok._checked_decompress(junk, rng.randrange(0, 5000))
        assert isinstance(got, int) or len(got) <= 5000
        cases += 1
    assert cases > 50_000


@needs_liblzo2
def test_decompressor_agrees_with_liblzo2_on_mutated_lzo_blocks():
    """Where both accept a mutated version-0 block they give the same bytes (a
    first byte of 17 with 5 or more bytes is lzo-rle's header to the kernel, not
    to liblzo2: those are left out)."""
    rng = random.Random(7)
    both = 0
    for _ in range(4):
        for data in _sources(rng):
            for bad in _mutations(_lzok.compress(data), rng):
                if len(bad) >= 5 and bad[0] == 17:
                    continue
                ours = _lzok._checked_decompress(bad, len(data) + 16)
                theirs = liblzo2_decompress(bad, len(data) + 16)
                if not isinstance(ours, int) and theirs is not None:
                    assert ours == theirs
                    both += 1
    assert both > 50


# ------------------------------------------------------------- the kernel as oracle

@pytest.mark.parametrize("algorithm", ["lzo", "lzo-rle"])
def test_page_sizes_are_zrams(algorithm):
    why = zram.unavailable(algorithm)
    if why:
        pytest.skip(why)
    huge = geometry(zram.kernel_chain_size()).huge_class_size    # 3625 with chains of 8
    named = corpus()
    pages = [pg for pgs in named.values() for pg in pgs]
    with zram.borrowed((len(pages) + 16) * P, algorithm) as dev:
        kernel = zram.compressed_sizes(dev, pages)
    ours = [len(_lzok.compress(pg, rle=algorithm == "lzo-rle")) for pg in pages]
    report, wrong, k = [], [], 0
    for name, pgs in named.items():
        agree = sized = 0
        for i in range(len(pgs)):
            want = ours[k] if ours[k] < huge else P          # huge: stored whole
            sized += ours[k] < huge
            if kernel[k] == want:
                agree += 1
            else:
                wrong.append(f"{name} #{i}: ours {ours[k]}, zram {kernel[k]}")
            k += 1
        report.append(f"{name} {agree}/{len(pgs)} ({sized} below huge)")
    print(f"{algorithm}: " + ", ".join(report))
    assert not wrong, f"{len(wrong)} pages differ: " + "; ".join(wrong[:10])
    assert len(pages) >= 1000
    assert any(s >= huge for s in ours) and any(s < 100 for s in ours)
