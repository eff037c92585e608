"""Danger levels from physical fill, with hysteresis.

The RFC's hardware raises low/high threshold interrupts; a driver turns them
into a level. A level is entered as soon as fill reaches its threshold, and
left only once fill drops `hysteresis` below it, so a workload that wobbles
around 75% does not flood the event log or wake pollers on every page.
"""

from __future__ import annotations

LEVELS = ("ok", "warn", "critical", "full")
OK, WARN, CRITICAL, FULL = range(4)
PRESSURE_MAX = 1000        # the RFC's cram_set_pressure range is 0-1000
PRESSURE_STEP = 50
_STEPS = PRESSURE_MAX // PRESSURE_STEP


def pressure(level: int, fill: float, warn_at: float, critical_at: float) -> int:
    """The RFC's pressure: 0 at ok, 1000 at critical or worse (where write control
    refuses), and in warn linear in fill from warn_at (0) to critical_at (1000),
    quantised down to steps of 50. The level's hysteresis applies at both ends."""
    if level >= CRITICAL:
        return PRESSURE_MAX
    if level == OK:
        return 0
    step = int((fill - warn_at) / (critical_at - warn_at) * _STEPS)
    return max(0, min(step, _STEPS - 1)) * PRESSURE_STEP


def pressure_band(level: int, value: int, warn_at: float, critical_at: float,
                  low: float, high: float) -> tuple[float, float]:
    """Narrow the level's quiet band [low, high) to the fills that keep `value`."""
    if level != WARN:
        return low, high
    width = (critical_at - warn_at) / _STEPS
    step = value // PRESSURE_STEP
    if step > 0:
        low = max(low, warn_at + step * width)
    if step < _STEPS - 1:
        high = min(high, warn_at + (step + 1) * width)
    return low, high


class LevelTracker:
    def __init__(self) -> None:
        self.level = OK

    @property
    def name(self) -> str:
        return LEVELS[self.level]

    def update(
        self, fill: float, warn_at: float, critical_at: float, hysteresis: float,
        overflowed: bool = False,
    ) -> bool:
        """Move to the level `fill` calls for; return True if the level changed.

        `overflowed` says a page just failed to fit, which means `full` whatever
        the fill (allocator rounding can refuse a page below 100%).
        """
        thresholds = (0.0, warn_at, critical_at, 1.0)
        raw = FULL if overflowed else max(i for i, t in enumerate(thresholds) if fill >= t)
        old = self.level
        if raw > self.level:
            self.level = raw
        else:
            while self.level > raw and fill < thresholds[self.level] - hysteresis:
                self.level -= 1
        return self.level != old

    def quiet_band(self, warn_at: float, critical_at: float,
                   hysteresis: float) -> tuple[float, float]:
        """The fill range [low, high) in which update() cannot change the level.

        The device checks this range on every page instead of calling update(),
        which keeps the per-page cost to two comparisons."""
        thresholds = (0.0, warn_at, critical_at, 1.0)
        high = thresholds[self.level + 1] if self.level < FULL else float("inf")
        low = thresholds[self.level] - hysteresis if self.level > OK else float("-inf")
        return low, high
