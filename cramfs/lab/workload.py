"""A self-verifying, application-like memory workload for swap experiments.

`python -m cramfs.lab.workload --size 256M` fills an anonymous mapping with 64 KiB
chunks of four kinds of data (text, small integers, padded records, random
bytes), remembers a CRC of each, then touches the chunks in random order,
rewriting some, and checks every CRC. Squeezed into a small cgroup, its pages
go through swap and come back; exit status 3 means some came back wrong.
"""

from __future__ import annotations

import argparse
import mmap
import random
import struct
import sys
import time
import zlib
from array import array

from ..units import parse_size

CHUNK = 64 << 10
EXIT_MISMATCH = 3
_WORDS = ("the page slot device memory compressed ratio swap kernel node tier fault promote "
          "demote write control fallback poison level danger pool class zspage huge same "
          "alpha beta gamma delta request buffer queue latency cacheline").split()


def _pools(rng: random.Random) -> list[bytes]:
    """One 1 MiB pool per compressible kind; chunks are slices at random offsets."""
    text = " ".join(rng.choice(_WORDS) for _ in range(200_000)).encode()[: 1 << 20]
    ints = array("i", (int(rng.expovariate(0.01)) for _ in range(1 << 18))).tobytes()
    rec = struct.Struct("<QI12sxxxx")     # id, small value, name, padding: 32 bytes
    records = b"".join(rec.pack(i, rng.randrange(100), rng.choice(_WORDS).encode())
                       for i in range((1 << 20) // rec.size))
    return [text, ints, records]


def _chunk(rng: random.Random, pools: list[bytes], index: int, generation: int) -> bytes:
    kind = rng.randrange(4)
    if kind == 3:
        body = rng.randbytes(CHUNK - 16)
    else:
        pool = pools[kind]
        start = rng.randrange(len(pool) - CHUNK)
        body = pool[start:start + CHUNK - 16]
    # A header unique to the chunk: a page swapped back into the wrong place fails the CRC.
    return struct.pack("<QQ", index, generation) + body


def run(size: int, passes: int, seed: int, rewrite: float) -> int:
    rng = random.Random(seed)
    pools = _pools(rng)
    n = max(1, size // CHUNK)
    mem = mmap.mmap(-1, n * CHUNK, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    crcs = array("I", bytes(4 * n))
    t0 = time.monotonic()
    for i in range(n):
        data = _chunk(rng, pools, i, 0)
        mem[i * CHUNK:(i + 1) * CHUNK] = data
        crcs[i] = zlib.crc32(data)
    print(f"workload: filled {n * CHUNK >> 20} MiB in {time.monotonic() - t0:.1f}s", flush=True)
    generation = 0
    for p in range(passes + 1):
        final = p == passes
        order = list(range(n))
        rng.shuffle(order)
        bad = 0
        for i in order:
            if zlib.crc32(mem[i * CHUNK:(i + 1) * CHUNK]) != crcs[i]:
                bad += 1
                print(f"workload: chunk {i} does not match its checksum", file=sys.stderr)
            elif not final and rng.random() < rewrite:
                generation += 1
                data = _chunk(rng, pools, i, generation)
                mem[i * CHUNK:(i + 1) * CHUNK] = data
                crcs[i] = zlib.crc32(data)
        label = "final check" if final else f"pass {p + 1}/{passes}"
        print(f"workload: {label}: {n} chunks, {bad} mismatches, "
              f"{time.monotonic() - t0:.1f}s", flush=True)
        if bad:
            return EXIT_MISMATCH
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m cramfs.lab.workload", description=__doc__)
    p.add_argument("--size", type=parse_size, default=256 << 20, help="memory to use (256M)")
    p.add_argument("--passes", type=int, default=2, help="random-order passes (2)")
    p.add_argument("--rewrite", type=float, default=0.25, help="share rewritten per pass")
    p.add_argument("--seed", type=int, default=1)
    args = p.parse_args(argv)
    return run(args.size, args.passes, args.seed, args.rewrite)


if __name__ == "__main__":
    sys.exit(main())
