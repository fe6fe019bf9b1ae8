"""Counts over a sliding time window, kept in a few fixed time slots.

The window moves one slot at a time: a slot older than the window is dropped whole.
Cheap enough for every request (a few list operations, no per-event allocation).
"""

from __future__ import annotations

from collections.abc import Callable


class SlidingWindow:
    """`fields` counters summed over the last `window_s` seconds of `clock`."""

    def __init__(
        self, window_s: float, fields: int, clock: Callable[[], float], slots: int = 10
    ) -> None:
        self.window_s = window_s
        self.clock = clock
        self._fields = fields
        self._slot_s = window_s / slots
        self._stamps = [-(2**62)] * slots  # the slot number each entry currently holds
        self._counts = [[0.0] * fields for _ in range(slots)]

    def add(self, field: int, amount: float = 1.0) -> None:
        slot = int(self.clock() // self._slot_s)
        i = slot % len(self._stamps)
        if self._stamps[i] != slot:
            self._stamps[i] = slot
            self._counts[i] = [0.0] * self._fields
        self._counts[i][field] += amount

    def totals(self) -> list[float]:
        oldest = int(self.clock() // self._slot_s) - len(self._stamps) + 1
        sums = [0.0] * self._fields
        for stamp, counts in zip(self._stamps, self._counts, strict=True):
            if stamp >= oldest:
                for j, value in enumerate(counts):
                    sums[j] += value
        return sums

    def clear(self) -> None:
        self._stamps = [-(2**62)] * len(self._stamps)
