"""One file's page slots: a sparse two-level table of packed 64-bit words.

A dict of Python objects costs about 150 bytes a page; a swap file on an 8 GB
device has two million of them. Here the first level maps a chunk number to
an `array('Q')` of 512 words, allocated when the chunk gets its first page and
dropped with its last, so holes cost nothing and a stored page costs 8 bytes.

A word packs the slot's state, the compressor that wrote it, the huge flag and
the pool handle (0 = hole):

    bits 0-2  kind (SAME, DEVICE, FALLBACK, PROMOTED, POISONED, BACKED)
    bits 3-4  compressor id
    bit  5    huge (stored uncompressed)
    bits 6-63 handle into the device pool or the fallback pool, or the block of
              the backing file a written-back page is in

A same-filled page keeps its repeated word in the handle bits: inline when it
is a sign-extended 57-bit number (zero, -1, small integers: nearly all of
them), else as an index into the device's `WordStore`, 8 bytes more. The rare
extra lives in a side dict: the cost an injected ratio added to a page.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator

SAME, DEVICE, FALLBACK, PROMOTED, POISONED, BACKED = 1, 2, 3, 4, 5, 6
KINDS = 7                        # slot kinds, 0 (a hole) included
KIND_MASK = 7
ALGO_SHIFT = 3
HUGE_BIT = 1 << 5
HANDLE_SHIFT = 6

TRIED = 1 << 31                  # in an access age: recompression gained nothing
INLINE_LIMIT = 1 << 56          # same-filled words in [-2^56, 2^56) live in the table word
_INLINE_MASK = (1 << 57) - 1
_WORD_MASK = (1 << 64) - 1

CHUNK_BITS = 9
CHUNK = 1 << CHUNK_BITS
_LOW = CHUNK - 1
_EMPTY = bytes(8 * CHUNK)


def same_handle(word: bytes, store: WordStore) -> int:
    """The handle bits of a same-filled page repeating the 8-byte `word`."""
    value = int.from_bytes(word, "little", signed=True)
    if -INLINE_LIMIT <= value < INLINE_LIMIT:
        return (value & _INLINE_MASK) << 1
    return store.put(value & _WORD_MASK) << 1 | 1


def same_word_of(handle: int, store: WordStore) -> bytes:
    if handle & 1:
        return store.get(handle >> 1).to_bytes(8, "little")
    value = handle >> 1
    if value >= INLINE_LIMIT:                 # sign-extend the 57-bit form
        value -= 1 << 57
    return value.to_bytes(8, "little", signed=True)


class WordStore:
    """The repeated words that do not fit in a table word, 8 bytes each.

    Freed entries are reused first: their list is threaded through the array
    itself, as zsmalloc threads its free list through free objects."""

    __slots__ = ("_free", "_words", "live")

    def __init__(self) -> None:
        self._words = array("Q")
        self._free = 0              # index + 1 of the first free entry; 0 if none
        self.live = 0

    def put(self, value: int) -> int:
        self.live += 1
        if self._free:
            i = self._free - 1
            self._free = self._words[i]
            self._words[i] = value
            return i
        self._words.append(value)
        return len(self._words) - 1

    def get(self, i: int) -> int:
        return self._words[i]

    def free(self, i: int) -> None:
        self.live -= 1
        self._words[i] = self._free
        self._free = i + 1

    @property
    def metadata_bytes(self) -> int:
        return 8 * len(self._words)


def pack(kind: int, handle: int = 0, algo: int = 0, huge: bool = False) -> int:
    return handle << HANDLE_SHIFT | (HUGE_BIT if huge else 0) | algo << ALGO_SHIFT | kind


def kind_of(word: int) -> int:
    return word & KIND_MASK


def handle_of(word: int) -> int:
    return word >> HANDLE_SHIFT


def algo_of(word: int) -> int:
    return word >> ALGO_SHIFT & 3


def is_huge(word: int) -> bool:
    return bool(word & HUGE_BIT)


class PageTable:
    """A file's slots and its share of the device (kept by the slot store, device/slots.py)."""

    __slots__ = ("__weakref__", "_ages", "_chunks", "_used", "count", "extra", "name",
                 "physical_bytes", "promoted_pages", "stored_pages")

    def __init__(self, name: str = "") -> None:
        self.name = name                   # for event lines; the namespace keeps it current
        self._chunks: dict[int, array[int]] = {}
        self._used: dict[int, int] = {}    # non-hole words per chunk
        # Per-page access ages, allocated only once idle tracking or recompression is
        # used (tracking()): 4 bytes a page, chunk for chunk with the words.
        self._ages: dict[int, array[int]] | None = None
        self.count = 0                     # non-hole slots
        self.extra: dict[int, int] = {}
        self.stored_pages = 0              # same + compressed + huge
        self.physical_bytes = 0            # class-size charges (+ injected extra)
        self.promoted_pages = 0

    def get(self, idx: int) -> int:
        chunk = self._chunks.get(idx >> CHUNK_BITS)
        return chunk[idx & _LOW] if chunk is not None else 0

    def set(self, idx: int, word: int) -> None:
        key = idx >> CHUNK_BITS
        chunk = self._chunks.get(key)
        if chunk is None:
            chunk = self._chunks[key] = array("Q", _EMPTY)
            self._used[key] = 0
        i = idx & _LOW
        if not chunk[i]:
            self._used[key] += 1
            self.count += 1
        chunk[i] = word

    def clear(self, idx: int) -> int:
        """Make the slot a hole; return the word it held (0 if it was one)."""
        key = idx >> CHUNK_BITS
        chunk = self._chunks.get(key)
        if chunk is None:
            return 0
        i = idx & _LOW
        word = chunk[i]
        if word:
            chunk[i] = 0
            self.count -= 1
            left = self._used[key] - 1
            if left:
                self._used[key] = left
            else:
                del self._chunks[key], self._used[key]
                if self._ages is not None:
                    self._ages.pop(key, None)
        return word

    def items(self) -> Iterator[tuple[int, int]]:
        """(index, word) of every non-hole slot, a snapshot safe to mutate under."""
        out = []
        for key in sorted(self._chunks):
            base = key << CHUNK_BITS
            out += [(base + i, w) for i, w in enumerate(self._chunks[key]) if w]
        return iter(out)

    def indices_in(self, first: int, stop: int) -> list[int]:
        """Non-hole indices in [first, stop), visiting only allocated chunks."""
        out = []
        for key in sorted(self._chunks):
            base = key << CHUNK_BITS
            if base + CHUNK <= first or base >= stop:
                continue
            chunk = self._chunks[key]
            lo, hi = max(first - base, 0), min(stop - base, CHUNK)
            out += [base + i for i in range(lo, hi) if chunk[i]]
        return out

    # ------------------------------------------------------------ access ages
    # An age is the second (since the device started, plus 1) of the page's last
    # access; 0 marks the page idle, as zram's ZRAM_IDLE flag does. The top bit
    # marks a page recompression tried without gain, until it is rewritten.

    @property
    def tracking(self) -> bool:
        return self._ages is not None

    def track(self, now: int) -> None:
        """Start tracking: every page present counts as accessed `now`."""
        if self._ages is None:
            self._ages = {key: array("I", [now]) * CHUNK for key in self._chunks}

    def _age_chunk(self, idx: int) -> array[int]:
        assert self._ages is not None
        key = idx >> CHUNK_BITS
        ages = self._ages.get(key)
        if ages is None:
            ages = self._ages[key] = array("I", bytes(4 * CHUNK))
        return ages

    def touch(self, idx: int, now: int) -> None:
        """An access: not idle any more (a recompression mark stays)."""
        ages = self._age_chunk(idx)
        ages[idx & _LOW] = now | ages[idx & _LOW] & TRIED

    def renew(self, idx: int, now: int) -> None:
        """A new page in the slot: accessed now, never tried."""
        self._age_chunk(idx)[idx & _LOW] = now

    def age(self, idx: int) -> int:
        """The raw age word: 0 idle; TRIED set if recompression gained nothing."""
        assert self._ages is not None
        ages = self._ages.get(idx >> CHUNK_BITS)
        return ages[idx & _LOW] if ages is not None else 0

    def set_age(self, idx: int, value: int) -> None:
        self._age_chunk(idx)[idx & _LOW] = value

    @property
    def metadata_bytes(self) -> int:
        ages = len(self._ages) * 4 * CHUNK if self._ages is not None else 0
        return len(self._chunks) * 8 * CHUNK + ages
