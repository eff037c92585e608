"""The device's event log: what `cat` and `tail -f` on `.cram/events` show.

Bounded in bytes, and each line is capped, so no single event (a rejected
300 KB control write, say) can push the others out. When full, the oldest
lines are dropped an eighth of the log at a time rather than one by one: a
reader following the file (`tail -f` polls st_size) then sees a clear
truncation instead of a size that stays put while content slides under it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

BURST = 10
LINE_MAX = 512          # bytes, newline included; longer details are cut


class EventLog:
    def __init__(self, limit_bytes: int = 256 << 10,
                 clock: Callable[[], float] = time.time) -> None:
        self._lines: deque[bytes] = deque()
        self._size = 0
        self._limit = limit_bytes
        self._clock = clock
        self.count = 0
        self._rate: dict[str, tuple[float, int, int]] = {}

    def add(self, kind: str, detail: str | Callable[[], str] = "",
            ratelimit: bool = False) -> None:
        """Append one line. With `ratelimit`, at most BURST lines of this kind per
        second are kept, like printk_ratelimit; the next kept line says how many
        were suppressed, so a refusal storm cannot push level changes out. A
        callable `detail` is called only for a line that is kept: in a refusal
        storm, formatting the lines nobody sees cost more than refusing."""
        now = self._clock()
        suppressed = 0
        if ratelimit:
            start, shown, suppressed = self._rate.get(kind, (now, 0, 0))
            if now - start >= 1.0:
                start, shown = now, 0
            if shown >= BURST:
                self._rate[kind] = (start, shown, suppressed + 1)
                return
            self._rate[kind] = (start, shown + 1, 0)
        if not isinstance(detail, str):
            detail = detail()
        if suppressed:
            detail += f" ({suppressed} similar suppressed)"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now))
        line = f"{stamp}.{int(now % 1 * 1e6):06d}Z {kind} {detail}".rstrip()
        # one line, whatever the detail held: callers quote input, this is the backstop
        data = line.replace("\n", "\\n").encode(errors="backslashreplace")
        if len(data) >= LINE_MAX:
            data = data[:LINE_MAX - 5] + b"[...]"
        data += b"\n"
        self._lines.append(data)
        self._size += len(data)
        self.count += 1
        if self._size > self._limit:
            keep = self._limit - self._limit // 8
            while self._size > keep:
                self._size -= len(self._lines.popleft())

    def text(self) -> bytes:
        return b"".join(self._lines)

    @property
    def size(self) -> int:
        return self._size
