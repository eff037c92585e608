"""Where compressed page data physically lives, and what it really costs.

The device model talks to a pool through `Pool` only: put, get, free, and two
numbers. `used_bytes` is the honest physical usage including allocator
overhead (zram's mem_used_total); `stored_bytes` is the sum of object lengths
(zram's compr_data_size). The gap between them is what an allocator wastes.

`ClassPool` charges each object its zsmalloc size class (16-byte steps from
32 bytes to a page), so rounding waste is accounted for exactly as zsmalloc
would account for it, without yet packing objects into shared arenas.
"""

from __future__ import annotations

from typing import Protocol

from .units import PAGE_SIZE

CLASS_STEP = 16
MIN_CLASS = 32


def class_size(size: int) -> int:
    """The zsmalloc-style size class an object of `size` bytes occupies."""
    if size <= MIN_CLASS:
        return MIN_CLASS
    if size >= PAGE_SIZE:
        return PAGE_SIZE
    return -(-size // CLASS_STEP) * CLASS_STEP


class Pool(Protocol):
    @property
    def used_bytes(self) -> int: ...

    @property
    def stored_bytes(self) -> int: ...

    def cost(self, size: int) -> int:
        """Bytes of physical memory that storing an object of `size` would add."""
        ...

    def put(self, blob: bytes) -> int: ...

    def get(self, handle: int) -> bytes: ...

    def free(self, handle: int) -> None: ...


class ClassPool:
    """Objects kept whole, each charged its size class."""

    def __init__(self) -> None:
        self._objects: dict[int, bytes] = {}
        self._next = 1
        self.used_bytes = 0
        self.stored_bytes = 0

    def cost(self, size: int) -> int:
        return class_size(size)

    def put(self, blob: bytes) -> int:
        handle = self._next
        self._next += 1
        self._objects[handle] = blob
        self.used_bytes += class_size(len(blob))
        self.stored_bytes += len(blob)
        return handle

    def get(self, handle: int) -> bytes:
        return self._objects[handle]

    def free(self, handle: int) -> None:
        blob = self._objects.pop(handle)
        self.used_bytes -= class_size(len(blob))
        self.stored_bytes -= len(blob)

    def __len__(self) -> int:
        return len(self._objects)
