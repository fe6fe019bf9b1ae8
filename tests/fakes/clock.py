"""A clock that only moves when a test moves it, for policies that take `clock=`."""

from __future__ import annotations

import asyncio


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        """An `asyncio.sleep` stand-in: time passes at once, and the wait is recorded."""
        self.slept.append(seconds)
        self.advance(seconds)
        await asyncio.sleep(0)
