"""Attempts running at the same time, of which the first good answer wins.

The building block of hedging (a second deployment when the first is slow) and of the
deadline-aware tier fallback (fast when pro runs late): start attempts, wait for the
next to finish or for a timer, and cancel the losers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

K = TypeVar("K")
T = TypeVar("T")


class Race(Generic[K, T]):
    def __init__(self) -> None:
        self._tasks: dict[asyncio.Future[T], K] = {}

    @property
    def running(self) -> int:
        return len(self._tasks)

    def running_keys(self) -> list[K]:
        return list(self._tasks.values())

    def start(self, key: K, attempt: Coroutine[Any, Any, T]) -> None:
        self._tasks[asyncio.ensure_future(attempt)] = key

    async def next(self, timeout: float | None) -> tuple[K, asyncio.Future[T]] | None:
        """The next attempt to finish (its future is done), or None when `timeout` passed."""
        if timeout is not None and timeout <= 0:
            timeout = 0.0
        if not self._tasks:
            if timeout is None:
                raise RuntimeError("nothing is running and no timeout was given")
            await asyncio.sleep(timeout)
            return None
        done, _ = await asyncio.wait(
            self._tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if not done:
            return None
        task = next(iter(done))
        return self._tasks.pop(task), task

    async def cancel(self) -> list[K]:
        """Cancel what still runs and wait until it has stopped; return their keys."""
        if not self._tasks:
            return []
        tasks, self._tasks = self._tasks, {}
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return list(tasks.values())
